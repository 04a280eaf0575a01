"""IQL: the losses against their definitions, the target network, the extraction strategies."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from offrl.agents import get_agent
from offrl.losses import awr_weights, ddpg_bc_loss, expectile_loss
from offrl.tokenizers import BinTokenizer, fit_tokenizer


def random_batch(n: int = 256, obs_dim: int = 6, action_dim: int = 2, seed: int = 0) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    return {
        "observations": jnp.asarray(rng.normal(size=(n, obs_dim)), jnp.float32),
        "actions": jnp.asarray(rng.uniform(-1, 1, size=(n, action_dim)), jnp.float32),
        "rewards": jnp.asarray(rng.normal(size=n), jnp.float32),
        "next_observations": jnp.asarray(rng.normal(size=(n, obs_dim)), jnp.float32),
        "terminals": jnp.asarray(rng.uniform(size=n) < 0.1, jnp.float32),
    }


def make_agent(name: str, **overrides):
    cls, config = get_agent(name)
    config.update(hidden_dims=(32, 32), **overrides)
    return cls.create(cls.config_class(**config), random_batch(), jax.random.PRNGKey(0))


def test_expectile_loss_matches_definition():
    diff = jnp.array([2.0, -2.0, 0.5, -0.5, 0.0])
    tau = 0.7
    expected = np.array([0.7 * 4, 0.3 * 4, 0.7 * 0.25, 0.3 * 0.25, 0.0])
    np.testing.assert_allclose(expectile_loss(diff, tau), expected, rtol=1e-6)
    # The minimizer of the expected expectile loss over samples is the tau-expectile, above the mean for tau > 0.5.
    samples = jnp.asarray(np.random.default_rng(0).normal(size=4000), jnp.float32)
    grid = jnp.linspace(-1, 1, 2001)
    best = grid[jnp.argmin(jax.vmap(lambda v: expectile_loss(samples - v, 0.9).mean())(grid))]
    assert 0.5 < float(best) < 1.0


def test_awr_weights_are_clipped():
    weights = awr_weights(jnp.array([-1.0, 0.0, 1.0, 10.0]), temperature=3.0, max_weight=100.0)
    np.testing.assert_allclose(weights, [np.exp(-3.0), 1.0, np.exp(3.0), 100.0], rtol=1e-5)


@pytest.mark.parametrize("name", ["iql-awr", "iql-ddpg", "iql-dawr"])
def test_target_network_moves_by_tau(name):
    agent = make_agent(name, tau=0.1)
    old_target = agent.target_critic_params
    new_agent, info = agent.update(random_batch(seed=1))
    expected = jax.tree_util.tree_map(
        lambda online, target: 0.1 * online + 0.9 * target, new_agent.critic.params, old_target
    )
    for got, want in zip(jax.tree_util.tree_leaves(new_agent.target_critic_params), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert all(np.isfinite(float(v)) for v in info.values())
    # Only the online critic moved by its gradient; the target moved only a tau fraction of the way.
    moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), new_agent.critic.params, agent.critic.params)
    assert max(jax.tree_util.tree_leaves(moved)) > 0


def test_critic_regresses_on_td_target():
    """With V frozen at zero and no terminals, Q converges to the reward."""
    agent = make_agent("iql-awr", discount=0.0, critic_lr=1e-2)
    batch = random_batch(n=64, seed=3)
    batch["rewards"] = batch["actions"][:, 0] * 2.0
    for _ in range(300):
        agent, info = agent.update(batch)
    q = agent.q_values(batch["observations"], batch["actions"])
    np.testing.assert_allclose(q, batch["rewards"], atol=0.1)


def train_actor_alone(agent, batch: dict[str, jax.Array], steps: int):
    """`steps` Adam(1e-2) steps on the actor loss only (zero advantages), critic held fixed."""
    tx = optax.adam(1e-2)
    params, opt_state = agent.actor.params, tx.init(agent.actor.params)

    @jax.jit
    def step(params, opt_state):
        grads, _ = jax.grad(agent.actor_loss, has_aux=True)(params, batch, jnp.zeros(len(batch["rewards"])))
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    for _ in range(steps):
        params, opt_state = step(params, opt_state)
    return agent.replace(actor=agent.actor.replace(params=params))


def test_pure_ddpg_actor_converges_to_argmax_of_quadratic_q():
    agent = make_agent("iql-ddpg", actor_lr=1e-2, actor_lr_schedule="constant", bc_weight=0.0)
    optimum = jnp.array([0.5, -0.3])

    def quadratic_q(variables, observations, actions):
        q = -((actions - optimum) ** 2).sum(-1)
        return jnp.stack([q, q + 0.1])  # twin heads; the actor maximizes their min

    agent = agent.replace(critic=agent.critic.replace(apply_fn=quadratic_q))
    batch = random_batch(seed=2)
    trained = train_actor_alone(agent, batch, steps=500)
    actions = trained.sample_actions(batch["observations"], jax.random.PRNGKey(0), deterministic=True)
    np.testing.assert_allclose(actions, np.broadcast_to(optimum, actions.shape), atol=0.02)


@pytest.mark.parametrize("squash", ["tanh", "clip"])
def test_ddpg_eval_squash(squash):
    agent = make_agent("iql-ddpg", eval_squash=squash)
    # Push the pre-activation far outside [-1, 1] to see the squash.
    params = jax.tree_util.tree_map(lambda x: x, agent.actor.params)
    params["Dense_0"] = {"bias": jnp.array([3.0, -0.5]), "kernel": jnp.zeros_like(params["Dense_0"]["kernel"])}
    agent = agent.replace(actor=agent.actor.replace(params=params))
    actions = np.asarray(agent.sample_actions(random_batch()["observations"][:4], jax.random.PRNGKey(0), True))
    expected = np.tanh([3.0, -0.5]) if squash == "tanh" else np.array([1.0, -0.5])
    np.testing.assert_allclose(actions, np.broadcast_to(expected, actions.shape), atol=1e-5)


def test_awr_policy_std_is_logged_and_actions_bounded():
    agent = make_agent("iql-awr")
    agent, info = agent.update(random_batch())
    assert 0.0 < float(info["actor/policy_std"]) < 10.0
    actions = agent.sample_actions(random_batch()["observations"], jax.random.PRNGKey(0))
    assert np.all(np.abs(np.asarray(actions)) <= 1.0)


def test_kmeans_tokenizer_round_trips_circle_actions():
    angles = np.random.default_rng(0).uniform(0, 2 * np.pi, 5000)
    actions = jnp.asarray(np.stack([np.cos(angles), np.sin(angles)], -1), jnp.float32)
    tokenizer = fit_tokenizer("kmeans", actions, jax.random.PRNGKey(0), num_tokens=64, num_bins=0)
    decoded = tokenizer.decode(tokenizer.encode(actions))
    # 64 codewords on a circle: each arc spans 2*pi/64, so the nearest codeword is within half an arc.
    assert float(jnp.linalg.norm(decoded - actions, axis=-1).max()) < 2 * np.pi / 64
    # Codewords stay near the circle (joint structure kept), unlike per-dimension bin centres.
    np.testing.assert_allclose(jnp.linalg.norm(tokenizer.codebook, axis=-1), 1.0, atol=0.01)


def test_bin_tokenizer_round_trips_within_bin_width():
    actions = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (2000, 3)), jnp.float32)
    tokenizer = fit_tokenizer("bins", actions, jax.random.PRNGKey(0), num_tokens=0, num_bins=16)
    assert isinstance(tokenizer, BinTokenizer)
    tokens = tokenizer.encode(actions)
    assert tokens.shape == (2000, 3) and int(tokens.min()) == 0 and int(tokens.max()) == 15
    width = (tokenizer.high - tokenizer.low) / 16
    assert bool(jnp.all(jnp.abs(tokenizer.decode(tokens) - actions) <= width / 2 + 1e-6))


@pytest.mark.parametrize("tokenizer", ["kmeans", "bins"])
def test_dawr_update_and_sampling(tokenizer):
    agent = make_agent("iql-dawr", tokenizer=tokenizer, num_tokens=16, num_bins=8)
    agent, info = agent.update(random_batch())
    assert np.isfinite(float(info["actor/loss"]))
    greedy = agent.sample_actions(random_batch()["observations"][:8], jax.random.PRNGKey(0), deterministic=True)
    sampled = agent.sample_actions(random_batch()["observations"][:8], jax.random.PRNGKey(0), deterministic=False)
    assert greedy.shape == sampled.shape == (8, 2)


def test_unknown_extraction_is_an_error():
    with pytest.raises(ValueError, match="config key 'extraction' must be one of awr, ddpg, dawr"):
        make_agent("iql-awr", extraction="sac")


def test_iql_ddpg_defaults_to_ddpg_plus_bc():
    _, config = get_agent("iql-ddpg")
    assert config["extraction"] == "ddpg" and config["bc_weight"] > 0 and config["normalize_q_loss"] is True


def test_ddpg_bc_loss_terms():
    q = jnp.array([2.0, -4.0, 6.0])
    policy_actions = jnp.array([[0.5, 0.0], [0.0, 0.0], [1.0, 1.0]])
    data_actions = jnp.zeros((3, 2))
    # bc_weight 0 without normalization is pure DDPG: -mean Q.
    loss, info = ddpg_bc_loss(q, policy_actions, data_actions, bc_weight=0.0, normalize_q=False)
    np.testing.assert_allclose(loss, -4.0 / 3, rtol=1e-6)
    # Normalized: -Q / mean|Q| (= 4) + bc_weight * mean squared distance ((0.25 + 0 + 2) / 3).
    loss, info = ddpg_bc_loss(q, policy_actions, data_actions, bc_weight=0.5, normalize_q=True)
    np.testing.assert_allclose(loss, -(4.0 / 3) / 4.0 + 0.5 * 2.25 / 3, rtol=1e-5)
    np.testing.assert_allclose(info["actor/bc_mse"], 0.75, rtol=1e-6)
    # The scale is a stop-gradient: with bc_weight 0 the normalized gradient is the pure DDPG
    # gradient divided by mean |Q|, the same direction.
    pure = jax.grad(lambda x: ddpg_bc_loss(x, policy_actions, data_actions, bc_weight=0.0, normalize_q=False)[0])(q)
    normalized = jax.grad(lambda x: ddpg_bc_loss(x, policy_actions, data_actions, bc_weight=0.0, normalize_q=True)[0])(q)
    np.testing.assert_allclose(normalized, pure / 4.0, rtol=1e-5)


def test_bc_weight_pulls_the_ddpg_actor_to_the_data_action():
    """With a flat Q only the BC term acts: the actor converges to the dataset's action."""
    agent = make_agent("iql-ddpg", bc_weight=1.0)
    agent = agent.replace(critic=agent.critic.replace(apply_fn=lambda v, o, a: jnp.ones((2, o.shape[0]))))
    batch = random_batch(seed=4)
    batch["actions"] = jnp.broadcast_to(jnp.array([0.3, -0.6]), batch["actions"].shape)
    actions = train_actor_alone(agent, batch, steps=300).sample_actions(
        batch["observations"], jax.random.PRNGKey(0), deterministic=True
    )
    np.testing.assert_allclose(actions, np.broadcast_to([0.3, -0.6], actions.shape), atol=0.02)


@pytest.mark.parametrize("actor_std", ["state", "parameter", "bounded_parameter"])
def test_awr_std_parametrizations(actor_std):
    agent = make_agent("iql-awr", actor_std=actor_std, actor_log_std_min=-4.0, actor_log_std_max=1.0)
    observations = random_batch()["observations"]
    dist = agent.actor.apply_fn({"params": agent.actor.params}, observations)
    stds = np.asarray(dist.stddev())
    assert np.all(stds >= np.exp(-4.0) - 1e-6) and np.all(stds <= np.exp(1.0) + 1e-6)
    if actor_std == "state":
        assert "Dense_1" in agent.actor.params and "log_stds" not in agent.actor.params
    else:
        # One std for every state, from a parameter (zero at init).
        assert agent.actor.params["log_stds"].shape == (2,)
        np.testing.assert_allclose(stds, np.broadcast_to(stds[0], stds.shape), rtol=1e-6)
        expected = -1.5 if actor_std == "bounded_parameter" else 0.0  # sigmoid(0) = midpoint of [-4, 1]
        np.testing.assert_allclose(np.log(stds[0]), expected, atol=1e-6)
    agent, info = agent.update(random_batch())
    assert np.isfinite(float(info["actor/loss"]))


def test_awr_parameter_log_std_is_clipped():
    agent = make_agent("iql-awr", actor_std="parameter", actor_log_std_min=-5.0, actor_log_std_max=2.0)
    params = {**agent.actor.params, "log_stds": jnp.array([-9.0, 7.0])}
    dist = agent.actor.apply_fn({"params": params}, random_batch()["observations"][:3])
    np.testing.assert_allclose(np.log(np.asarray(dist.stddev()[0])), [-5.0, 2.0], atol=1e-5)


@pytest.mark.parametrize("tanh_mean", [True, False])
def test_awr_tanh_mean(tanh_mean):
    agent = make_agent("iql-awr", actor_tanh_mean=tanh_mean)
    params = jax.tree_util.tree_map(lambda x: x, agent.actor.params)
    params["Dense_0"] = {"bias": jnp.array([3.0, -0.5]), "kernel": jnp.zeros_like(params["Dense_0"]["kernel"])}
    dist = agent.actor.apply_fn({"params": params}, random_batch()["observations"][:2])
    expected = np.tanh([3.0, -0.5]) if tanh_mean else np.array([3.0, -0.5])
    np.testing.assert_allclose(dist.mode()[0], expected, rtol=1e-5)


def test_orthogonal_actor_init():
    agent = make_agent("iql-awr", actor_init="orthogonal", actor_final_init_scale=1.0)
    hidden = np.asarray(agent.actor.params["MLP_0"]["Dense_1"]["kernel"])  # 32 x 32
    np.testing.assert_allclose(hidden.T @ hidden, 2.0 * np.eye(32), atol=1e-4)  # gain sqrt(2)
    output = np.asarray(agent.actor.params["Dense_0"]["kernel"])  # 32 x 2
    np.testing.assert_allclose(output.T @ output, np.eye(2), atol=1e-4)


def test_actor_dropout_only_in_training():
    agent = make_agent("iql-ddpg", actor_dropout=0.5)
    observations = random_batch()["observations"]
    apply = lambda key: agent._actor_apply(agent.actor.params, observations, key)  # noqa: E731
    assert not np.allclose(apply(jax.random.PRNGKey(1)), apply(jax.random.PRNGKey(2)))
    np.testing.assert_allclose(apply(None), agent.actor.apply_fn({"params": agent.actor.params}, observations))
    new_agent, info = agent.update(random_batch())
    assert np.isfinite(float(info["actor/loss"])) and not np.array_equal(new_agent.rng, agent.rng)


def test_post_update_advantage_uses_the_updated_value():
    batch = random_batch(seed=5)
    pre, pre_info = make_agent("iql-awr", value_lr=1e-2).update(batch)
    post, post_info = make_agent("iql-awr", value_lr=1e-2, actor_advantage="post_update").update(batch)
    # Same value and critic steps; only the actor's advantage (and so its step) differs.
    for a, b in zip(jax.tree_util.tree_leaves(pre.value.params), jax.tree_util.tree_leaves(post.value.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    for a, b in zip(jax.tree_util.tree_leaves(pre.critic.params), jax.tree_util.tree_leaves(post.critic.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    agent = make_agent("iql-awr", value_lr=1e-2)
    target_q = agent.critic.apply_fn({"params": agent.target_critic_params}, batch["observations"], batch["actions"]).min(0)
    new_v = pre.value.apply_fn({"params": pre.value.params}, batch["observations"])
    np.testing.assert_allclose(post_info["actor/advantage"], (target_q - new_v).mean(), rtol=1e-4, atol=1e-6)
    assert abs(float(post_info["actor/advantage"]) - float(pre_info["actor/advantage"])) > 1e-6


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"actor_std": "learned"}, "config key 'actor_std' must be one of state, parameter, bounded_parameter"),
        ({"actor_init": "xavier"}, "config key 'actor_init' must be one of glorot, orthogonal"),
        ({"actor_advantage": "later"}, "config key 'actor_advantage' must be one of pre_update, post_update"),
        ({"actor_dropout": 1.0}, "config key 'actor_dropout' must be a number in"),
        ({"actor_log_std_min": 2.0}, "actor_log_std_min must be below actor_log_std_max"),
    ],
)
def test_bad_actor_options_are_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_agent("iql-awr", **overrides)


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_learning_rates_are_state_leaves_with_the_same_schedule(schedule):
    """--vmap batches learning rates as arrays of the optimizer state; the updates must be
    those of optax.adam with the schedule built from a constant peak, step after step."""
    agent = make_agent("iql-awr", actor_lr=1e-3, actor_lr_schedule=schedule, max_steps=8)
    params, tx = agent.actor.params, agent.actor.tx
    peak = jnp.asarray(2e-3)
    state = agent.actor.opt_state._replace(hyperparams={**agent.actor.opt_state.hyperparams, "learning_rate": peak})
    reference_lr = optax.cosine_decay_schedule(2e-3, 8) if schedule == "cosine" else 2e-3
    reference = optax.adam(reference_lr)
    reference_state = reference.init(params)
    rng = np.random.default_rng(0)
    for _ in range(10):  # past max_steps: the cosine stays at 0
        grads = jax.tree_util.tree_map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
        updates, state = tx.update(grads, state, params)
        expected, reference_state = reference.update(grads, reference_state, params)
        for got, want in zip(jax.tree_util.tree_leaves(updates), jax.tree_util.tree_leaves(expected)):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)
    # The config's batchable fields are its pytree leaves (arrays under --vmap); the rest is static.
    from offrl.config import batchable_keys

    assert len(jax.tree_util.tree_leaves(agent.config)) == len(batchable_keys(type(agent.config))) > 0
    assert float(agent.config.expectile) == pytest.approx(0.7)


def test_td_target_bootstraps_with_discount_and_stops_at_terminals():
    """The critic's regression target inside `update` is r + gamma * (1 - terminal) * V(s'),
    checked against a by-hand computation with a known V (the sum of the observation)."""
    agent = make_agent("iql-awr", discount=0.9)
    agent = agent.replace(value=agent.value.replace(apply_fn=lambda variables, observations: observations.sum(-1)))
    batch = random_batch(n=64, seed=5)
    batch["terminals"] = jnp.asarray(np.arange(64) % 2, jnp.float32)  # half the rows end the episode
    q = agent.critic.apply_fn({"params": agent.critic.params}, batch["observations"], batch["actions"])
    target = batch["rewards"] + 0.9 * (1.0 - batch["terminals"]) * batch["next_observations"].sum(-1)
    _, info = agent.update(batch)
    np.testing.assert_allclose(info["critic/td_target"], target.mean(), rtol=1e-5)
    np.testing.assert_allclose(info["critic/loss"], ((q - target) ** 2).mean(axis=1).sum(), rtol=1e-5)


def bandit_batch(n: int = 2048, seed: int = 0) -> dict[str, jax.Array]:
    """A one-step bandit: uniform random actions, reward -(a - a*)^2 summed, every row terminal."""
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    return {
        "observations": jnp.zeros((n, 2)),
        "actions": jnp.asarray(actions),
        "rewards": jnp.asarray(-((actions - BANDIT_OPTIMUM) ** 2).sum(-1)),
        "next_observations": jnp.zeros((n, 2)),
        "terminals": jnp.ones(n),
    }


BANDIT_OPTIMUM = np.array([0.5, -0.3], np.float32)


@functools.lru_cache(maxsize=None)  # the expectile and beats-the-data tests share the iql-awr 0.9 run
def train_on_bandit(name: str, expectile: float, updates: int = 2000):
    cls, config = get_agent(name)
    config.update(hidden_dims=(64, 64), expectile=expectile, actor_lr_schedule="constant",
                  actor_lr=1e-3, critic_lr=1e-3, value_lr=1e-3, batch_size=256)
    data = bandit_batch()
    agent = cls.create(cls.config_class(**config), data, jax.random.PRNGKey(0))

    def one_update(agent, key):
        rows = jax.random.randint(key, (256,), 0, len(data["rewards"]))
        return agent.update(jax.tree_util.tree_map(lambda x: x[rows], data))[0], None

    agent, _ = jax.jit(lambda agent: jax.lax.scan(one_update, agent, jax.random.split(jax.random.PRNGKey(1), updates)))(agent)
    return agent, data


@pytest.mark.parametrize("expectile", [0.9, 0.1])
def test_value_update_learns_the_expectile_of_q_over_data_actions(expectile):
    """Inside the agent's update V moves to the tau-expectile of Q(s, a) over the data's actions:
    above their mean for tau 0.9, below it for tau 0.1 (a flipped expectile swaps the two)."""
    agent, data = train_on_bandit("iql-awr", expectile)
    rewards = np.asarray(data["rewards"])
    grid = np.linspace(rewards.min(), rewards.max(), 4001)
    losses = [np.mean(np.where(rewards - v > 0, expectile, 1 - expectile) * (rewards - v) ** 2) for v in grid]
    wanted = grid[int(np.argmin(losses))]
    value = float(agent.value.apply_fn({"params": agent.value.params}, jnp.zeros((1, 2)))[0])
    assert abs(value - wanted) < 0.1
    assert (value > rewards.mean() + 0.3) if expectile > 0.5 else (value < rewards.mean() - 0.3)


@pytest.mark.parametrize("name", ["iql-ddpg", "iql-awr"])
def test_iql_beats_the_data_on_a_bandit(name):
    """The data's actions are uniform (mean reward -1.0, their mean action scores -0.34); the
    extracted policy must do much better than both, as an offline-RL method should."""
    agent, data = train_on_bandit(name, 0.9)
    action = np.asarray(agent.sample_actions(jnp.zeros((1, 2)), jax.random.PRNGKey(0), deterministic=True))[0]
    reward = -float(((action - BANDIT_OPTIMUM) ** 2).sum())
    assert float(data["rewards"].mean()) < -0.9
    assert reward > -0.12, action
