"""Zero-shot FB inference through scripts/evaluate.py: --goal, --reward, --value-map."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from offrl.agents.fb import infer_z_from_goal, infer_z_from_reward_fn, infer_z_from_rewards, pointmaze_value_map, value_landscape
from offrl.cli import main_guard
from offrl.envs.pointmaze import MAZES, make_pointmaze_env, maze_geometry
from offrl.experiment import resolve, restore_run
from offrl.runner import run

from offrl.cli import evaluate as evaluate_script
from test_fb_pointmaze import TINY_FB as POINTMAZE_FB

# One evaluation and one checkpoint (the default interval is steps / 10), one episode.
TINY_FB = {**POINTMAZE_FB, "steps": 100, "eval_interval": 100, "eval_episodes": 1}

REWARD_MODULE = '''
import numpy as np

def near_top_left(observations):
    # numpy only (in-place writes fail on jax arrays): the script must pass numpy rows.
    assert isinstance(observations, np.ndarray) and observations.shape == (1000, 6), observations.shape
    distance = np.linalg.norm(observations[:, 0:2] - np.array([-1.0, 1.0]), axis=1)
    rewards = np.zeros(len(observations))
    rewards[distance < 0.5] = 1.0
    return rewards
'''


@pytest.fixture(scope="module")
def fb_run(small_pointmaze_id, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("fb_zero_shot") / "fb"
    run(resolve({**TINY_FB, "dataset": small_pointmaze_id, "run_dir": str(run_dir)}), progress=False)
    return run_dir


def evaluate(run_dir: Path, out: Path, *options: str) -> dict:
    assert evaluate_script.main([str(run_dir), "--episodes", "1", "--json", str(out), *options]) == 0
    return json.loads(out.read_text())


def observation_at(x: float, y: float) -> np.ndarray:
    observation = np.zeros(6, np.float32)
    observation[0], observation[1] = x, y  # the ball's position
    return observation


def test_goal_option_and_value_map(fb_run, tmp_path):
    png = tmp_path / "maps" / "value.png"
    report = evaluate(fb_run, tmp_path / "goal.json", "--goal=-1,1", "--value-map", str(png))
    assert report["task"] == "goal -1.0,1.0" and report["episodes"] == 1
    state, _, _ = restore_run(fb_run)
    agent = state.agent
    expected = infer_z_from_goal(agent, observation_at(-1.0, 1.0))
    np.testing.assert_allclose(report["z"], expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(report["z"]), np.sqrt(8), rtol=1e-5)
    assert not np.allclose(report["z"], infer_z_from_goal(agent, observation_at(1.0, -1.0)), atol=1e-3)
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The fixed z replaces the per-episode z = B(goal) the pointmaze agent uses by default.
    observations = np.stack([observation_at(0.5, -1.0)] * 2)
    observations[:, 4:6] = [[1.0, -1.0], [1.0, 1.0]]  # the observed goals, ignored under --goal
    task_agent = agent.with_task(jnp.asarray(report["z"]))
    fixed = np.asarray(task_agent.sample_actions(jnp.asarray(observations), None, True))
    explicit = np.asarray(agent.sample_actions(jnp.asarray(observations), None, True, z=expected))
    np.testing.assert_allclose(fixed, explicit, atol=1e-5)
    per_goal = np.asarray(agent.sample_actions(jnp.asarray(observations), None, True))
    assert not np.allclose(per_goal[0], per_goal[1], atol=1e-5)


def test_value_landscape_masks_exactly_the_walls(fb_run):
    state, experiment, _ = restore_run(fb_run)
    agent = state.agent
    # The run's evaluation env cycles through five tasks (no single goal); one goal cell:
    task = MAZES["umaze"]
    with pytest.raises(ValueError, match="no single goal cell"):
        pointmaze_value_map(agent, maze_geometry(experiment.spec.env_factory, seed=0))
    env_factory = functools.partial(make_pointmaze_env, "umaze", goal_cell=task.target_cell)
    maze = maze_geometry(env_factory, seed=0)
    values, extent, z, goal_xy = pointmaze_value_map(agent, maze, obs_mean=state.obs_mean, obs_std=state.obs_std)

    walls = np.array(task.maze_map) == 1
    rows, cols = walls.shape
    goal_row, goal_col = task.target_cell
    np.testing.assert_allclose(goal_xy, [goal_col + 0.5 - cols / 2, rows / 2 - goal_row - 0.5])
    np.testing.assert_allclose(maze.cell_center(task.target_cell), goal_xy)
    # Another goal cell moves the evaluation goal there.
    moved = maze_geometry(functools.partial(make_pointmaze_env, "umaze", goal_cell=(3, 3)))
    np.testing.assert_allclose(moved.goal_xy, maze.cell_center((3, 3)))
    with pytest.raises(ValueError, match="not a free cell"):
        make_pointmaze_env("umaze", goal_cell=(0, 0))
    np.testing.assert_allclose(z, infer_z_from_goal(agent, observation_at(*goal_xy)), atol=1e-5)
    assert extent == (-cols / 2, cols / 2, -rows / 2, rows / 2)

    per_cell = values.shape[0] // rows
    assert values.shape == (rows * per_cell, cols * per_cell) and per_cell > 1
    cell_walls = np.kron(walls, np.ones((per_cell, per_cell), bool))
    np.testing.assert_array_equal(np.isnan(values), cell_walls)
    assert np.isfinite(values[~cell_walls]).all() and np.ptp(values[~cell_walls]) > 0

    # One free grid point by hand: min over F heads of F(s, pi_z(s), z)^T z at zero velocity.
    i, j = per_cell + 2, 2 * per_cell + 3  # inside cell (1, 2)
    x, y = extent[0] + (j + 0.5) / per_cell, extent[3] - (i + 0.5) / per_cell
    env = env_factory()
    reset, _ = env.reset(seed=0)
    env.close()
    observation = observation_at(x, y)
    observation[4:6] = reset[4:6]  # the goal, which F and the actor do not read
    s, zs = jnp.asarray(observation[None]), jnp.asarray(z)[None]
    F = agent.forward_values(s, zs, agent.actor_mean(s, zs))
    np.testing.assert_allclose(values[i, j], float(jnp.min(jnp.einsum("kid,id->ki", F, zs))), rtol=1e-4, atol=1e-4)

    # The pure function on its own: an all-free map has no NaN, one wall cell gives one NaN block.
    free = np.ones((2, 3), bool)
    free[1, 0] = False
    grid, grid_extent = value_landscape(agent, z, observation, free, [(0, 1), (4, 5)], cell_size=2.0, points_per_cell=4)
    assert grid.shape == (8, 12) and grid_extent == (-3.0, 3.0, -2.0, 2.0)
    np.testing.assert_array_equal(np.isnan(grid), np.kron(~free, np.ones((4, 4), bool)))


def test_reward_options_use_the_inferred_z(fb_run, tmp_path, monkeypatch):
    (tmp_path / "zs_rewards.py").write_text(REWARD_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import zs_rewards

    state, experiment, _ = restore_run(fb_run)
    transitions = experiment.transitions
    assert len(transitions) > 1000  # so --reward-samples 1000 really samples

    from_data = evaluate(fb_run, tmp_path / "data.json", "--reward", "dataset", "--reward-samples", "1000")
    assert from_data["task"] == "reward dataset"
    expected = infer_z_from_rewards(state.agent, transitions.next_observations, transitions.rewards, max_samples=1000)
    np.testing.assert_allclose(from_data["z"], expected, atol=1e-5)
    everything = infer_z_from_rewards(state.agent, transitions.next_observations, transitions.rewards, max_samples=len(transitions))
    assert not np.allclose(from_data["z"], everything, atol=1e-4)

    from_fn = evaluate(fb_run, tmp_path / "fn.json", "--reward", "zs_rewards:near_top_left", "--reward-samples", "1000")
    assert from_fn["task"] == "reward zs_rewards:near_top_left"
    expected = infer_z_from_reward_fn(state.agent, transitions.next_observations, zs_rewards.near_top_left, max_samples=1000)
    np.testing.assert_allclose(from_fn["z"], expected, atol=1e-5)
    assert not np.allclose(from_fn["z"], from_data["z"], atol=1e-3)

    # Centring: z no longer depends on a constant added to the reward.
    centred = evaluate(fb_run, tmp_path / "centred.json", "--reward", "zs_rewards:near_top_left", "--reward-samples", "1000",
                       "--center-reward")
    shifted = infer_z_from_reward_fn(state.agent, transitions.next_observations,
                                     lambda o: zs_rewards.near_top_left(o) - 5.0, max_samples=1000, center=True)
    np.testing.assert_allclose(centred["z"], shifted, atol=1e-4)
    assert not np.allclose(centred["z"], from_fn["z"], atol=1e-3)


@pytest.mark.parametrize("options", [["--goal=0,0"], ["--reward", "dataset"], ["--value-map", "v.png"]])
def test_fb_options_refuse_other_agents_in_one_line(fb_run, tmp_path, capsys, options):
    # A run directory whose config names another agent: the refusal reads only config.json.
    other = tmp_path / "iql"
    shutil.copytree(fb_run, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "agent": "iql-ddpg"}))
    assert main_guard(lambda: evaluate_script.main([str(other), *options])) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "need an fb checkpoint" in err and "iql-ddpg" in err


@pytest.mark.parametrize(
    "options, message",
    [(["--goal=1,2,3"], "B reads 2 observation dims"), (["--reward", "no_such_module_xyz:f"], "cannot import"),
     (["--center-reward"], "--center-reward applies to --reward")],
)
def test_bad_fb_options_fail_in_one_line(fb_run, capsys, options, message):
    assert main_guard(lambda: evaluate_script.main([str(fb_run), *options])) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err
