"""The built-in pointmaze datasets: planner, controller, ids, determinism, Minari round trip."""

from __future__ import annotations

import collections
import importlib.util
from pathlib import Path

import minari
import numpy as np
import pytest
from minari.dataset.minari_dataset import parse_dataset_id

from offrl.data.pointmaze import (
    MAZES,
    MazePlanner,
    PointMazeSettings,
    collect_rollout,
    evaluate_policy,
    parse_pointmaze_id,
    pointmaze_dataset_id,
    resolve_pointmaze_id,
)
from offrl.envs.pointmaze import EVAL_TASKS, make_pointmaze_env


def _bfs_distances(maze_map, start):
    free = {(r, c) for r, row in enumerate(maze_map) for c, cell in enumerate(row) if cell != 1}
    distances = {start: 0}
    queue = collections.deque([start])
    while queue:
        row, col = queue.popleft()
        for cell in ((row + 1, col), (row - 1, col), (row, col + 1), (row, col - 1)):
            if cell in free and cell not in distances:
                distances[cell] = distances[(row, col)] + 1
                queue.append(cell)
    return distances


def test_planner_paths_are_shortest_and_follow_free_adjacent_cells():
    umaze = MazePlanner(EVAL_TASKS["umaze"].maze_map)
    assert umaze.path((3, 1), (1, 1)) == [(3, 1), (3, 2), (3, 3), (2, 3), (1, 3), (1, 2), (1, 1)]

    maze_map = EVAL_TASKS["large"].maze_map
    planner = MazePlanner(maze_map)
    for start in planner.cells:
        truth = _bfs_distances(maze_map, start)
        for goal in planner.cells:
            path = planner.path(start, goal)
            assert len(path) - 1 == truth[goal] == planner.distance(start, goal)
            for a, b in zip(path, path[1:]):
                assert abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1 and maze_map[b[0]][b[1]] != 1


def test_dataset_ids_round_trip_and_unknown_ids_name_the_valid_ones():
    assert pointmaze_dataset_id("umaze") == "offrl/pointmaze/umaze-v0"
    assert pointmaze_dataset_id("umaze", noise=1.0) == "offrl/pointmaze/umaze-noise1p0-v0"
    assert pointmaze_dataset_id("medium", steps=5000) == "offrl/pointmaze/medium-steps5000-v0"
    assert pointmaze_dataset_id("large", steps=MAZES["large"].default_steps) == "offrl/pointmaze/large-v0"
    for maze in MAZES:
        for noise in (0.0, 0.25, 0.5, 1.0):
            for steps in (None, 5000):
                dataset_id = pointmaze_dataset_id(maze, noise, steps)
                settings = parse_pointmaze_id(dataset_id)
                assert settings == PointMazeSettings(maze, noise, steps or MAZES[maze].default_steps)
                assert settings.dataset_id == dataset_id
                parse_dataset_id(dataset_id)  # Minari accepts it (its ids allow no '.')
    assert parse_pointmaze_id("offrl/pointmaze/umaze-noise0.5-steps5000-v0") == PointMazeSettings("umaze", 0.5, 5000)
    assert parse_pointmaze_id("offrl/pointmaze/umaze-noise1.0-v0").dataset_id == "offrl/pointmaze/umaze-noise1p0-v0"
    for bad in ("offrl/pointmaze/open-v0", "D4RL/pointmaze/umaze-v2", "offrl/pointmaze/umaze-v1", "umaze"):
        assert parse_pointmaze_id(bad) is None
    with pytest.raises(ValueError) as error:
        resolve_pointmaze_id("offrl/pointmaze/open-v0")
    for maze in MAZES:
        assert f"offrl/pointmaze/{maze}-v0" in str(error.value)


def test_collection_is_deterministic_for_a_seed():
    settings = PointMazeSettings("medium", 0.5, 2000)
    first, second = collect_rollout(settings, seed=3), collect_rollout(settings, seed=3)
    for name in ("observation", "desired_goal", "actions", "rewards", "episode_ends"):
        assert getattr(first, name).tobytes() == getattr(second, name).tobytes()
    other = collect_rollout(settings, seed=4)
    assert not np.array_equal(first.actions, other.actions)


def test_episodes_end_at_each_reached_goal_or_at_the_time_limit_with_a_new_goal():
    limit = MAZES["large"].eval_episode_steps
    rollout = collect_rollout(PointMazeSettings("large", 10.0, 2 * limit + 100), seed=0)
    ends = np.flatnonzero(rollout.episode_ends)
    lengths = np.diff(np.concatenate([[-1], ends]))
    reached = rollout.rewards[ends] > 0
    assert np.all(lengths[~reached] == limit) and (~reached).sum() >= 1
    assert np.all(lengths <= limit)
    assert np.all(rollout.desired_goal[ends + 1] != rollout.desired_goal[ends])
    assert np.all(rollout.rewards[~rollout.episode_ends] == 0.0)


def test_small_dataset_round_trips_through_minari(small_umaze_id):
    dataset = minari.load_dataset(small_umaze_id)
    settings = parse_pointmaze_id(small_umaze_id)
    rollout = collect_rollout(settings, seed=0)
    episodes = list(dataset.iterate_episodes())
    assert dataset.total_steps == settings.steps == sum(len(episode) for episode in episodes)

    actions = np.concatenate([episode.actions for episode in episodes])
    rewards = np.concatenate([episode.rewards for episode in episodes])
    observations = np.concatenate([episode.observations["observation"][:-1] for episode in episodes])
    np.testing.assert_array_equal(actions, rollout.actions)
    np.testing.assert_array_equal(rewards, rollout.rewards)
    np.testing.assert_array_equal(observations, rollout.observation[:-1])
    assert actions.dtype == np.float32 and np.all(np.abs(actions) <= 1.0)
    assert set(np.unique(rewards)) <= {0.0, 1.0}

    for episode in episodes:
        obs = episode.observations
        assert not episode.terminations.any()
        assert episode.truncations[-1] and not episode.truncations[:-1].any()
        np.testing.assert_array_equal(obs["achieved_goal"], obs["observation"][:, :2])
        assert np.all(obs["desired_goal"] == obs["desired_goal"][0])
    # Consecutive episodes continue from the same state: the ball is never reset.
    for previous, following in zip(episodes, episodes[1:]):
        np.testing.assert_array_equal(previous.observations["observation"][-1], following.observations["observation"][0])

    goals_reached = int(dataset.storage.metadata["goals_reached"])
    assert goals_reached > settings.steps // 200
    assert goals_reached == int(rewards.sum())


def test_reference_scores_and_eval_env_are_stored(small_umaze_id):
    dataset = minari.load_dataset(small_umaze_id)
    metadata = dataset.storage.metadata
    assert 0.0 <= metadata["ref_min_score"] < metadata["ref_max_score"] <= EVAL_TASKS["umaze"].episode_steps
    normalized = minari.get_normalized_score(dataset, np.array([metadata["ref_max_score"]]))
    np.testing.assert_allclose(normalized, 1.0)

    eval_env = dataset.recover_environment(eval_env=True)
    assert eval_env.spec.max_episode_steps == EVAL_TASKS["umaze"].episode_steps
    goal_locations = eval_env.unwrapped.maze.unique_goal_locations
    assert len(goal_locations) == 1
    obs, _ = eval_env.reset(seed=1)
    assert np.abs(obs["desired_goal"] - goal_locations[0]).max() <= 0.25


@pytest.mark.parametrize("maze", sorted(MAZES))
def test_noiseless_controller_reaches_the_eval_goal_and_random_rarely_does(maze):
    controller_returns = evaluate_policy(maze, "controller", episodes=10, seed=0)
    assert np.mean(controller_returns > 0) >= 0.9
    assert controller_returns.mean() > evaluate_policy(maze, "random", episodes=10, seed=0).mean()


def test_eval_env_has_fixed_goal_and_d4rl_episode_length():
    for maze, task in EVAL_TASKS.items():
        env = make_pointmaze_env(maze)
        assert env.spec.max_episode_steps == task.episode_steps
        (goal_location,) = env.unwrapped.maze.unique_goal_locations
        for seed in range(5):
            goal = env.reset(seed=seed)[0]["desired_goal"]
            assert np.abs(goal - goal_location).max() <= 0.25
        env.close()


def _load_script():
    path = Path(__file__).resolve().parents[1] / "scripts" / "make_dataset.py"
    spec = importlib.util.spec_from_file_location("make_dataset", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_finds_an_existing_dataset_and_rejects_unknown_ids(small_umaze_id, capsys):
    script = _load_script()
    assert script.main([small_umaze_id]) == 0
    assert "already present" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        script.main(["offrl/pointmaze/open-v0"])
    assert exit_info.value.code == 2
    assert "offrl/pointmaze/umaze-v0" in capsys.readouterr().err


def test_builder_writes_the_loader_cache_identical_to_a_fresh_read(small_umaze_id):
    from offrl.data.minari_loader import CACHE_FILE, minari_transitions, read_minari_transitions

    dataset = minari.load_dataset(small_umaze_id)
    assert (Path(dataset.storage.data_path).parent / CACHE_FILE).is_file()
    cached, fresh = minari_transitions(dataset), read_minari_transitions(dataset)
    for name, column in fresh.as_dict().items():
        np.testing.assert_array_equal(getattr(cached, name), column, err_msg=name)


def test_an_incomplete_build_is_named_with_what_to_do():
    from minari.storage.datasets_root_dir import get_dataset_path

    from offrl.data.pointmaze import ensure_pointmaze_dataset

    dataset_id = pointmaze_dataset_id("umaze", noise=0.25, steps=300)
    leftover = get_dataset_path(dataset_id) / "data"
    leftover.mkdir(parents=True)  # what a killed build leaves: a directory without metadata.json
    with pytest.raises(FileExistsError, match="incomplete build") as error:
        ensure_pointmaze_dataset(dataset_id)
    assert str(get_dataset_path(dataset_id)) in str(error.value) and "delete that directory" in str(error.value)
