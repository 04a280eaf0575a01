"""The built-in maze datasets: planner, ids, determinism, and that each family's rewards,
terminals, timeouts and evaluation env define one task (docs/datasets.md)."""

from __future__ import annotations

import collections
from pathlib import Path

import minari
import numpy as np
import pytest
from minari.dataset.minari_dataset import parse_dataset_id

from offrl.data import load_dataset
from offrl.data.pointmaze import (
    DEFAULT_STEPS,
    MazeDatasetSettings,
    MazePlanner,
    collect_rollout,
    controller_for,
    ensure_maze_dataset,
    maze2d_dataset_id,
    maze2d_rewards,
    maze_dataset_id,
    measure_maze2d_ref_scores,
    parse_maze_id,
    pointmaze_dataset_id,
    reference_returns,
    resolve_maze_id,
)
from offrl.envs.pointmaze import GOAL_RADIUS, MAZES, make_maze2d_env, make_pointmaze_env, sparse_reward
from offrl.envs.scores import MAZE2D_REF_SCORES, MAZE2D_REF_SEED

SMALL = 5000


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
    umaze = MazePlanner(MAZES["umaze"].maze_map)
    assert umaze.path((3, 1), (1, 1)) == [(3, 1), (3, 2), (3, 3), (2, 3), (1, 3), (1, 2), (1, 1)]

    maze_map = MAZES["large"].maze_map
    planner = MazePlanner(maze_map)
    for start in planner.cells:
        truth = _bfs_distances(maze_map, start)
        for goal in planner.cells:
            path = planner.path(start, goal)
            assert len(path) - 1 == truth[goal] == planner.distance(start, goal)
            for a, b in zip(path, path[1:]):
                assert abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1 and maze_map[b[0]][b[1]] != 1


def test_dataset_ids_round_trip_and_bad_ids_name_the_valid_ones():
    assert maze2d_dataset_id("umaze") == "offrl/maze2d/umaze-v0"
    assert maze2d_dataset_id("umaze", dense=True) == "offrl/maze2d/umaze-dense-v0"
    assert maze2d_dataset_id("umaze", noise=1.0) == "offrl/maze2d/umaze-noise1p0-v0"
    assert pointmaze_dataset_id("medium", steps=5000) == "offrl/pointmaze/medium-steps5000-v1"
    assert pointmaze_dataset_id("large", steps=DEFAULT_STEPS["large"]) == "offrl/pointmaze/large-v1"
    for family, dense in (("maze2d", False), ("maze2d", True), ("pointmaze", False)):
        for maze in MAZES:
            for noise in (0.0, 0.25, 0.5, 1.0):
                for steps in (None, 5000):
                    dataset_id = maze_dataset_id(family, maze, noise, steps, dense)
                    settings = parse_maze_id(dataset_id)
                    assert settings == MazeDatasetSettings(family, maze, noise, steps or DEFAULT_STEPS[maze], dense)
                    assert settings.dataset_id == dataset_id
                    parse_dataset_id(dataset_id)  # Minari accepts it (its ids allow no '.')
    assert parse_maze_id("offrl/maze2d/umaze-noise0.5-steps5000-v0") == MazeDatasetSettings("maze2d", "umaze", 0.5, 5000)
    assert parse_maze_id("offrl/pointmaze/umaze-noise1.0-v1").dataset_id == "offrl/pointmaze/umaze-noise1p0-v1"
    for bad in ("offrl/maze2d/open-v0", "offrl/pointmaze/umaze-dense-v1", "offrl/maze2d/umaze-v1", "D4RL/pointmaze/umaze-v2"):
        assert parse_maze_id(bad) is None
    with pytest.raises(ValueError) as error:
        resolve_maze_id("offrl/maze2d/open-v0")
    for maze in MAZES:
        assert f"offrl/maze2d/{maze}-v0" in str(error.value) and f"offrl/pointmaze/{maze}-v1" in str(error.value)
    with pytest.raises(ValueError, match=r"retired.*offrl/maze2d/medium-v0.*offrl/pointmaze/medium-v1"):
        resolve_maze_id("offrl/pointmaze/medium-noise1p0-v0")
    with pytest.raises(ValueError, match="dense"):
        maze_dataset_id("pointmaze", "umaze", dense=True)


def test_targets_and_tasks_are_free_cells_and_match_ogbench():
    assert {maze: info.target_cell for maze, info in MAZES.items()} == {"umaze": (1, 1), "medium": (6, 6), "large": (7, 9)}
    assert MAZES["medium"].tasks[0] == ((1, 1), (6, 6)) and MAZES["large"].tasks[2] == ((7, 4), (1, 10))
    for info in MAZES.values():
        info.check_cell(info.target_cell)
        for start, goal in info.tasks:
            assert info.check_cell(start) != info.check_cell(goal)
    with pytest.raises(ValueError, match="not a free cell"):
        make_maze2d_env("umaze", goal_cell=(0, 0))


def test_collection_is_deterministic_for_a_seed():
    first, second = collect_rollout("medium", 0.5, 2000, seed=3), collect_rollout("medium", 0.5, 2000, seed=3)
    for name in ("observation", "desired_goal", "actions", "reached", "abandoned"):
        assert getattr(first, name).tobytes() == getattr(second, name).tobytes()
    assert not np.array_equal(first.actions, collect_rollout("medium", 0.5, 2000, seed=4).actions)


def test_goals_change_exactly_where_reached_or_abandoned():
    limit = MAZES["large"].episode_steps
    rollout = collect_rollout("large", 10.0, 2 * limit + 100, seed=0)  # noise 10: mostly stuck, goals abandoned
    changed = np.any(rollout.desired_goal[1:] != rollout.desired_goal[:-1], axis=1)
    np.testing.assert_array_equal(changed, rollout.reached | rollout.abandoned)
    assert rollout.abandoned.sum() >= 1 and not (rollout.reached & rollout.abandoned).any()
    distance = np.linalg.norm(rollout.observation[1:, :2] - rollout.desired_goal[:-1], axis=1)
    np.testing.assert_array_equal(rollout.reached, distance <= GOAL_RADIUS)


def _episodes(dataset_id: str) -> list:
    return list(minari.load_dataset(dataset_id).iterate_episodes())


@pytest.mark.parametrize("dense", [False, True])
def test_maze2d_rewards_terminals_and_timeouts_are_one_task(small_umaze_id, dense):
    """Every reward is the fixed target's, recomputed from the stored next position; no
    terminals; a timeout exactly at every 300-step chunk end, with the true next state."""
    dataset_id = maze2d_dataset_id("umaze", steps=SMALL, dense=dense)
    ensure_maze_dataset(dataset_id, progress=False)
    episodes = _episodes(dataset_id)
    target = MAZES["umaze"].cell_center(MAZES["umaze"].target_cell)
    assert [len(episode) for episode in episodes] == [300] * (SMALL // 300) + [SMALL % 300]
    for episode in episodes:
        assert episode.observations.shape == (len(episode) + 1, 4)
        distance = np.linalg.norm(episode.observations[1:, :2] - target, axis=1)
        expected = np.exp(-distance) if dense else (distance <= GOAL_RADIUS).astype(float)
        np.testing.assert_allclose(episode.rewards, expected, rtol=1e-12, atol=0)
        assert not episode.terminations.any()
        assert episode.truncations[-1] and not episode.truncations[:-1].any()
    for previous, following in zip(episodes, episodes[1:]):  # one stream: never reset
        np.testing.assert_array_equal(previous.observations[-1], following.observations[0])
    if not dense:
        rewards = np.concatenate([episode.rewards for episode in episodes])
        assert 0 < rewards.sum() < len(rewards)  # the stream visits the target and leaves it

    transitions, spec = load_dataset(dataset_id)
    assert spec.family == "maze2d" and not spec.goal_conditioned
    assert (spec.ref_min_score, spec.ref_max_score) == MAZE2D_REF_SCORES[("umaze", "dense" if dense else "sparse")]
    assert not transitions.terminals.any()
    np.testing.assert_array_equal(np.flatnonzero(transitions.episode_ends), np.cumsum([len(e) for e in episodes]) - 1)
    np.testing.assert_allclose(
        transitions.rewards, maze2d_rewards(transitions.next_observations[:, :2].astype(np.float64), "umaze", dense), rtol=1e-6
    )


def test_pointmaze_v1_rewards_and_terminals_are_one_task(small_pointmaze_id):
    """Reward 1 and a terminal exactly on the step that reaches the observed goal; truncations
    otherwise; the goal constant within an episode; nothing bootstraps from an at-goal state."""
    episodes = _episodes(small_pointmaze_id)
    assert sum(len(episode) for episode in episodes) == SMALL
    terminal_count = 0
    for episode in episodes:
        observations = episode.observations
        assert observations.shape == (len(episode) + 1, 6) and len(episode) <= MAZES["umaze"].episode_steps
        goal = observations[0, 4:6]
        assert np.all(observations[:, 4:6] == goal)
        reached = np.linalg.norm(observations[1:, :2] - goal, axis=1) <= GOAL_RADIUS
        np.testing.assert_array_equal(episode.rewards, reached.astype(float))
        np.testing.assert_array_equal(episode.terminations, reached)
        assert not reached[:-1].any()  # the first arrival ends the task
        assert episode.terminations[-1] != episode.truncations[-1] and not episode.truncations[:-1].any()
        terminal_count += int(episode.terminations[-1])
    assert terminal_count >= 20
    for previous, following in zip(episodes, episodes[1:]):  # the ball carries on into the next task
        np.testing.assert_array_equal(previous.observations[-1, :4], following.observations[0, :4])

    transitions, spec = load_dataset(small_pointmaze_id)
    assert spec.family == "pointmaze" and spec.goal_conditioned and (spec.ref_min_score, spec.ref_max_score) == (0.0, 1.0)
    np.testing.assert_array_equal(transitions.terminals, transitions.rewards)
    # No transition's next state is an at-goal state with its goal unless it is terminal.
    at_goal = sparse_reward(transitions.next_observations[:, :2], transitions.next_observations[:, 4:6]) > 0
    assert not (at_goal & (transitions.terminals == 0)).any()


def _set_state(env, observation: np.ndarray) -> None:
    point = env.unwrapped.point_env
    point.set_state(np.asarray(observation[:2], np.float64), np.asarray(observation[2:4], np.float64))


@pytest.mark.parametrize("dense", [False, True])
def test_maze2d_eval_env_reward_is_the_dataset_reward(small_umaze_id, dense):
    """Stepping the evaluation env from dataset states with dataset actions gives the
    dataset's next state and reward; the goal sits exactly on the target cell's centre."""
    dataset_id = maze2d_dataset_id("umaze", steps=SMALL, dense=dense)
    transitions, _ = load_dataset(dataset_id)
    target = MAZES["umaze"].cell_center(MAZES["umaze"].target_cell)
    env = make_maze2d_env("umaze", dense=dense)
    assert env.spec.max_episode_steps == MAZES["umaze"].episode_steps
    for seed in range(5):
        observation, _ = env.reset(seed=seed)
        assert observation.shape == (4,)
        np.testing.assert_array_equal(env.unwrapped.goal, target)
    rewarded = np.flatnonzero(np.linalg.norm(transitions.next_observations[:, :2] - target, axis=1) <= GOAL_RADIUS + 0.1)
    rows = np.concatenate([rewarded[:: max(1, len(rewarded) // 40)], np.arange(0, len(transitions), 250)])
    assert len(rewarded) > 0
    for row in rows:
        env.reset(seed=int(row))
        _set_state(env, transitions.observations[row].astype(np.float64))
        next_observation, reward, terminated, truncated, _ = env.step(transitions.actions[row])
        assert not terminated
        np.testing.assert_allclose(next_observation, transitions.next_observations[row], atol=1e-5)
        np.testing.assert_allclose(reward, maze2d_rewards(next_observation[:2], "umaze", dense), rtol=1e-12)
        if abs(np.linalg.norm(next_observation[:2] - target) - GOAL_RADIUS) > 1e-4:  # float32 rows at the edge aside
            np.testing.assert_allclose(reward, transitions.rewards[row], rtol=1e-5)
    env.close()


def test_maze2d_eval_is_continuing_reach_and_stay():
    """The noiseless controller reaches the target and stays: the episode runs to its limit and
    the return counts the steps within the radius."""
    env = make_maze2d_env("umaze")
    controller = controller_for(env)
    target = MAZES["umaze"].cell_center(MAZES["umaze"].target_cell)
    observation, _ = env.reset(seed=0)
    rewards, steps, done = [], 0, False
    while not done:
        observation, reward, terminated, truncated, _ = env.step(controller.clipped(observation, target))
        rewards.append(reward)
        steps += 1
        assert not terminated
        done = truncated
    assert steps == MAZES["umaze"].episode_steps
    first = rewards.index(1.0)
    assert all(reward == 1.0 for reward in rewards[first:]) and first < 150
    env.close()


def test_pointmaze_v1_eval_env_reward_and_termination_are_the_dataset_labels(small_pointmaze_id):
    transitions, _ = load_dataset(small_pointmaze_id)
    env = make_pointmaze_env("umaze")
    rows = np.concatenate([np.flatnonzero(transitions.terminals)[:30], np.arange(0, len(transitions), 250)])
    for row in rows:
        env.reset(seed=int(row))
        observation = transitions.observations[row].astype(np.float64)
        env.unwrapped.goal = observation[4:6].copy()  # the dataset's goal for this task
        _set_state(env, observation)
        next_observation, reward, terminated, truncated, _ = env.step(transitions.actions[row])
        np.testing.assert_allclose(next_observation, transitions.next_observations[row], atol=1e-5)
        assert reward == transitions.rewards[row] and terminated == bool(transitions.terminals[row])
    env.close()


@pytest.mark.parametrize("maze", sorted(MAZES))
def test_pointmaze_v1_eval_episodes_end_at_success_on_every_task(maze):
    """Each reset seed picks a task (seed mod 5); the goal is the exact cell centre and is
    observed; the noiseless controller ends every task terminated with reward 1."""
    info = MAZES[maze]
    env = make_pointmaze_env(maze)
    controller = controller_for(env)
    for seed in range(len(info.tasks)):
        observation, reset_info = env.reset(seed=seed)
        controller.reset()
        start, goal_cell = info.tasks[seed]
        goal = info.cell_center(goal_cell)
        assert reset_info["task"] == seed
        np.testing.assert_array_equal(observation[4:6], goal)
        assert np.abs(observation[:2] - info.cell_center(start)).max() <= 0.25
        steps, done = 0, False
        while not done:
            observation, reward, terminated, truncated, step_info = env.step(controller.clipped(observation, goal))
            steps += 1
            done = terminated or truncated
        assert terminated and reward == 1.0 and step_info["success"] and steps < info.episode_steps
    env.close()


def test_maze2d_reference_scores_are_reproduced_exactly_for_umaze():
    measured = measure_maze2d_ref_scores("umaze")
    for kind, (low, high) in measured.items():
        np.testing.assert_allclose((low, high), MAZE2D_REF_SCORES[("umaze", kind)], atol=6e-5)
        assert low < high
    controller = reference_returns("umaze", "controller", episodes=5)["sparse"]
    assert np.all(controller > 0)


@pytest.mark.slow
@pytest.mark.parametrize("maze", ["medium", "large"])
def test_maze2d_reference_scores_are_reproduced_exactly(maze):
    for kind, scores in measure_maze2d_ref_scores(maze).items():
        np.testing.assert_allclose(scores, MAZE2D_REF_SCORES[(maze, kind)], atol=6e-5)


def test_script_finds_an_existing_dataset_and_rejects_unknown_ids(small_umaze_id, capsys):
    from offrl.cli import make_dataset as script

    assert script.main([small_umaze_id]) == 0
    assert "already present" in capsys.readouterr().out
    for bad, expected in (("offrl/maze2d/open-v0", "offrl/maze2d/umaze-v0"), ("offrl/pointmaze/umaze-v0", "retired")):
        with pytest.raises(SystemExit) as exit_info:
            script.main([bad])
        assert exit_info.value.code == 2
        assert expected in capsys.readouterr().err


def test_builder_writes_the_loader_cache_identical_to_a_fresh_read(small_umaze_id):
    from offrl.data.minari_loader import CACHE_FILE, minari_transitions, read_minari_transitions

    dataset = minari.load_dataset(small_umaze_id)
    assert (Path(dataset.storage.data_path).parent / CACHE_FILE).is_file()
    cached, fresh = minari_transitions(dataset), read_minari_transitions(dataset)
    for name, column in fresh.as_dict().items():
        np.testing.assert_array_equal(getattr(cached, name), column, err_msg=name)
    metadata = dataset.storage.metadata
    np.testing.assert_allclose(minari.get_normalized_score(dataset, np.array([metadata["ref_max_score"]])), 1.0)


def _controller_policy(env_factory, num_envs: int, goal_of):
    """A batched policy for `run_episodes`: one noiseless controller per sub-env."""
    env = env_factory()
    controllers = [controller_for(env) for _ in range(num_envs)]
    env.close()

    def policy(observations, key):
        observations = np.asarray(observations, np.float64)
        return np.stack([c.clipped(o, goal_of(o)) for c, o in zip(controllers, observations)])

    return policy


@pytest.mark.parametrize("record_transitions", [True, False])
def test_offrl_evaluation_scores_the_controller_as_expert_on_both_families(
    small_umaze_id, small_pointmaze_id, record_transitions
):
    """Through offrl's own evaluation (both of its paths): v1 episodes end at success (length =
    steps to goal, normalized score = 100 x success rate); maze2d episodes run to the limit and
    score about 100, the controller's own reference."""
    import jax

    from offrl.envs import make_eval_vector_env, normalized_score
    from offrl.evaluation import run_episodes, summarize_episodes

    _, spec = load_dataset(small_pointmaze_id)
    envs = make_eval_vector_env(spec, 5, seed=0)
    policy = _controller_policy(spec.env_factory, 5, lambda o: o[4:6])
    episodes = run_episodes(envs, policy, jax.random.PRNGKey(0), list(range(5)), record_transitions)
    envs.close()
    assert episodes["successes"].all()
    np.testing.assert_array_equal(episodes["success_steps"], episodes["lengths"])
    np.testing.assert_array_equal(episodes["returns"], 1.0)
    metrics = summarize_episodes(episodes, lambda r: normalized_score(spec, r))
    assert metrics["normalized_score"] == 100.0 and metrics["success_rate"] == 1.0
    assert metrics["steps_to_goal"] == episodes["lengths"].mean() < MAZES["umaze"].episode_steps

    _, spec = load_dataset(small_umaze_id)
    target = MAZES["umaze"].cell_center(MAZES["umaze"].target_cell)
    seeds = [MAZE2D_REF_SEED + j for j in range(8)]
    envs = make_eval_vector_env(spec, 8, seed=0)
    policy = _controller_policy(spec.env_factory, 8, lambda o: target)
    episodes = run_episodes(envs, policy, jax.random.PRNGKey(0), seeds, record_transitions)
    envs.close()
    assert (episodes["lengths"] == MAZES["umaze"].episode_steps).all() and episodes["successes"].all()
    np.testing.assert_array_equal(episodes["returns"], reference_returns("umaze", "controller", episodes=8)["sparse"])
    assert (episodes["success_steps"] < episodes["lengths"]).all()
