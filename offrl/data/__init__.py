"""Datasets: one `Transitions` type, loaders for D4RL HDF5 files and Minari, and a registry.

`load_dataset(name)` is the entry point; it resolves a name to a loader and a `DatasetSpec`
that says how to build the evaluation env and normalize scores.
"""

from __future__ import annotations

from offrl.data.errors import DatasetError, DatasetNotFoundError
from offrl.data.registry import dataset_family, dataset_names, load_dataset
from offrl.envs.spec import DatasetSpec
from offrl.transitions import Transitions, make_transitions

__all__ = [
    "DatasetError",
    "DatasetNotFoundError",
    "DatasetSpec",
    "Transitions",
    "dataset_family",
    "dataset_names",
    "load_dataset",
    "make_transitions",
]
