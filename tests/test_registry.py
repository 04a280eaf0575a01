"""Name resolution, dataset specs, evaluation vector envs and normalized scores."""

from __future__ import annotations

import functools

import gymnasium as gym
import gymnasium_robotics
import h5py
import minari
import numpy as np
import pytest

from offrl.data import DatasetNotFoundError, DatasetSpec, dataset_family, dataset_names, load_dataset
from offrl.envs import make_eval_vector_env, normalized_score

gym.register_envs(gymnasium_robotics)

# Minari nags about unset authorship metadata when tests record their tiny datasets.
pytestmark = pytest.mark.filterwarnings("ignore:`.*` is set to None:UserWarning")


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path / "minari"


def write_hopper_file(path, n=40, episode=10):
    """A D4RL-layout file with Hopper's shapes (11-d observations, 3-d actions)."""
    rng = np.random.default_rng(0)
    timeouts = np.zeros(n, bool)
    timeouts[episode - 1 :: episode] = True
    with h5py.File(path, "w") as file:
        file["observations"] = rng.normal(size=(n, 11)).astype(np.float32)
        file["actions"] = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
        file["rewards"] = rng.normal(size=n).astype(np.float32)
        file["terminals"] = np.zeros(n, bool)
        file["timeouts"] = timeouts
    return path


def record_umaze(dataset_id, episodes=2, **create_kwargs):
    collector = minari.DataCollector(gym.make("PointMaze_UMaze-v3", max_episode_steps=6))
    collector.action_space.seed(0)
    for episode in range(episodes):
        collector.reset(seed=episode)
        while True:
            *_, terminated, truncated, _ = collector.step(collector.action_space.sample())
            if terminated or truncated:
                break
    dataset = collector.create_dataset(dataset_id=dataset_id, algorithm_name="random", **create_kwargs)
    collector.close()
    return dataset


def test_d4rl_file_resolves_to_locomotion_spec(tmp_path):
    path = str(write_hopper_file(tmp_path / "hopper_medium-v2.hdf5"))
    transitions, spec = load_dataset(path)
    assert spec.name == path and spec.family == "locomotion" and not spec.goal_conditioned
    assert (spec.ref_min_score, spec.ref_max_score) == (-20.272305, 3234.3)
    assert len(transitions) == 36  # 40 rows less the last (no successor) and the 3 other timeout rows
    env = spec.env_factory()
    assert env.spec.id == "Hopper-v5" and env.observation_space.shape == (transitions.observation_dim,)
    env.close()
    np.testing.assert_allclose(normalized_score(spec, [3234.3, -20.272305]), [100.0, 0.0])
    assert dataset_family(path) == "locomotion"


def test_unknown_hdf5_file_has_no_env_or_reference(tmp_path):
    path = str(write_hopper_file(tmp_path / "my-robot.h5"))
    _, spec = load_dataset(path)
    assert spec.family == "hdf5" and spec.env_factory is None and spec.ref_min_score is None
    assert normalized_score(spec, np.ones(3)) is None
    with pytest.raises(ValueError, match="no known evaluation env"):
        make_eval_vector_env(spec, 2, seed=0)
    _, override = load_dataset(path, env_id="Hopper-v5")
    assert override.env_factory().spec.id == "Hopper-v5"


def test_minari_id_resolves_with_recorded_eval_env_and_scores(store):
    record_umaze("test/umaze-v0", eval_env="PointMaze_UMaze-v3", ref_min_score=1.0, ref_max_score=5.0)
    assert "test/umaze-v0" in dataset_names()
    transitions, spec = load_dataset("test/umaze-v0")
    assert spec.family == "minari" and spec.goal_conditioned
    assert (spec.ref_min_score, spec.ref_max_score) == (1.0, 5.0)
    np.testing.assert_allclose(normalized_score(spec, np.array([3.0])), [50.0])
    env = spec.env_factory()  # rebuilt from the stored spec, no network
    assert env.spec.id == "PointMaze_UMaze-v3"
    env.close()
    envs = make_eval_vector_env(spec, num_envs=3, seed=0)
    observations, _ = envs.reset(seed=0)
    assert observations.shape == (3, transitions.observation_dim) and observations.dtype == np.float32
    assert envs.single_observation_space.shape == (transitions.observation_dim,)
    envs.close()


def test_minari_without_reference_scores(store):
    record_umaze("test/noref-v0", episodes=1)
    _, spec = load_dataset("test/noref-v0")
    assert spec.ref_min_score is None and normalized_score(spec, 1.0) is None


def test_unknown_name_lists_what_exists(store):
    record_umaze("test/umaze-v0", episodes=1)
    for name in ("no/such-dataset-v0", "offrl/pointmaze/nowhere-v1", "offrl/maze2d/umaze-v1"):
        with pytest.raises(DatasetNotFoundError) as error:
            load_dataset(name)
        message = str(error.value)
        assert name in message and "test/umaze-v0" in message
        assert "offrl/maze2d/umaze-v0" in message and "offrl/pointmaze/umaze-v1" in message
        assert "minari download" in message and ".hdf5" in message


def test_retired_pointmaze_ids_name_their_replacements_in_one_line(store):
    for maze in ("umaze", "medium", "large"):
        for name in (f"offrl/pointmaze/{maze}-v0", f"offrl/pointmaze/{maze}-noise1p0-steps5000-v0"):
            with pytest.raises(DatasetNotFoundError) as error:
                load_dataset(name)
            message = str(error.value)
            assert "\n" not in message and name in message
            assert f"offrl/maze2d/{maze}-v0" in message and f"offrl/pointmaze/{maze}-v1" in message
    with pytest.raises(FileNotFoundError, match="missing.hdf5"):
        load_dataset("missing.hdf5")


def test_vector_env_runs_exactly_one_counted_episode_per_sub_env():
    """Every sub-env reports done once at its time limit; the step after resets it (NEXT_STEP)."""
    spec = DatasetSpec(
        name="pendulum",
        family="minari",
        env_factory=functools.partial(gym.make, "Pendulum-v1", max_episode_steps=4),
        ref_min_score=None,
        ref_max_score=None,
        goal_conditioned=False,
    )
    envs = make_eval_vector_env(spec, num_envs=2, seed=3)
    observations, _ = envs.reset(seed=3)
    assert observations.shape == (2, 3) and observations.dtype == np.float32
    dones = []
    for _ in range(5):
        observations, rewards, terminated, truncated, _ = envs.step(envs.action_space.sample())
        dones.append(terminated | truncated)
        assert observations.dtype == np.float32
    np.testing.assert_array_equal(np.array(dones)[:, 0], [False, False, False, True, False])
    assert rewards.tolist() == [0.0, 0.0]  # the reset step
    envs.close()


def test_vector_env_seeding_is_reproducible():
    first = make_eval_vector_env("Pendulum-v1", num_envs=2, seed=7).reset()[0]
    second = make_eval_vector_env("Pendulum-v1", num_envs=2, seed=7).reset()[0]
    third = make_eval_vector_env("Pendulum-v1", num_envs=2, seed=8).reset()[0]
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, third)


def test_dataset_family_without_loading():
    assert dataset_family("offrl/maze2d/umaze-v0") == "maze2d"
    assert dataset_family("offrl/maze2d/large-dense-v0") == "maze2d"
    assert dataset_family("offrl/pointmaze/umaze-v1") == "pointmaze"
    assert dataset_family("/data/maze2d-umaze-v1.hdf5") == "maze2d"  # D4RL's files: the same task, the same presets
    assert dataset_family("/data/antmaze-umaze-v2.hdf5") == "antmaze"
    assert dataset_family("/data/thing.h5") == "hdf5"
    assert dataset_family("D4RL/door/human-v2") == "minari"


def test_broken_minari_store_is_reported_as_broken_not_unknown(store):
    from offrl.data import DatasetError

    record_umaze("test/umaze-v0", episodes=1)
    (store / "test" / "umaze-v0" / "data" / "metadata.json").write_text("{")
    with pytest.raises(DatasetError, match="metadata.json") as error:
        load_dataset("test/umaze-v0")
    assert not isinstance(error.value, DatasetNotFoundError)
