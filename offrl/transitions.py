"""The one in-memory representation of an offline dataset, whatever file it came from."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals", "episode_ends")


@dataclasses.dataclass(frozen=True)
class Transitions:
    """Flat (s, a, r, s', terminal) rows, float32, in dataset order.

    `terminals[i]` is 1 when s' is a true terminal state (no bootstrapping past it).
    `episode_ends[i]` is 1 when row i is the last row of its episode in this dataset,
    whether the episode terminated or was cut by a time limit; rows between two ends
    form one trajectory, which is what episode-aware sampling (future states,
    returns-to-go) relies on.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    episode_ends: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.observations)
        for name in FIELDS:
            value = getattr(self, name)
            if len(value) != n:
                raise ValueError(f"Transitions.{name} has {len(value)} rows, observations has {n}")

    def __len__(self) -> int:
        return len(self.observations)

    def __getitem__(self, index: Any) -> Transitions:
        return Transitions(**{name: getattr(self, name)[index] for name in FIELDS})

    def as_dict(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in FIELDS}

    @property
    def observation_dim(self) -> int:
        return int(self.observations.shape[-1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[-1])

    def episode_slices(self) -> list[slice]:
        """Row ranges of the episodes, in order; a trailing unfinished run counts as one."""
        ends = np.flatnonzero(self.episode_ends > 0.5) + 1
        if len(ends) == 0 or ends[-1] != len(self):
            ends = np.append(ends, len(self))
        starts = np.concatenate([[0], ends[:-1]])
        return [slice(int(s), int(e)) for s, e in zip(starts, ends) if e > s]

    def episode_returns(self) -> np.ndarray:
        ends = np.flatnonzero(self.episode_ends > 0.5)
        if len(ends) == 0 or ends[-1] != len(self) - 1:
            ends = np.append(ends, len(self) - 1)
        cumulative = np.concatenate([[0.0], np.cumsum(self.rewards, dtype=np.float64)])
        starts = np.concatenate([[0], ends[:-1] + 1])
        return (cumulative[ends + 1] - cumulative[starts]).astype(np.float32)

    def summary(self) -> dict[str, Any]:
        returns = self.episode_returns()
        return {
            "size": len(self),
            "episodes": len(returns),
            "observation_dim": self.observation_dim,
            "action_dim": self.action_dim,
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
            "return_min": float(returns.min()),
            "return_max": float(returns.max()),
            "reward_mean": float(self.rewards.mean()),
            "terminals": int(self.terminals.sum()),
            "action_low": self.actions.min(axis=0).tolist(),
            "action_high": self.actions.max(axis=0).tolist(),
        }


def normalize_observations(observations: Any, mean: Any, std: Any) -> Any:
    """(observations - mean) / std: what agents see of raw observations, with the dataset's
    per-dimension statistics (`offrl.buffer.observation_statistics`; 0 and 1 when a run does
    not normalize). numpy and jax arrays alike: training data, evaluation, export, zero-shot."""
    return (observations - mean) / std


def make_transitions(**arrays: np.ndarray) -> Transitions:
    """Build Transitions from arrays of any numeric dtype, casting to float32 and 1-D scalars."""
    out = {}
    for name in FIELDS:
        value = np.asarray(arrays[name], dtype=np.float32)
        if name in ("rewards", "terminals", "episode_ends"):
            value = value.reshape(-1)
        elif value.ndim == 1:
            value = value[:, None]
        out[name] = value
    return Transitions(**out)
