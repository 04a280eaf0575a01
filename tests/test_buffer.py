"""The replay buffer: an offline buffer stores each observation once and still returns the dataset's rows."""

import jax
import numpy as np
import pytest

from offrl.buffer import ReplayBuffer, share_observations
from offrl.transitions import Transitions


def chained_episodes(lengths: list[int], obs_dim: int = 3, seed: int = 0) -> Transitions:
    """Episodes whose rows chain (s'_t == s_{t+1}), as every simulator-collected dataset's do."""
    rng = np.random.default_rng(seed)
    columns = {name: [] for name in ("observations", "actions", "rewards", "next_observations", "terminals", "episode_ends")}
    for length in lengths:
        states = rng.normal(size=(length + 1, obs_dim)).astype(np.float32)
        columns["observations"].append(states[:-1])
        columns["next_observations"].append(states[1:])
        columns["actions"].append(rng.normal(size=(length, 2)).astype(np.float32))
        columns["rewards"].append(rng.normal(size=length).astype(np.float32))
        ends = np.zeros(length, np.float32)
        ends[-1] = 1.0
        columns["terminals"].append(np.zeros(length, np.float32))
        columns["episode_ends"].append(ends)
    return Transitions(**{name: np.concatenate(parts) for name, parts in columns.items()})


def test_share_observations_stores_chained_rows_once():
    data = chained_episodes([5, 1, 7])
    table, index = share_observations(data.observations, data.next_observations, data.episode_ends)
    np.testing.assert_array_equal(table[index], data.observations)
    np.testing.assert_array_equal(table[index + 1], data.next_observations)
    # one entry per row plus the first observation of each episode
    assert len(table) == len(data) + 3


def test_share_observations_keeps_rows_that_do_not_chain():
    data = chained_episodes([6])
    # a row whose observation is not the previous row's next observation (e.g. a reset the
    # dataset did not mark) must keep its own observation
    observations = data.observations.copy()
    observations[3] += 1.0
    table, index = share_observations(observations, data.next_observations, data.episode_ends)
    np.testing.assert_array_equal(table[index], observations)
    np.testing.assert_array_equal(table[index + 1], data.next_observations)
    assert len(table) == len(data) + 2


def test_offline_buffer_returns_the_dataset_rows_with_fewer_bytes():
    data = chained_episodes([50, 30, 20], obs_dim=8)
    buffer = ReplayBuffer.from_transitions(data)
    indices = np.array([0, 49, 50, 79, 80, 99, 17])
    batch = jax.jit(ReplayBuffer.gather)(buffer, indices)
    for name, column in data.as_dict().items():
        np.testing.assert_array_equal(np.asarray(batch[name]), column[indices], err_msg=name)
    assert "observation_index" not in batch
    assert buffer.observation_dim == 8
    # each observation once (one per row plus each episode's first) and an int32 index per row,
    # in place of 2 x 8 floats per row; the other columns as they were, plus steps_to_end
    rows, episodes = len(data), 3
    other_columns = data.actions.nbytes + data.rewards.nbytes + data.terminals.nbytes + data.episode_ends.nbytes + 4 * rows
    assert buffer.nbytes == (rows + episodes) * 8 * 4 + 4 * rows + other_columns
    assert buffer.nbytes < 0.75 * (data.observations.nbytes + data.next_observations.nbytes + other_columns)


def test_future_observations_come_from_the_same_episode():
    data = chained_episodes([40, 40])
    buffer = ReplayBuffer.from_transitions(data)
    batch = buffer.sample_future(jax.random.PRNGKey(0), 512, gamma=0.9)
    future = np.asarray(batch["future_observations"])
    episode_of_row = np.repeat([0, 1], 40)
    episode_of_next = {tuple(row): episode for row, episode in zip(data.next_observations, episode_of_row)}
    first_obs_episode = {tuple(row): episode for row, episode in zip(data.observations, episode_of_row)}
    for observation, future_observation in zip(np.asarray(batch["observations"]), future):
        assert episode_of_next[tuple(future_observation)] == first_obs_episode[tuple(observation)]


def test_dataset_buffer_is_read_only():
    buffer = ReplayBuffer.from_transitions(chained_episodes([4]))
    with pytest.raises(ValueError, match="read-only"):
        buffer.add(chained_episodes([2]).as_dict())
