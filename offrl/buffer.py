"""The replay buffer every agent shares: a pytree of device arrays with pure sample/add.

Because the buffer is a pytree and every method is a pure function of it, sampling runs
inside `jit`, `lax.scan` and `vmap` with no host round-trip. Offline agents build it once
from a dataset; online agents start empty and `add` rollouts as a ring buffer.
"""

from __future__ import annotations

from typing import Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np

from offrl.data.transitions import Transitions

Batch = dict[str, jax.Array]


def steps_to_episode_end(episode_ends: np.ndarray) -> np.ndarray:
    """For each row, how many later rows belong to the same episode (0 on an end row).

    Rows after the last end (an unfinished episode) count up to the final row.
    """
    n = len(episode_ends)
    out = np.zeros(n, dtype=np.int32)
    remaining = 0
    for i in range(n - 1, -1, -1):
        if episode_ends[i] > 0.5:
            remaining = 0
        out[i] = remaining
        remaining += 1
    return out


def discounted_returns_to_go(rewards: jax.Array, episode_ends: jax.Array, gamma: float) -> jax.Array:
    """G_t = r_t + gamma * G_{t+1}, restarting at every episode end (reverse scan)."""

    def step(future_return, inputs):
        reward, is_end = inputs
        value = reward + gamma * future_return * (1.0 - is_end)
        return value, value

    _, returns = jax.lax.scan(step, jnp.zeros((), rewards.dtype), (rewards, episode_ends), reverse=True)
    return returns


@flax.struct.dataclass
class ReplayBuffer:
    """Fixed-capacity columns on device; rows [0, size) are valid.

    Columns always include `steps_to_end` (int32), which lets `sample_future` pick a state
    from the same trajectory without storing episode ids.
    """

    data: dict[str, jax.Array]
    size: jax.Array
    pointer: jax.Array

    @property
    def capacity(self) -> int:
        return int(self.data["observations"].shape[0])

    @classmethod
    def from_transitions(cls, transitions: Transitions, extra: Mapping[str, np.ndarray] | None = None) -> ReplayBuffer:
        columns = dict(transitions.as_dict())
        columns["steps_to_end"] = steps_to_episode_end(transitions.episode_ends)
        columns.update(extra or {})
        data = {name: jnp.asarray(value) for name, value in columns.items()}
        n = len(transitions)
        # Full from the start, so the next `add` (if any) overwrites the oldest row, row 0.
        return cls(data=data, size=jnp.asarray(n, jnp.int32), pointer=jnp.asarray(0, jnp.int32))

    @classmethod
    def create(cls, example_row: Mapping[str, np.ndarray | jax.Array], capacity: int) -> ReplayBuffer:
        """An empty buffer whose columns have the shapes and dtypes of `example_row` (one row)."""
        data = {
            name: jnp.zeros((capacity, *jnp.shape(value)), jnp.asarray(value).dtype)
            for name, value in example_row.items()
        }
        data["steps_to_end"] = jnp.zeros((capacity,), jnp.int32)
        return cls(data=data, size=jnp.asarray(0, jnp.int32), pointer=jnp.asarray(0, jnp.int32))

    def add(self, rows: Mapping[str, jax.Array]) -> ReplayBuffer:
        """Append rows in order, overwriting the oldest once full.

        `rows` must hold every column but `steps_to_end`, which is derived from
        `episode_ends`; episodes should be added whole, since a trajectory split across two
        calls is treated as ending where the first call's rows end.
        """
        n = next(iter(rows.values())).shape[0]
        if n > self.capacity:
            raise ValueError(f"cannot add {n} rows to a buffer of capacity {self.capacity}")
        rows = dict(rows)
        rows["steps_to_end"] = _steps_to_end_jax(rows["episode_ends"])
        missing = set(self.data) - set(rows)
        if missing:
            raise KeyError(f"ReplayBuffer.add is missing columns {sorted(missing)}")
        indices = (self.pointer + jnp.arange(n)) % self.capacity
        data = {name: column.at[indices].set(jnp.asarray(rows[name], column.dtype)) for name, column in self.data.items()}
        return self.replace(
            data=data,
            size=jnp.minimum(self.size + n, self.capacity),
            pointer=(self.pointer + n) % self.capacity,
        )

    def sample_indices(self, key: jax.Array, batch_size: int) -> jax.Array:
        return jax.random.randint(key, (batch_size,), 0, self.size)

    def gather(self, indices: jax.Array) -> Batch:
        return {name: column[indices] for name, column in self.data.items()}

    def sample(self, key: jax.Array, batch_size: int) -> Batch:
        """A uniform batch of rows (with replacement)."""
        return self.gather(self.sample_indices(key, batch_size))

    def future_indices(self, key: jax.Array, indices: jax.Array, gamma: float) -> jax.Array:
        """Rows k - 1 steps ahead in the same trajectory, k ~ Geometric(1 - gamma), k >= 1.

        The `next_observations` of the returned rows are then distributed as the discounted
        state-occupancy of the behaviour policy from (s, a), truncated at the episode's end.
        """
        uniform = jax.random.uniform(key, indices.shape, minval=1e-7, maxval=1.0)
        offsets = jnp.floor(jnp.log(uniform) / jnp.log(gamma)).astype(jnp.int32)
        offsets = jnp.minimum(offsets, self.data["steps_to_end"][indices])
        return (indices + offsets) % self.capacity

    def sample_future(self, key: jax.Array, batch_size: int, gamma: float) -> Batch:
        """A uniform batch plus `future_observations` from each row's own trajectory."""
        index_key, future_key = jax.random.split(key)
        indices = self.sample_indices(index_key, batch_size)
        batch = self.gather(indices)
        batch["future_observations"] = self.data["next_observations"][self.future_indices(future_key, indices, gamma)]
        return batch


def _steps_to_end_jax(episode_ends: jax.Array) -> jax.Array:
    def step(remaining, is_end):
        current = jnp.where(is_end > 0.5, 0, remaining)
        return current + 1, current

    _, out = jax.lax.scan(step, jnp.asarray(0, jnp.int32), jnp.asarray(episode_ends), reverse=True)
    return out


def observation_statistics(observations: np.ndarray, eps: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std, computed once from the dataset and saved with the agent."""
    mean = observations.mean(axis=0, dtype=np.float64).astype(np.float32)
    std = observations.std(axis=0, dtype=np.float64).astype(np.float32) + eps
    return mean, std
