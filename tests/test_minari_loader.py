"""The Minari loader on small datasets recorded with `minari.DataCollector` from real envs."""

from __future__ import annotations

import json

import gymnasium as gym
import gymnasium_robotics
import minari
import numpy as np
import pytest

from offrl.data import DatasetError, DatasetNotFoundError
from offrl.data.minari_loader import load_minari, local_minari_ids
from offrl.envs import flatten_observation, make_eval_vector_env

gym.register_envs(gymnasium_robotics)

# Minari nags about unset authorship metadata when tests record their tiny datasets.
pytestmark = pytest.mark.filterwarnings("ignore:`.*` is set to None:UserWarning")


def record(dataset_id: str, env: gym.Env, episodes: int, seed: int = 0, early_reset_at: int | None = None, **create_kwargs):
    """Random-action episodes through a DataCollector; `early_reset_at` cuts the first episode
    by calling reset, which Minari records as a truncation."""
    collector = minari.DataCollector(env)
    collector.action_space.seed(seed)
    for episode in range(episodes):
        collector.reset(seed=seed + episode)
        step = 0
        while True:
            _, _, terminated, truncated, _ = collector.step(collector.action_space.sample())
            step += 1
            if terminated or truncated or (episode == 0 and step == early_reset_at):
                break
    dataset = collector.create_dataset(dataset_id=dataset_id, **create_kwargs)
    collector.close()
    return dataset


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path / "minari"


def expected_rows(dataset) -> dict[str, np.ndarray]:
    """Per-step reading of the episodes, flattening each observation with gymnasium itself."""
    space = dataset.observation_space
    rows = {key: [] for key in ("observations", "actions", "rewards", "next_observations", "terminals", "episode_ends")}
    for episode in dataset.iterate_episodes():
        steps = len(episode.rewards)
        for t in range(steps):
            def observation(index):
                if isinstance(space, gym.spaces.Dict):
                    return gym.spaces.flatten(space, {key: value[index] for key, value in episode.observations.items()})
                return gym.spaces.flatten(space, episode.observations[index])

            rows["observations"].append(observation(t))
            rows["next_observations"].append(observation(t + 1))
            rows["actions"].append(episode.actions[t])
            rows["rewards"].append(episode.rewards[t])
            rows["terminals"].append(float(episode.terminations[t]))
            rows["episode_ends"].append(float(t == steps - 1))
    return {key: np.asarray(value, np.float32) for key, value in rows.items()}


def assert_rows_equal(transitions, expected):
    assert len(transitions) == len(expected["rewards"])
    for key, value in expected.items():
        got = getattr(transitions, key)
        np.testing.assert_array_equal(got.reshape(value.shape), value, err_msg=key)
        assert got.dtype == np.float32


def test_box_observations_with_terminations_and_truncations(store):
    env = gym.make("InvertedPendulum-v5", max_episode_steps=12)
    dataset = record("test/pendulum-v0", env, episodes=6, early_reset_at=3)
    transitions = load_minari("test/pendulum-v0")
    assert_rows_equal(transitions, expected_rows(dataset))
    lengths = [len(episode.rewards) for episode in dataset.iterate_episodes()]
    assert lengths[0] == 3 and transitions.episode_ends.sum() == 6
    assert [s.stop - s.start for s in transitions.episode_slices()] == lengths
    # random actions topple the pendulum in some episodes and time out in others
    assert 0 < transitions.terminals.sum() < 6


def test_dict_observations_flatten_in_space_order(store):
    env = gym.make("PointMaze_UMaze-v3", max_episode_steps=15)
    dataset = record("test/umaze-v0", env, episodes=3, early_reset_at=7)
    assert list(dataset.observation_space.spaces) == ["achieved_goal", "desired_goal", "observation"]
    transitions = load_minari("test/umaze-v0")
    assert transitions.observation_dim == 8
    assert_rows_equal(transitions, expected_rows(dataset))
    first = next(iter(dataset.iterate_episodes()))
    np.testing.assert_array_equal(transitions.observations[0, :2], first.observations["achieved_goal"][0].astype(np.float32))
    np.testing.assert_array_equal(transitions.observations[0, 4:], first.observations["observation"][0].astype(np.float32))


def test_eval_env_observations_flatten_like_dataset_rows(store):
    """An env observation goes through the same flattening as a dataset observation."""
    dataset = record("test/umaze-v0", gym.make("PointMaze_UMaze-v3", max_episode_steps=5), episodes=1)
    env = dataset.recover_environment(eval_env=True)
    dict_observation, _ = env.reset(seed=11)
    assert env.observation_space == dataset.observation_space
    row = flatten_observation(dataset.observation_space, dict_observation)
    np.testing.assert_array_equal(row, gym.spaces.flatten(env.observation_space, dict_observation).astype(np.float32))
    envs = make_eval_vector_env("PointMaze_UMaze-v3", num_envs=2, seed=11)
    vector_observations, _ = envs.reset(seed=11)
    assert vector_observations.dtype == np.float32 and vector_observations.shape == (2, 8)
    np.testing.assert_array_equal(vector_observations[0], row)
    envs.close()


def test_missing_dataset_lists_local_ids_and_how_to_get_one(store):
    record("test/pendulum-v0", gym.make("InvertedPendulum-v5", max_episode_steps=5), episodes=1)
    assert local_minari_ids() == ["test/pendulum-v0"]
    with pytest.raises(DatasetNotFoundError) as error:
        load_minari("D4RL/pointmaze/umaze-v2")
    message = str(error.value)
    assert "D4RL/pointmaze/umaze-v2" in message and "test/pendulum-v0" in message
    assert "minari download D4RL/pointmaze/umaze-v2" in message and "scripts/make_dataset.py" in message


def test_corrupt_episode_file_is_named(store):
    record("test/pendulum-v0", gym.make("InvertedPendulum-v5", max_episode_steps=5), episodes=2)
    main_file = store / "test" / "pendulum-v0" / "data" / "main_data.hdf5"
    main_file.write_bytes(main_file.read_bytes()[:300])
    with pytest.raises(DatasetError, match="main_data.hdf5"):
        load_minari("test/pendulum-v0")


def test_corrupt_metadata_is_named(store):
    record("test/pendulum-v0", gym.make("InvertedPendulum-v5", max_episode_steps=5), episodes=1)
    metadata = store / "test" / "pendulum-v0" / "data" / "metadata.json"
    content = json.loads(metadata.read_text())
    metadata.write_text(json.dumps(content)[:-20])
    with pytest.raises(DatasetError, match="metadata.json"):
        load_minari("test/pendulum-v0")


def test_rows_are_cached_until_the_store_changes(store, monkeypatch):
    import os

    from offrl.data import minari_loader

    record("test/pendulum-v0", gym.make("InvertedPendulum-v5", max_episode_steps=8), episodes=3)
    first = load_minari("test/pendulum-v0")
    assert (store / "test" / "pendulum-v0" / minari_loader.CACHE_FILE).exists()
    assert local_minari_ids() == ["test/pendulum-v0"]  # the cache file does not confuse Minari

    def no_read(dataset):
        raise AssertionError("read the store although the cache is current")

    monkeypatch.setattr(minari_loader, "read_minari_transitions", no_read)
    cached = load_minari("test/pendulum-v0")
    for name, value in first.as_dict().items():
        np.testing.assert_array_equal(getattr(cached, name), value)
    main_file = store / "test" / "pendulum-v0" / "data" / "main_data.hdf5"
    os.utime(main_file, ns=(0, 0))
    with pytest.raises(AssertionError, match="cache is current"):
        load_minari("test/pendulum-v0")
