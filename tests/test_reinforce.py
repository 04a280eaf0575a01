"""REINFORCE with baseline: returns and advantages by hand, episode collection, the exact
short-corridor optimum, the learned baseline's cut in policy-gradient variance on CartPole,
checkpoints through the scripts, resume, and (slow) the CartPole preset to 490 and the
InvertedPendulum preset to 950."""

from __future__ import annotations

import functools
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offrl.agents.reinforce import compute_advantages, returns_to_go
from offrl import config as cfg
from offrl.envs.corridor import ENV_ID as CORRIDOR, OPTIMAL_RIGHT_PROBABILITY, expected_return
from offrl.evaluation import run_episodes
from offrl.online import env_spec, episode_rows, make_online_env, probe_env
from offrl.experiment import resolve, restore_run
from offrl.runner import run

from offrl.cli import evaluate as evaluate_script
from offrl.cli import train as train_script

GAMMA = 0.5

# Two episodes back to back, then two padding rows (one-row episodes, masked out):
#   rows 0-2: rewards 1, 2, 3, terminates (no bootstrap even though V(s') is given);
#   rows 3-4: rewards 1, 1, cut by a time limit at a state whose value is 4.
HAND_BATCH = {
    "rewards": jnp.array([1.0, 2.0, 3.0, 1.0, 1.0, 0.0, 0.0]),
    "terminals": jnp.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]),
    "episode_ends": jnp.array([0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0]),
    "masks": jnp.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]),
}
NEXT_VALUES = jnp.array([9.0, 9.0, 100.0, 9.0, 4.0, 50.0, 50.0])
VALUES = jnp.array([2.0, 3.0, 1.0, 2.0, 1.0, 7.0, 7.0])


def test_returns_to_go_by_hand():
    # Terminated: G2 = 3, G1 = 2 + .5 * 3 = 3.5, G0 = 1 + .5 * 3.5 = 2.75.
    # Truncated, bootstrapped: G4 = 1 + .5 * 4 = 3, G3 = 1 + .5 * 3 = 2.5.
    bootstrapped = returns_to_go(HAND_BATCH["rewards"], HAND_BATCH["terminals"], HAND_BATCH["episode_ends"], GAMMA, NEXT_VALUES)
    np.testing.assert_allclose(bootstrapped[:5], [2.75, 3.5, 3.0, 2.5, 3.0])
    # Without a value to bootstrap with the truncated episode's return stops at the limit: 1.5, 1.
    plain = returns_to_go(HAND_BATCH["rewards"], HAND_BATCH["terminals"], HAND_BATCH["episode_ends"], GAMMA)
    np.testing.assert_allclose(plain[:5], [2.75, 3.5, 3.0, 1.5, 1.0])


def test_advantages_by_hand():
    returns, advantages = compute_advantages(HAND_BATCH, GAMMA, VALUES, NEXT_VALUES, normalize=False)
    np.testing.assert_allclose(advantages[:5], [0.75, 0.5, 2.0, 0.5, 2.0])
    _, no_baseline = compute_advantages(HAND_BATCH, GAMMA, None, None, normalize=False)
    np.testing.assert_allclose(no_baseline[:5], [2.75, 3.5, 3.0, 1.5, 1.0])

    # Normalized over the five real steps of both episodes together; padding does not count.
    _, normalized = compute_advantages(HAND_BATCH, GAMMA, VALUES, NEXT_VALUES, normalize=True)
    raw = np.array([0.75, 0.5, 2.0, 0.5, 2.0])
    np.testing.assert_allclose(normalized[:5], (raw - raw.mean()) / raw.std(), rtol=1e-5)
    np.testing.assert_allclose(returns[:5], [2.75, 3.5, 3.0, 2.5, 3.0])


def test_collected_episodes_are_contiguous_with_truncations_marked():
    """Interleaved vector-env steps become whole episodes; a time limit is an end, not a terminal."""
    from offrl.envs import make_eval_vector_env

    spec = env_spec("CartPole-v1")
    # A 12-step limit truncates some episodes of a random policy and not others.
    spec = spec.__class__(**{**spec.__dict__, "env_factory": functools.partial(make_online_env, "CartPole-v1", max_episode_steps=12)})
    envs = make_eval_vector_env(spec, 6, seed=0)
    try:
        random_policy = lambda obs, key: jax.random.bernoulli(key, 0.5, (obs.shape[0], 1)).astype(jnp.float32)  # noqa: E731
        episodes = run_episodes(envs, random_policy, jax.random.PRNGKey(0), seed=3)
    finally:
        envs.close()
    rows = episode_rows(episodes, capacity=6 * 12)
    n = int(rows["masks"].sum())
    assert n == episodes["lengths"].sum() and rows["masks"][:n].all()
    ends = np.flatnonzero(rows["episode_ends"][:n])
    starts = np.concatenate([[0], ends[:-1] + 1])
    assert len(ends) == 6 and ends[-1] == n - 1
    for env_id, (start, end) in enumerate(zip(starts, ends)):
        np.testing.assert_allclose(rows["rewards"][start : end + 1].sum(), episodes["returns"][env_id])
        # Consecutive rows of one episode chain: s' of a step is s of the next.
        np.testing.assert_array_equal(rows["next_observations"][start:end], rows["observations"][start + 1 : end + 1])
        truncated = episodes["lengths"][env_id] == 12
        assert rows["terminals"][end] == (0.0 if truncated else 1.0)
    assert (episodes["lengths"] == 12).any() and (episodes["lengths"] < 12).any()
    assert rows["episode_ends"][n:].all() and not rows["rewards"][n:].any()


CORRIDOR_SETTINGS = {
    "agent": "reinforce",
    "env": CORRIDOR,
    "hidden_dims": [],  # linear in the constant observation: one logit per action, as in the book
    "discount": 1.0,
    "episodes_per_update": 16,
    "steps": 300,
    "actor_lr": 0.01,
    "actor_lr_schedule": "cosine",
    "value_lr": 0.05,
    "eval_episodes": 8,
    "eval_deterministic": False,
    "eval_interval": 300,
    "wandb.mode": "disabled",
}


def test_short_corridor_reaches_the_stochastic_optimum(tmp_path):
    run_dir = tmp_path / "corridor"
    run(resolve({**CORRIDOR_SETTINGS, "run_dir": str(run_dir)}), progress=False)
    state, _, _ = restore_run(run_dir)
    observation = jnp.ones((1, 1))
    right = float(state.agent.action_probabilities(observation)[0, 1])
    assert right == pytest.approx(OPTIMAL_RIGHT_PROBABILITY, abs=0.03)

    # The start state's value, -11.66, is the mean episode return of the late updates.
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    late_returns = [row["rollout/return_mean"] for row in metrics if "rollout/return_mean" in row][-100:]
    assert np.mean(late_returns) == pytest.approx(expected_return(OPTIMAL_RIGHT_PROBABILITY), abs=0.8)
    # V sees one observation for every state, so regression on all steps' returns gives
    # their visit-weighted mean, -10.10 at the optimum, not the start state's -11.66.
    assert float(state.agent.values(observation)[0]) == pytest.approx(visit_weighted_value(right), abs=0.6)


def visit_weighted_value(p: float) -> float:
    """Mean return-to-go over every visited step when picking right with probability p."""
    transient = np.array([[1 - p, p, 0.0], [p, 0.0, 1 - p], [0.0, 1 - p, 0.0]])
    values = np.linalg.solve(np.eye(3) - transient, -np.ones(3))
    visits = np.linalg.solve(np.eye(3) - transient.T, np.array([1.0, 0.0, 0.0]))
    return float(visits @ values / visits.sum())


def test_visit_weighted_value_at_the_optimum():
    assert visit_weighted_value(OPTIMAL_RIGHT_PROBABILITY) == pytest.approx(-10.096, abs=1e-3)
    assert expected_return(OPTIMAL_RIGHT_PROBABILITY) == pytest.approx(-11.657, abs=1e-3)


TINY_CARTPOLE = ["--agent", "reinforce", "--env", "CartPole-v1", "--steps", "4", "--episodes-per-update", "2",
                 "--eval-episodes", "5", "--eval-interval", "2", "--hidden-dims", "16", "--wandb.mode", "disabled"]


def test_saved_run_evaluates_to_its_summary_and_resumes_exactly(tmp_path):
    run_dir = tmp_path / "full"
    assert train_script.main(TINY_CARTPOLE + ["--run-dir", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    for field in ("return_mean", "return_std", "success_rate", "episodes", "steps", "updates_per_second", "wall_seconds"):
        assert field in summary, field
    assert summary["steps"] == 4 and summary["episodes"] == 5 and summary["train_episodes"] == 8
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in metrics if "train/actor/loss" in row] == [1, 2, 3, 4]

    out = tmp_path / "eval.json"
    assert evaluate_script.main([str(run_dir), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["return_mean"] == pytest.approx(summary["return_mean"])

    # Env resets are seeded from the checkpointed RNG, so a resumed run sees the same episodes.
    killed_dir = tmp_path / "killed"
    overrides = cfg.parse_overrides(TINY_CARTPOLE)
    assert run(resolve({**overrides, "run_dir": str(killed_dir)}), stop_after=2, progress=False) == {}
    resumed = run(resolve({"resume": str(killed_dir)}), progress=False)
    assert resumed["return_mean"] == summary["return_mean"]
    full_state, _, _ = restore_run(run_dir)
    resumed_state, _, _ = restore_run(killed_dir)
    for a, b in zip(jax.tree_util.tree_leaves(full_state), jax.tree_util.tree_leaves(resumed_state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_num_seeds_matches_single_seed_online_runs(tmp_path):
    """Each seed of a 2-seed online run collects the episodes and learns the parameters of
    the single run with that seed."""
    assert train_script.main(TINY_CARTPOLE + ["--seed", "5", "--num-seeds", "2", "--run-dir", str(tmp_path / "both")]) == 0
    both = json.loads((tmp_path / "both" / "summary.json").read_text())
    for seed in (5, 6):
        single_dir = tmp_path / f"single{seed}"
        assert train_script.main(TINY_CARTPOLE + ["--seed", str(seed), "--run-dir", str(single_dir)]) == 0
        single = json.loads((single_dir / "summary.json").read_text())
        member = json.loads((tmp_path / "both" / f"seed{seed}" / "summary.json").read_text())
        assert member["return_mean"] == single["return_mean"] and member["train_episodes"] == single["train_episodes"] == 8
        rollouts = [[row["rollout/return_mean"] for row in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())
                     if "rollout/return_mean" in row] for d in (single_dir, tmp_path / "both" / f"seed{seed}")]
        assert rollouts[0] == rollouts[1] and len(rollouts[0]) == 4
        single_state, _, _ = restore_run(single_dir)
        member_state, _, _ = restore_run(tmp_path / "both" / f"seed{seed}")
        for a, b in zip(jax.tree_util.tree_leaves(single_state), jax.tree_util.tree_leaves(member_state)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [s["seed"] for s in both["seeds"]] == [5, 6]


def test_log_std_init_sets_the_initial_gaussian_std():
    """Continuous actions start with std exp(log_std_init) on every state, and it is a
    parameter the policy gradient moves; a Discrete policy has no std to set."""
    from offrl.agents.reinforce import ReinforceAgent, ReinforceConfig

    observations = jnp.array([[0.0, 0.1, -0.2, 0.3], [1.0, -1.0, 0.5, 0.0]])
    batch = {"observations": observations, "actions": jnp.zeros((2, 1))}
    for log_std in (0.0, -1.0):
        agent = ReinforceAgent.create(ReinforceConfig(log_std_init=log_std), batch, jax.random.PRNGKey(0))
        std = agent.actor.apply_fn({"params": agent.actor.params}, observations).stddev()
        np.testing.assert_allclose(std, np.exp(log_std), rtol=1e-6)
        assert agent.actor.params["log_stds"].shape == (1,)
    discrete = ReinforceAgent.create(ReinforceConfig(num_actions=2, log_std_init=-1.0), batch, jax.random.PRNGKey(0))
    assert "log_stds" not in discrete.actor.params


def test_online_agent_needs_an_env(capsys):
    from offrl.cli import main_guard

    assert main_guard(lambda: train_script.main(["--agent", "reinforce", "--wandb.mode", "disabled"])) == 1
    assert "give a gymnasium id with --env" in capsys.readouterr().err


# The CartPole preset run for 25 updates instead of 100, then the policy gradient estimated
# again and again from fresh batches of the partly trained policy, with and without its V.
BASELINE_CHECK_UPDATES = 25
BASELINE_CHECK_BATCHES = 12


def policy_gradients(agent: Any, envs: Any, capacity: int, batches: int) -> np.ndarray:
    """[batches, parameters]: the policy gradient of `agent` from each of `batches` fresh
    batches of one episode per sub-env, padded to `capacity` rows (the loss's value term
    does not touch the actor, so its gradient is the policy gradient)."""
    grad = jax.jit(jax.grad(lambda params, batch: agent.loss(params, batch)[0]))
    params = {"actor": agent.actor.params} | ({"value": agent.value.params} if agent.value is not None else {})
    out = []
    for index in range(batches):
        episodes = run_episodes(envs, lambda obs, key: agent.sample_actions(obs, key), jax.random.PRNGKey(index), seed=1000 + index)
        batch = {name: jnp.asarray(values) for name, values in episode_rows(episodes, capacity).items()}
        out.append(jnp.concatenate([leaf.ravel() for leaf in jax.tree_util.tree_leaves(grad(params, batch)["actor"])]))
    return np.stack(out)


def test_learned_baseline_cuts_the_policy_gradient_variance(tmp_path):
    """The baseline is there to cut the variance of the policy gradient without moving its
    mean (Sutton & Barto 13.4). After 250 training episodes, the same policy's gradient from
    fresh batches (the same episodes for both) varies several times less with the learned V
    subtracted than with the raw returns-to-go as weights (studies/reinforce_baseline/log.md has the ratio
    and the benchmark's learning curves with and without). Fails if the baseline stops
    helping: V not subtracted, not fitted (a V left near its initial 0 gives a ratio near 1),
    or fitted to the wrong returns."""
    from offrl.envs import make_eval_vector_env

    config = resolve(
        {"agent": "reinforce", "env": "CartPole-v1", "seed": 0, "steps": BASELINE_CHECK_UPDATES,
         "eval_interval": BASELINE_CHECK_UPDATES, "eval_episodes": 1, "run_dir": str(tmp_path), "wandb.mode": "disabled"}
    )
    assert config["baseline"]
    run(config, progress=False)
    agent = restore_run(tmp_path)[0].agent
    plain = agent.replace(value=None, config=agent.config.replace(baseline=False))
    spec = env_spec("CartPole-v1")
    envs = make_eval_vector_env(spec, config["episodes_per_update"], seed=0)
    capacity = config["episodes_per_update"] * probe_env(spec).max_episode_steps
    try:
        with_baseline = policy_gradients(agent, envs, capacity, BASELINE_CHECK_BATCHES)
        without = policy_gradients(plain, envs, capacity, BASELINE_CHECK_BATCHES)
    finally:
        envs.close()
    variance_ratio = with_baseline.var(axis=0).sum() / without.var(axis=0).sum()
    assert variance_ratio < 0.5, variance_ratio


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_cartpole_preset_reaches_490(seed, tmp_path):
    """The preset alone: at most 1,000 training episodes, then 100 greedy evaluation episodes."""
    config = resolve({"agent": "reinforce", "env": "CartPole-v1", "seed": seed, "run_dir": str(tmp_path), "wandb.mode": "disabled"})
    assert config["steps"] * config["episodes_per_update"] <= 1000 and config["eval_episodes"] == 100
    summary = run(config, progress=False)
    assert summary["return_mean"] >= 490  # wall time is reported by studies/reinforce_baseline/run.py


@pytest.mark.slow
def test_inverted_pendulum_preset_reaches_950(tmp_path):
    """The preset alone on seed 0: at most 1,000 training episodes, then 100 greedy
    evaluation episodes at gymnasium's solved threshold (studies/reinforce_baseline/log.md has all 20 seeds)."""
    config = resolve(
        {"agent": "reinforce", "env": "InvertedPendulum-v5", "seed": 0, "run_dir": str(tmp_path), "wandb.mode": "disabled"}
    )
    assert config["steps"] * config["episodes_per_update"] <= 1000 and config["eval_episodes"] == 100
    summary = run(config, progress=False)
    assert summary["return_mean"] >= 950
