"""FB through the shared offline loop on pointmaze: reward-free training, zero-shot goal evaluation."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offrl.agents.fb import FBAgent, FBConfig
from offrl import config as cfg
from offrl.experiment import resolve, restore_run
from offrl.runner import run

TINY_FB = {
    "agent": "fb",
    "z_dim": 8,
    "hidden_dim": 32,
    "feature_dim": 32,
    "backward_hidden_dim": 32,
    "batch_size": 64,
    "steps": 200,
    "updates_per_call": 100,
    "eval_interval": 200,
    "eval_episodes": 2,
    "wandb.mode": "disabled",
}


def test_preset_sets_pointmaze_dims():
    config = resolve({"agent": "fb", "dataset": "offrl/pointmaze/umaze-v1"})
    assert list(config["policy_dims"]) == [0, 1, 2, 3]  # x, y, vx, vy
    assert len(config["goal_dims"]) == len(config["eval_goal_dims"]) == 2
    assert list(config["eval_goal_dims"]) == [4, 5]  # the goal
    assert not config["normalize_observations"]  # eval goal and B's input must share coordinates
    maze2d = resolve({"agent": "fb", "dataset": "offrl/maze2d/umaze-v0"})
    assert list(maze2d["goal_dims"]) == [0, 1] and maze2d["policy_dims"] is None and maze2d["eval_goal_dims"] is None


def test_fb_trains_reward_free_and_evaluates_zero_shot_goals(small_pointmaze_id, tmp_path):
    run_dir = tmp_path / "fb"
    summary = run(resolve({**TINY_FB, "dataset": small_pointmaze_id, "run_dir": str(run_dir)}), progress=False)
    for field in ("return_mean", "success_rate", "normalized_score", "episodes", "steps", "updates_per_second", "wall_seconds"):
        assert field in summary, field
    assert summary["steps"] == 200 and summary["episodes"] == 2
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 200
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in metrics if "train/critic/fb_loss" in row] == [100, 200]

    state, experiment, step = restore_run(run_dir)
    agent = state.agent
    assert step == 200 and agent.config.eval_goal_dims == (4, 5)

    # Training is reward-free: an update on a batch whose rewards are NaN is finite and gives
    # the same networks as one on the same batch with other rewards; the rewards only feed
    # the dataset-reward task estimate (reward_z), which eval_goal_dims makes unused here.
    batch = experiment.transitions[np.arange(64)].as_dict()
    batch = {name: jnp.asarray(value) for name, value in batch.items()}
    update = jax.jit(FBAgent.update)
    nan_agent, nan_info = update(agent, {**batch, "rewards": jnp.full_like(batch["rewards"], jnp.nan)})
    other_agent, other_info = update(agent, {**batch, "rewards": jnp.ones_like(batch["rewards"])})
    assert all(np.isfinite(float(value)) for value in nan_info.values())
    networks = lambda a: a.replace(reward_z=jnp.zeros_like(a.reward_z))  # noqa: E731
    for a, b in zip(jax.tree_util.tree_leaves(networks(nan_agent)), jax.tree_util.tree_leaves(networks(other_agent))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.all(np.isnan(nan_agent.reward_z)) and not np.allclose(other_agent.reward_z, agent.reward_z)

    # The evaluation policy (jitted, as the loop calls it) takes z = B(goal) per row:
    # observations that differ only in the goal get different actions, and the actions
    # match acting with that z explicitly.
    from offrl.evaluation import make_policy

    policy = make_policy(agent, state.obs_mean, state.obs_std, deterministic=True)
    observation = np.asarray(batch["observations"][0])
    observations = np.stack([observation] * 3)
    observations[0, 4:6] = [1.0, 1.0]
    observations[1, 4:6] = [-1.0, -1.0]
    observations[2, 4:6] = [-1.0, -1.0]
    actions = np.asarray(policy(jnp.asarray(observations), jax.random.PRNGKey(0)))
    assert actions.shape == (3, 2)
    assert not np.allclose(actions[0], actions[1], atol=1e-5)
    np.testing.assert_allclose(actions[1], actions[2], atol=1e-6)  # deterministic per observation
    z = agent.eval_goal_z(jnp.asarray(observations))
    np.testing.assert_allclose(np.linalg.norm(z, axis=-1), np.sqrt(agent.config.z_dim), rtol=1e-5)
    explicit = agent.sample_actions(jnp.asarray(observations[:1]), None, True, z=z[0])
    np.testing.assert_allclose(actions[0], np.asarray(explicit)[0], atol=1e-5)
    # The goal z is B of the goal position: B(s) of a state at that position gives the same z.
    at_goal = observations[:1].copy()
    at_goal[0, 0:2] = [1.0, 1.0]
    np.testing.assert_allclose(z[0], agent.backward_values(jnp.asarray(at_goal))[0], atol=1e-5)


def test_dims_from_the_command_line_and_validation():
    batch = {"observations": jnp.zeros((2, 6)), "actions": jnp.zeros((2, 2))}
    small = {"z_dim": 4, "hidden_dim": 8, "feature_dim": 8, "backward_hidden_dim": 8}
    overrides = cfg.parse_overrides(["--policy_dims", "0,1,2,3", "--goal_dims", "0,1", "--eval_goal_dims=4,5"])
    agent = FBAgent.create(FBConfig(**{**small, **overrides}), batch, jax.random.PRNGKey(0))
    assert agent.config.policy_dims == (0, 1, 2, 3)
    assert agent.config.goal_dims == (0, 1) and agent.config.eval_goal_dims == (4, 5)
    with pytest.raises(ValueError, match="eval_goal_dims"):
        FBAgent.create(FBConfig(**{**small, "goal_dims": [0, 1], "eval_goal_dims": [4]}), batch, jax.random.PRNGKey(0))


def test_zero_shot_benchmark_matches_networks_and_reports_spread():
    """benchmarks/fb_zero_shot.py's --width gives FB and IQL the same widths and depth, and its
    per-seed statistics count steps to the goal only over the episodes that reached it."""
    from benchmarks import fb_zero_shot

    widths = fb_zero_shot.width_overrides(64)
    fb = resolve({"agent": "fb", "dataset": "offrl/pointmaze/umaze-v1", **widths["fb"]})
    iql = resolve({"agent": "iql-ddpg", "dataset": "offrl/pointmaze/umaze-v1", **widths["iql"]})
    assert fb["hidden_dim"] == fb["feature_dim"] == fb["backward_hidden_dim"] == 64
    assert list(iql["hidden_dims"]) == [64, 64]
    stats = fb_zero_shot.episode_stats({"successes": np.array([True, False, True]), "success_steps": np.array([10, -1, 30])})
    assert stats == {"success": pytest.approx(2 / 3), "steps": 20.0, "reached": 2}
    assert np.isnan(fb_zero_shot.episode_stats({"successes": np.zeros(2, bool), "success_steps": np.full(2, -1)})["steps"])
    spread = fb_zero_shot.seed_spread([1.0, 3.0, float("nan")])
    assert spread["mean"] == 2.0 and spread["std"] == pytest.approx(np.sqrt(2.0)) and len(spread["seeds"]) == 3  # ddof 1
    assert fb["bilinear_rank"] == 64  # a bilinear F's product is as wide as the rest


def test_zero_shot_benchmark_path_length_bands():
    """Shortest paths in cell moves on a U of seven cells, bands by the diameter, and start
    cells read from the episodes' first observations."""
    from benchmarks import fb_zero_shot
    from offrl.envs.pointmaze import MazeGeometry

    free = np.array([[0, 0, 0, 0, 0], [0, 1, 1, 1, 0], [0, 0, 0, 1, 0], [0, 1, 1, 1, 0], [0, 0, 0, 0, 0]], bool)
    lengths = fb_zero_shot.maze_path_lengths(free)
    assert lengths[((1, 1), (3, 1))] == 6 and lengths[((1, 1), (1, 1))] == 0 and lengths[((2, 3), (1, 1))] == 3
    assert max(lengths.values()) == 6 and ((1, 1), (2, 2)) not in lengths  # walls are not cells
    assert fb_zero_shot.path_bands(6) == [(0, 2), (3, 4), (5, 6)]
    geometry = MazeGeometry(free_cells=free, cell_size=1.0, position_dims=[(0, 1)], base_observation=np.zeros(4), goal_xy=None)
    starts = [geometry.cell_center((3, 1)), geometry.cell_center((1, 3))]
    episodes = {"env_ids": np.array([1, 0, 1]), "successes": np.array([False, True]),
                "observations": np.array([[*starts[1], 0, 0], [*starts[0], 0, 0], [9.0, 9.0, 0, 0]])}
    assert fb_zero_shot.start_cells(episodes, geometry) == [(3, 1), (1, 3)]
