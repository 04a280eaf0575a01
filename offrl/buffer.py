"""The replay buffer every agent shares: a pytree of device arrays with pure sample/add.

Because the buffer is a pytree and every method is a pure function of it, sampling runs
inside `jit`, `lax.scan` and `vmap` with no host round-trip. Offline agents build it once
from a dataset; online agents start empty and `add` rollouts as a ring buffer.

A dataset's next observation is, within an episode, the next row's observation, so an
offline buffer stores each observation once (`observation_table`) and every row an index
into it: s = table[i], s' = table[i + 1]. On the device that halves the observation bytes,
the bulk of a state-based dataset (docs/speed.md gives the bytes per million rows).
"""

from __future__ import annotations

from typing import Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np

from offrl.transitions import Transitions

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


def share_observations(
    observations: np.ndarray, next_observations: np.ndarray, episode_ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(table, index): table[index[i]] == observations[i], table[index[i] + 1] == next_observations[i].

    Row i reuses row i-1's next observation as its own when they are bit-identical and row
    i-1 did not end an episode; otherwise (episode starts, datasets whose rows do not chain)
    its observation gets an entry of its own, so any rows are stored exactly.
    """
    n = len(observations)
    shared = np.zeros(n, dtype=bool)
    if n > 1:
        chains = np.all(observations[1:] == next_observations[:-1], axis=tuple(range(1, observations.ndim)))
        shared[1:] = (episode_ends[:-1] < 0.5) & chains
    next_index = np.cumsum(np.where(shared, 1, 2)) - 1
    index = (next_index - 1).astype(np.int32)
    table = np.empty((int(next_index[-1]) + 1 if n else 0, *observations.shape[1:]), observations.dtype)
    table[next_index] = next_observations
    table[index[~shared]] = observations[~shared]
    return table, index


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
    from the same trajectory without storing episode ids. A buffer built from a dataset
    keeps its observations in `observation_table` and an `observation_index` column in
    place of the `observations` and `next_observations` columns (see `share_observations`);
    `gather` returns the same batch either way.
    """

    data: dict[str, jax.Array]
    size: jax.Array
    pointer: jax.Array
    observation_table: jax.Array | None = None

    @property
    def capacity(self) -> int:
        return int(self.data["rewards"].shape[0])

    @property
    def observation_dim(self) -> int:
        observations = self.data["observations"] if self.observation_table is None else self.observation_table
        return int(observations.shape[-1])

    @property
    def nbytes(self) -> int:
        """Device bytes of the stored rows (columns and observation table)."""
        return sum(int(leaf.nbytes) for leaf in jax.tree_util.tree_leaves((self.data, self.observation_table)))

    @classmethod
    def from_transitions(cls, transitions: Transitions, extra: Mapping[str, np.ndarray] | None = None) -> ReplayBuffer:
        columns = dict(transitions.as_dict())
        table, columns["observation_index"] = share_observations(
            columns.pop("observations"), columns.pop("next_observations"), transitions.episode_ends
        )
        columns["steps_to_end"] = steps_to_episode_end(transitions.episode_ends)
        columns.update(extra or {})
        data = {name: jnp.asarray(value) for name, value in columns.items()}
        n = len(transitions)
        return cls(
            data=data, size=jnp.asarray(n, jnp.int32), pointer=jnp.asarray(0, jnp.int32), observation_table=jnp.asarray(table)
        )

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
        if self.observation_table is not None:
            raise ValueError("a buffer built from a dataset is read-only; use ReplayBuffer.create for one to add rows to")
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
        if self.observation_table is None:
            return {name: column[indices] for name, column in self.data.items()}
        batch = {name: column[indices] for name, column in self.data.items() if name != "observation_index"}
        batch["observations"] = self.observation_table[self.data["observation_index"][indices]]
        batch["next_observations"] = self.next_observations_at(indices)
        return batch

    def next_observations_at(self, indices: jax.Array) -> jax.Array:
        if self.observation_table is None:
            return self.data["next_observations"][indices]
        return self.observation_table[self.data["observation_index"][indices] + 1]

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
        batch["future_observations"] = self.next_observations_at(self.future_indices(future_key, indices, gamma))
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
