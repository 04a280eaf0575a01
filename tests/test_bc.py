"""Behaviour cloning: each head imitates the data's actions, the Gaussian one is AWR with equal
weights, and the agent trains, batches its learning rate with --vmap and evaluates like any other."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offrl.agents import get_agent
from offrl.losses import weighted_log_likelihood_loss

from test_train import tiny_config


def state_dependent_batch(n: int = 512, seed: int = 0) -> dict[str, jax.Array]:
    """Actions a deterministic function of the state plus Gaussian noise of std 0.1."""
    rng = np.random.default_rng(seed)
    observations = rng.normal(size=(n, 3)).astype(np.float32)
    mean_actions = np.tanh(observations[:, :2] * np.array([0.8, -0.5], np.float32))
    actions = np.clip(mean_actions + 0.1 * rng.normal(size=(n, 2)), -1, 1).astype(np.float32)
    return {
        "observations": jnp.asarray(observations),
        "actions": jnp.asarray(actions),
        "mean_actions": jnp.asarray(mean_actions),
        "rewards": jnp.zeros(n),
        "next_observations": jnp.asarray(observations),
        "terminals": jnp.zeros(n),
    }


def make_bc(**overrides):
    cls, config = get_agent("bc")
    config.update(hidden_dims=(64, 64), actor_lr=3e-3, **overrides)
    return cls.create(cls.config_class(**config), state_dependent_batch(), jax.random.PRNGKey(0))


@jax.jit
def train(agent, batch):
    return jax.lax.scan(lambda agent, _: (agent.update(batch)[0], None), agent, None, length=1500)[0]


@pytest.mark.parametrize("head", ["gaussian", "deterministic"])
def test_bc_clones_a_state_dependent_action(head):
    batch = state_dependent_batch()
    agent = train(make_bc(policy_head=head), batch)
    actions = agent.sample_actions(batch["observations"], jax.random.PRNGKey(1), deterministic=True)
    assert float(jnp.abs(actions - batch["mean_actions"]).mean()) < 0.05
    if head == "gaussian":
        # maximum likelihood also fits the noise: std near the data's 0.1
        std = float(agent.actor.apply_fn({"params": agent.actor.params}, batch["observations"]).stddev().mean())
        assert 0.07 < std < 0.14


def test_gaussian_bc_is_awr_with_equal_weights():
    agent, batch = make_bc(), state_dependent_batch(seed=1)
    loss, _ = agent.loss(agent.actor.params, batch)
    dist = agent.actor.apply_fn({"params": agent.actor.params}, batch["observations"])
    awr, _ = weighted_log_likelihood_loss(dist, batch["actions"], jnp.ones(len(batch["actions"])))
    np.testing.assert_allclose(loss, awr, rtol=1e-6)


def test_unknown_policy_head_is_an_error():
    with pytest.raises(ValueError, match="policy_head"):
        make_bc(policy_head="mixture")


def test_bc_trains_and_vmaps_its_learning_rate(small_umaze_id, tmp_path):
    """One file and a registry line: the runner trains it, --vmap batches its learning rate."""
    summary = run_bc(small_umaze_id, tmp_path)
    assert [row["actor_lr"] for row in summary["combinations"]] == [0.001, 0.0003]
    for row in summary["combinations"]:
        assert np.isfinite(row["return_mean"])
    member = json.loads((tmp_path / "bc" / "actor_lr=0.001" / "summary.json").read_text())
    assert member["actor_lr"] == 0.001
    from offrl.experiment import restore_run
    from offrl.runner import run
    from test_train import leaves

    single_dir = tmp_path / "single"
    run(tiny_config(small_umaze_id, single_dir, agent="bc", steps=200, eval_interval=200, actor_lr=0.001), progress=False)
    for a, b in zip(leaves(restore_run(tmp_path / "bc" / "actor_lr=0.001")[0]), leaves(restore_run(single_dir)[0])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def run_bc(dataset: str, tmp_path):
    from offrl.runner import run

    config = tiny_config(dataset, tmp_path / "bc", agent="bc", steps=200, eval_interval=200, vmap="actor_lr=0.001,0.0003")
    return run(config, progress=False)
