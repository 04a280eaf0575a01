"""Datasets: one `Transitions` type, loaders for D4RL HDF5 files and Minari, and a registry.

`load_dataset(name)` is the entry point; it resolves a name to a loader and a `DatasetSpec`
that says how to build the evaluation env and normalize scores.
"""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset exists but cannot be used; the message names the file or id and says what to do.

    Defined here, before the loaders are imported, so every loader can raise it without an
    import cycle through the registry.
    """


class DatasetNotFoundError(DatasetError):
    """No dataset by that name or id; the message lists what is available and how to get more."""


from offrl.data.registry import DatasetSpec, dataset_family, dataset_names, load_dataset  # noqa: E402
from offrl.data.transitions import Transitions, make_transitions  # noqa: E402

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
