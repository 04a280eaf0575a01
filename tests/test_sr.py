import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offrl.agents.sr import SRAgent, SRConfig
from offrl.buffer import ReplayBuffer
from offrl.envs.gridworld import GridWorld, collect_uniform_dataset


def train(agent, buffer, num_updates, seed=0):
    """Fused loop: jit + lax.scan over sample-and-update."""

    @jax.jit
    def run(agent, key):
        def body(agent, step_key):
            return agent.update(buffer.sample(step_key, agent.config.batch_size))

        return jax.lax.scan(body, agent, jax.random.split(key, num_updates))

    return run(agent, jax.random.PRNGKey(seed))


@pytest.fixture(scope="module")
def four_rooms():
    env = GridWorld()
    buffer = ReplayBuffer.from_transitions(collect_uniform_dataset(env, num_steps=50_000, seed=0))
    return env, buffer


def make_agent(buffer, **config):
    return SRAgent.create(SRConfig(**config), buffer.sample(jax.random.PRNGKey(0), 2), jax.random.PRNGKey(0))


def exact_sr(P, policy, gamma):
    P_pi = np.einsum("sa,sat->st", policy, P)
    return np.linalg.inv(np.eye(P.shape[0]) - gamma * P_pi)


def test_uniform_policy_sr_matches_inverse(four_rooms):
    env, buffer = four_rooms
    gamma = 0.9
    agent = make_agent(buffer, gamma=gamma, batch_size=1024, learning_rate=0.5, learning_rate_end=0.05, decay_steps=600)
    agent, info = train(agent, buffer, 600)
    exact = exact_sr(env.transition_matrix(), np.full((104, 4), 0.25), gamma)
    error = np.abs(np.asarray(agent.successor_matrix()) - exact).max()
    assert error < 0.02 / (1 - gamma), error
    assert np.isfinite(np.asarray(info["critic/td_loss"])).all()


def test_values_from_sr_match_exact_value_function(four_rooms):
    env, buffer = four_rooms
    gamma = 0.9
    agent, _ = train(make_agent(buffer, gamma=gamma, batch_size=1024), buffer, 400)
    reward = np.random.default_rng(0).normal(size=104)
    P_pi = env.transition_matrix().mean(axis=1)
    exact_values = np.linalg.solve(np.eye(104) - gamma * P_pi, reward)
    values = np.asarray(agent.state_values(jnp.asarray(reward, jnp.float32)))
    scale = np.abs(exact_values).max()
    assert np.abs(values - exact_values).max() < 0.02 * scale


def test_off_policy_and_normalized_form(four_rooms):
    """A fixed non-uniform policy learned from uniform data; the gamma-model rows sum to 1."""
    env, buffer = four_rooms
    gamma = 0.8
    policy = np.random.default_rng(1).dirichlet(np.ones(4), size=104)
    config = dict(gamma=gamma, batch_size=1024, normalized=True, policy=policy.tolist())
    agent, _ = train(make_agent(buffer, **config), buffer, 300)
    M = np.asarray(agent.successor_matrix())
    np.testing.assert_allclose(M.sum(-1), 1.0, atol=1e-3)
    np.testing.assert_allclose(M, (1 - gamma) * exact_sr(env.transition_matrix(), policy, gamma), atol=1e-3)
    reward = np.zeros(104, np.float32)
    reward[7] = 1.0
    exact_values = exact_sr(env.transition_matrix(), policy, gamma)[:, 7]
    np.testing.assert_allclose(np.asarray(agent.state_values(reward)), exact_values, atol=5e-3)


def test_gamma_zero_conventions(four_rooms):
    """gamma = 0: identity from the current state, the one-step model from the next state."""
    env, buffer = four_rooms
    current, _ = train(make_agent(buffer, gamma=0.0, batch_size=1024), buffer, 50)
    np.testing.assert_allclose(np.asarray(current.successor_matrix()), np.eye(104), atol=1e-4)
    following, _ = train(make_agent(buffer, gamma=0.0, batch_size=1024, convention="next"), buffer, 50)
    np.testing.assert_allclose(np.asarray(following.state_action_successor()), env.transition_matrix(), atol=1e-4)


def test_next_state_convention_relation(four_rooms):
    """M_next(s, a) = P(s, a) M_current: the two conventions differ by one step."""
    env, buffer = four_rooms
    gamma = 0.9
    current, _ = train(make_agent(buffer, gamma=gamma, batch_size=1024), buffer, 400)
    following, _ = train(make_agent(buffer, gamma=gamma, batch_size=1024, convention="next"), buffer, 400)
    expected = np.einsum("sat,tu->sau", env.transition_matrix(), np.asarray(current.successor_matrix()))
    np.testing.assert_allclose(np.asarray(following.state_action_successor()), expected, atol=0.05)


def test_sample_actions_follow_policy_or_reward(four_rooms):
    env, buffer = four_rooms
    agent, _ = train(make_agent(buffer, gamma=0.9, batch_size=1024), buffer, 400)
    observations = jnp.eye(104)[jnp.zeros(4000, jnp.int32)]
    actions = np.asarray(agent.sample_actions(observations, jax.random.PRNGKey(0)))
    np.testing.assert_allclose(np.bincount(actions, minlength=4) / 4000, 0.25, atol=0.03)

    goal = env.cell_to_state((1, 3))
    reward = np.zeros(104, np.float32)
    reward[goal] = 1.0
    greedy = agent.with_reward(reward)
    start = env.cell_to_state((1, 1))
    assert int(greedy.sample_actions(jnp.eye(104)[start], jax.random.PRNGKey(0))) == 1  # right, towards the goal
