"""FB's dataset-reward task: the z the training loop's evaluation acts on for reward-labelled,
non-goal-conditioned data (`eval_task: "rewards"`, offrl/agents/fb.py)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from offrl.agents.fb import FBAgent, FBConfig, infer_z_from_rewards
from offrl.buffer import ReplayBuffer
from offrl.envs.gridworld import GridWorld, collect_uniform_dataset
from offrl.evaluation import make_policy
from offrl.experiment import resolve, restore_run
from offrl.runner import run
from test_fb import TWO_ROOMS, train
from test_fb_pointmaze import TINY_FB


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_reward_task_z_matches_reward_inference_on_next_states():
    """After training, the running estimate is `infer_z_from_rewards` on next observations.

    With one-hot states and r = 1{s' = g}, E[r B(s')] is rho(g) B(g), while the same rewards
    weighted by B(s) point to the mean B of g's predecessors, a different direction (for an
    untrained or trained B alike), so the test tells the two conventions apart. The estimate
    averages about 1 / (1 - 0.99) = 100 batches of 128 rows, about 1000 rewarded rows, while B
    moves little over the last 100 of 1000 updates: measured cosine 0.999 against s', 0.02
    against s, so 0.95 and 0.5 leave room for other seeds and platforms."""
    env = GridWorld(TWO_ROOMS)
    data = collect_uniform_dataset(env, num_steps=20_000, seed=0)
    goal = 5
    data = dataclasses.replace(data, rewards=data.next_observations[:, goal].astype(np.float32))
    buffer = ReplayBuffer.from_transitions(data)
    config = {"discrete_actions": 4, "learning_rate": 1e-3, "z_dim": 16, "hidden_dim": 64, "feature_dim": 64,
              "backward_hidden_dim": 64, "batch_size": 128}
    agent = FBAgent.create(FBConfig(**config), buffer.sample(jax.random.PRNGKey(0), 2), jax.random.PRNGKey(0))
    assert not np.any(np.asarray(agent.reward_task_z()))  # no task before any update
    agent, _ = train(agent, buffer, 1000)
    z = np.asarray(agent.reward_task_z())
    np.testing.assert_allclose(np.linalg.norm(z), np.sqrt(16), rtol=1e-5)
    at_next = infer_z_from_rewards(agent, data.next_observations, data.rewards, max_samples=len(data))
    at_current = infer_z_from_rewards(agent, data.observations, data.rewards, max_samples=len(data))
    assert cosine(z, at_next) > 0.95
    assert abs(cosine(z, at_current)) < 0.5


def test_maze2d_run_evaluates_the_dataset_reward_task(small_umaze_id, tmp_path):
    """train.py's evaluation of FB on maze2d (no goal in the observation) acts on the
    dataset's reward, close to what `evaluate.py --reward dataset` infers, not on z = 0."""
    run_dir = tmp_path / "fb"
    run(resolve({**TINY_FB, "dataset": small_umaze_id, "run_dir": str(run_dir)}), progress=False)
    state, experiment, _ = restore_run(run_dir)
    agent, transitions = state.agent, experiment.transitions
    assert agent.config.eval_goal_dims is None and agent.config.eval_task == "rewards"
    assert transitions.rewards.mean() > 0.01  # the fixed target is reached in the data
    z = np.asarray(agent.reward_task_z())
    np.testing.assert_allclose(np.linalg.norm(z), np.sqrt(agent.config.z_dim), rtol=1e-5)
    # The same task as evaluate.py --reward dataset on all rows: the estimate covers the last
    # ~100 batches of 64 rows (~300 rewarded) while B still moves at 200 updates; measured 0.994.
    inferred = infer_z_from_rewards(agent, transitions.next_observations, transitions.rewards, len(transitions),
                                    obs_mean=state.obs_mean, obs_std=state.obs_std)
    assert cosine(z, inferred) > 0.9

    # The loop's (jitted) evaluation policy acts with that z, not with the stored zeros.
    raw = jnp.asarray(transitions.observations[:8])
    key = jax.random.PRNGKey(0)
    actions = np.asarray(make_policy(agent, state.obs_mean, state.obs_std, deterministic=True)(raw, key))
    observations = (raw - state.obs_mean) / state.obs_std  # the agent's inputs
    with_z = np.asarray(agent.sample_actions(observations, key, True, z=z))
    at_zero = np.asarray(agent.sample_actions(observations, key, True, z=jnp.zeros_like(z)))
    np.testing.assert_allclose(actions, with_z, atol=1e-5)
    assert not np.allclose(actions, at_zero, atol=1e-3)
    # A task set explicitly replaces it; eval_task "stored" acts on the stored z.
    explicit = np.asarray(agent.with_task(jnp.zeros_like(z)).sample_actions(observations, key, True))
    np.testing.assert_allclose(explicit, at_zero, atol=1e-5)
    stored = agent.replace(config=agent.config.replace(eval_task="stored"))
    np.testing.assert_allclose(np.asarray(stored.sample_actions(observations, key, True)), at_zero, atol=1e-5)
