"""TD3+BC: target policy smoothing, the delayed actor and target updates, the BC term, the
fused (scanned, seed-vmapped) loop, the typed config, and learning (a bandit; slow: the maze)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offrl.agents import get_agent
from offrl.agents.td3bc import TD3BCAgent, TD3BCConfig, smoothed_target_actions
from offrl.buffer import ReplayBuffer
from offrl.config import parse_overrides
from offrl.losses import ddpg_bc_loss
from offrl.loop import LoopState, make_seeds_train_chunk, make_train_chunk, seed_slice, stack_states
from offrl.experiment import resolve
from offrl.runner import run
from offrl.transitions import Transitions
from test_iql import random_batch as iql_random_batch


def random_batch(n: int = 256, seed: int = 0) -> dict[str, jax.Array]:
    """test_iql's random rows with 4-D observations (the maze's position and velocity)."""
    return iql_random_batch(n=n, obs_dim=4, seed=seed)


def make_agent(batch: dict[str, jax.Array] | None = None, seed: int = 0, **overrides) -> TD3BCAgent:
    cls, config = get_agent("td3bc")
    config.update(hidden_dims=(32, 32), **overrides)
    return cls.create(cls.config_class(**config), random_batch() if batch is None else batch, jax.random.PRNGKey(seed))


def max_change(new, old) -> float:
    return max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(old)))


def test_target_smoothing_noise_is_clipped_then_the_action():
    means = jnp.zeros((4000, 2))
    actions = smoothed_target_actions(means, jax.random.PRNGKey(0), noise=1.0, noise_clip=0.5)
    # std 1 noise exceeds 0.5 in ~62% of draws: all of those sit exactly on the clip.
    assert float(jnp.abs(actions).max()) == pytest.approx(0.5)
    assert 0.5 < float((jnp.abs(actions) == 0.5).mean()) < 0.75
    near_edge = smoothed_target_actions(jnp.full((4000, 2), 0.8), jax.random.PRNGKey(1), noise=1.0, noise_clip=0.5)
    assert float(near_edge.max()) == 1.0 and float(near_edge.min()) == pytest.approx(0.3)
    small = smoothed_target_actions(means, jax.random.PRNGKey(2), noise=0.2, noise_clip=0.5)
    assert float(small.std()) == pytest.approx(0.2, rel=0.05)  # 0.5 is 2.5 std: almost nothing clipped
    np.testing.assert_array_equal(smoothed_target_actions(means + 0.3, jax.random.PRNGKey(3), 1.0, 0.0), means + 0.3)


def test_td_target_uses_smoothed_target_actions_and_the_min_of_the_target_twins():
    batch = random_batch(seed=1)
    agent = make_agent(actor_noise=0.3, actor_noise_clip=0.1, discount=0.9)
    # Perturbed targets, so a target network mixed up with the online one would show.
    shift = lambda tree, scale: jax.tree_util.tree_map(lambda x: x * scale, tree)  # noqa: E731
    agent = agent.replace(target_actor_params=shift(agent.actor.params, 3.0), target_critic_params=shift(agent.critic.params, 1.5))
    _, noise_key = jax.random.split(agent.rng)
    next_actions = smoothed_target_actions(agent.policy(agent.target_actor_params, batch["next_observations"]), noise_key, 0.3, 0.1)
    next_q = agent.critic.apply_fn({"params": agent.target_critic_params}, batch["next_observations"], next_actions)
    expected = batch["rewards"] + 0.9 * (1.0 - batch["terminals"]) * next_q.min(0)
    _, info = agent.update(batch)
    assert float(info["critic/td_target"]) == pytest.approx(float(expected.mean()), rel=1e-5, abs=1e-6)
    without_noise = batch["rewards"] + 0.9 * (1.0 - batch["terminals"]) * next_q.max(0)
    assert float(info["critic/td_target"]) != pytest.approx(float(without_noise.mean()), rel=1e-3)


def test_actor_and_targets_move_only_on_every_second_update():
    batch = random_batch(seed=2)
    agent = make_agent(tau=0.1)
    for update in range(1, 5):
        new, _ = agent.update(batch)
        assert max_change(new.critic.params, agent.critic.params) > 0  # the critic moves every update
        if update % 2:
            assert max_change(new.actor.params, agent.actor.params) == 0.0
            assert max_change(new.target_actor_params, agent.target_actor_params) == 0.0
            assert max_change(new.target_critic_params, agent.target_critic_params) == 0.0
        else:
            assert max_change(new.actor.params, agent.actor.params) > 0
            for online, old_target, target in (
                (new.actor.params, agent.target_actor_params, new.target_actor_params),
                (new.critic.params, agent.target_critic_params, new.target_critic_params),
            ):
                expected = jax.tree_util.tree_map(lambda o, t: 0.1 * o + 0.9 * t, online, old_target)
                assert max_change(target, expected) < 1e-6
        agent = new


def test_policy_delay_three_moves_the_actor_on_updates_three_and_six():
    batch = random_batch(seed=3)
    agent = make_agent(policy_delay=3)
    moved = []
    for _ in range(6):
        new, _ = agent.update(batch)
        moved.append(max_change(new.actor.params, agent.actor.params) > 0)
        agent = new
    assert moved == [False, False, True, False, False, True]


def test_actor_loss_is_the_papers():
    q_policy = jnp.array([1.0, -3.0])
    policy_actions = jnp.array([[0.5, 0.0], [0.0, 0.0]])
    data_actions = jnp.array([[0.0, 0.0], [0.0, 1.0]])
    def td3bc_actor_loss(q: jax.Array) -> tuple[jax.Array, dict]:
        return ddpg_bc_loss(q, policy_actions, data_actions, q_weight=2.5, bc_mean_over_action_dims=True)

    loss, info = td3bc_actor_loss(q_policy)
    lam = 2.5 / 2.0  # alpha / mean |Q|
    bc = (0.25 + 1.0) / 4  # mean over rows and action dims
    assert float(info["actor/bc_mse"]) == pytest.approx(bc, rel=1e-5)
    assert float(loss) == pytest.approx(-lam * -1.0 + bc, rel=1e-5)
    # lambda is a constant of the gradient: d loss / dQ = -lambda / N, whatever the size of Q.
    grad = jax.grad(lambda q: td3bc_actor_loss(q)[0])(q_policy)
    np.testing.assert_allclose(grad, [-lam / 2, -lam / 2], rtol=1e-5)


def test_bc_term_pulls_the_policy_to_the_data_actions():
    """With a negligible Q weight the actor is behaviour cloning of a state-dependent action."""
    batch = random_batch(n=128, seed=4)
    batch["actions"] = 0.8 * jnp.tanh(batch["observations"][:, :2])
    agent = make_agent(batch, alpha=1e-4, actor_lr=3e-3)

    def bc_error(agent: TD3BCAgent) -> float:
        return float(((agent.sample_actions(batch["observations"], jax.random.PRNGKey(0)) - batch["actions"]) ** 2).mean())

    before = bc_error(agent)
    for _ in range(600):
        agent, info = agent.update(batch)
    assert before > 0.1 and bc_error(agent) < 0.01
    assert float(info["actor/bc_mse"]) == pytest.approx(bc_error(agent), rel=0.2, abs=2e-3)


def make_buffer(n: int = 512, seed: int = 0) -> ReplayBuffer:
    batch = {name: np.asarray(value) for name, value in random_batch(n=n, seed=seed).items()}
    return ReplayBuffer.from_transitions(Transitions(**batch, episode_ends=np.zeros(n, np.float32)))


def test_the_fused_loop_scans_and_vmaps_seeds_with_the_delay_inside():
    buffer = make_buffer()
    example = random_batch(n=64)  # the same shapes as the buffer's rows
    states = [
        jax.tree_util.tree_map(jnp.asarray, LoopState.initial(make_agent(example, seed=seed), jax.random.PRNGKey(seed), 4))
        for seed in (0, 1)
    ]
    singles = [make_train_chunk(TD3BCAgent, 5)(state, buffer) for state in states]
    stacked, info = make_seeds_train_chunk(TD3BCAgent, 5)(stack_states(states), buffer)
    for index, (single, single_info) in enumerate(singles):
        assert max_change(seed_slice(stacked, index), single) < 1e-5
        np.testing.assert_allclose(info["actor/loss"][index], single_info["actor/loss"], rtol=1e-5)
    assert int(stacked.agent.actor.step[0]) == 2 and int(stacked.agent.critic.step[0]) == 5


def test_a_policy_better_than_the_data_on_a_bandit():
    """One step, reward 1 - (a - 0.6)^2, data actions uniform: BC alone would act 0 (reward
    0.64); TD3+BC's optimum is a = 0.6 lambda / (lambda + 1) ~ 0.44 (lambda ~ alpha / 0.9),
    reward ~ 0.97."""
    n = 2048
    rng = np.random.default_rng(5)
    actions = rng.uniform(-1, 1, size=(n, 1)).astype(np.float32)
    observations = rng.normal(size=(n, 2)).astype(np.float32)
    transitions = Transitions(
        observations=observations,
        actions=actions,
        rewards=(1.0 - (actions[:, 0] - 0.6) ** 2).astype(np.float32),
        next_observations=observations,
        terminals=np.ones(n, np.float32),
        episode_ends=np.ones(n, np.float32),
    )
    buffer = ReplayBuffer.from_transitions(transitions)
    agent = make_agent({name: jnp.asarray(value) for name, value in transitions.as_dict().items()}, critic_lr=1e-3)
    state = jax.tree_util.tree_map(jnp.asarray, LoopState.initial(agent, jax.random.PRNGKey(0), 2))
    state, _ = make_train_chunk(TD3BCAgent, 3000)(state, buffer)
    policy_actions = np.asarray(state.agent.sample_actions(jnp.asarray(observations), jax.random.PRNGKey(0)))
    assert 0.3 < policy_actions.mean() < 0.55 and policy_actions.std() < 0.1
    assert float((1.0 - (policy_actions - 0.6) ** 2).mean()) > 0.95


def test_config_is_typed_and_rejects_bad_values_by_name():
    assert TD3BCConfig(hidden_dims=[64, 64]).hidden_dims == (64, 64)  # lists from YAML, hashable for jit
    for key, value in (("policy_delay", 0), ("alpha", 0.0), ("tau", 1.5), ("actor_noise_clip", -0.1), ("batch_size", 2.5)):
        with pytest.raises(ValueError, match=f"'{key}'"):
            TD3BCConfig(**{key: value})
    with pytest.raises(TypeError):
        TD3BCConfig(bc_weight=0.1)  # another agent's key


def test_presets_turn_on_the_papers_state_normalization():
    argv = ["--agent", "td3bc", "--dataset", "offrl/pointmaze/umaze-v1", "--alpha", "3e-1", "--policy-delay=3"]
    config = resolve(parse_overrides(argv))
    assert config["normalize_observations"] is True and config["steps"] == 20_000
    assert config["alpha"] == 0.3 and config["policy_delay"] == 3


def test_a_rejected_config_leaves_no_run_directory(small_pointmaze_id, tmp_path):
    with pytest.raises(ValueError, match="config key 'policy_delay' must be an integer >= 1"):
        run(resolve({"agent": "td3bc", "dataset": small_pointmaze_id, "policy_delay": 0, "run_dir": str(tmp_path / "run")}),
            progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_td3bc_reaches_the_pointmaze_goals(small_pointmaze_id, tmp_path):
    """The default path (registry, preset with state normalization, fused loop, evaluation) on the
    5000-step goal-conditioned umaze. Measured at commit 670789f: seeds 0 and 1 both normalized
    100.0, success 1.00 (117 and 115 steps to the goal); after 1 update: 0.0, success 0.00."""
    config = resolve(
        {
            "agent": "td3bc",
            "dataset": small_pointmaze_id,
            "steps": 4000,
            "hidden_dims": [128, 128],
            "eval_episodes": 30,
            "eval_interval": 4000,
            "run_dir": str(tmp_path / "td3bc"),
            "wandb.mode": "disabled",
        }
    )
    summary = run(config, progress=False)
    assert config["normalize_observations"]
    assert summary["success_rate"] >= 0.9 and summary["normalized_score"] >= 80.0


def test_vmap_batches_alpha_through_the_runner_and_each_member_is_its_single_run(small_umaze_id, tmp_path):
    """alpha is batchable because its declaration says so: no TD3+BC code knows about --vmap."""
    from offrl.experiment import restore_run
    from test_train import leaves, tiny_config

    settings = {"agent": "td3bc", "steps": 100, "eval_interval": 100, "eval_episodes": 2, "batch_size": 32}
    summary = run(tiny_config(small_umaze_id, tmp_path / "grid", vmap="alpha=0.5,2.5", **settings), progress=False)
    assert [row["alpha"] for row in summary["combinations"]] == [0.5, 2.5]
    run(tiny_config(small_umaze_id, tmp_path / "single", alpha=0.5, **settings), progress=False)
    member, _, _ = restore_run(tmp_path / "grid" / "alpha=0.5")
    single, _, _ = restore_run(tmp_path / "single")
    assert float(member.agent.config.alpha) == 0.5
    for a, b in zip(leaves(member), leaves(single)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    other, _, _ = restore_run(tmp_path / "grid" / "alpha=2.5")
    assert any(not np.allclose(a, b) for a, b in zip(leaves(member.agent.actor.params), leaves(other.agent.actor.params)))


def test_vmap_refuses_a_key_its_declaration_does_not_batch(small_umaze_id, tmp_path):
    from offrl.config import ConfigError
    from test_train import tiny_config

    with pytest.raises(ConfigError, match="--vmap policy_delay: changes shapes or the code path"):
        run(tiny_config(small_umaze_id, tmp_path / "r", agent="td3bc", steps=10, vmap="policy_delay=1,2"), progress=False)
    assert not (tmp_path / "r").exists()
