"""`DatasetSpec`: how to evaluate on a dataset (or a bare env) and how to report its scores.

A leaf module: the dataset registry builds specs, the evaluation envs, checkpoints and the
online loop read them, and none of them has to import the dataset loaders for it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import gymnasium as gym


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What an agent needs besides the transitions: how to evaluate and how to report scores."""

    name: str  # id or path as given
    family: str  # 'maze2d' | 'pointmaze' | 'locomotion' | 'antmaze' | 'minari' | 'hdf5' | 'online'
    env_factory: Callable[..., gym.Env] | None  # builds ONE evaluation env (dict obs allowed); None if unknown
    ref_min_score: float | None
    ref_max_score: float | None
    goal_conditioned: bool
