"""Evaluation's episode loop (sub-envs stepped directly, keys in chunks) gives the episodes of
gymnasium's own vector stepping, and its policy compiles once per run."""

import jax
import numpy as np
import pytest

from offrl.envs import make_eval_vector_env
from offrl.evaluation import KEY_CHUNK, run_episodes, split_key


def random_cartpole_policy(observations: jax.Array, keys: jax.Array) -> jax.Array:
    """Random CartPole actions from the step keys, one key per block of rows (as seeds' policies)."""
    keys = keys.reshape(-1, 2)
    per_block = observations.shape[0] // keys.shape[0]
    blocks = [jax.random.randint(key, (per_block, 1), 0, 2) for key in keys]
    return jax.numpy.concatenate(blocks)


def vector_env_episodes(envs, policy, key, seeds) -> dict[str, np.ndarray]:
    """The reference: the vector env stepped as a whole (NEXT_STEP autoreset), a key split per
    step, each sub-env counted until its first episode ends."""
    observations, _ = envs.reset(seed=seeds)
    returns, lengths = np.zeros(envs.num_envs), np.zeros(envs.num_envs, np.int64)
    active, actions = np.ones(envs.num_envs, bool), []
    while active.any():
        key, step_key = split_key(key)
        step_actions = np.asarray(policy(np.asarray(observations, np.float32), step_key))
        actions.append(step_actions[active])
        observations, rewards, terminations, truncations, _ = envs.step(step_actions[:, 0].astype(np.int64))
        returns += np.where(active, rewards, 0.0)
        lengths += active
        active &= ~(terminations | truncations)
    return {"returns": returns, "lengths": lengths, "actions": np.concatenate(actions)}


@pytest.mark.parametrize("num_keys", [1, 2])
def test_episodes_are_those_of_vector_env_stepping(num_keys: int) -> None:
    # Random CartPole episodes end at different steps: finished sub-envs must be masked.
    envs = make_eval_vector_env("CartPole-v1", 6, seed=0)
    key = jax.random.PRNGKey(3) if num_keys == 1 else jax.random.split(jax.random.PRNGKey(3), num_keys)
    seeds = list(range(100, 106))
    recorded = run_episodes(envs, random_cartpole_policy, key, seeds, record_transitions=True)
    scored = run_episodes(envs, random_cartpole_policy, key, seeds, record_transitions=False)
    reference = vector_env_episodes(envs, random_cartpole_policy, key, seeds)
    envs.close()
    assert set(scored) == {"returns", "lengths", "successes", "success_steps", "actions", "env_ids"}
    assert len(set(reference["lengths"].tolist())) > 1
    for episodes in (recorded, scored):
        np.testing.assert_array_equal(episodes["lengths"], reference["lengths"])
        np.testing.assert_allclose(episodes["returns"], reference["returns"])
        np.testing.assert_array_equal(episodes["actions"], reference["actions"])
    assert len(recorded["observations"]) == len(recorded["rewards"]) == reference["lengths"].sum()


def test_long_episodes_cross_key_chunks() -> None:
    assert KEY_CHUNK < 500  # CartPole's limit: a good policy's episodes span several chunks
    envs = make_eval_vector_env("CartPole-v1", 2, seed=0)

    def balance(observations: jax.Array, key: jax.Array) -> jax.Array:
        return (observations[:, 2:3] + observations[:, 3:4] > 0).astype(np.int32)

    scored = run_episodes(envs, balance, jax.random.PRNGKey(0), [7, 8], record_transitions=False)
    reference = vector_env_episodes(envs, balance, jax.random.PRNGKey(0), [7, 8])
    envs.close()
    assert reference["lengths"].max() > KEY_CHUNK
    np.testing.assert_array_equal(scored["lengths"], reference["lengths"])


def test_evaluation_policy_compiles_once_per_run() -> None:
    from offrl.agents import get_agent
    from offrl.evaluation import _compiled_policy, _unread_leaves, evaluate_seeds
    from offrl.loop import LoopState, stack_states

    cls, config = get_agent("iql-awr")
    config.update(hidden_dims=(16, 16))
    rng = np.random.default_rng(0)
    example = {
        "observations": rng.normal(size=(64, 3)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(64, 1)).astype(np.float32),
        "rewards": np.zeros(64, np.float32),
        "next_observations": rng.normal(size=(64, 3)).astype(np.float32),
        "terminals": np.zeros(64, np.float32),
    }
    envs = make_eval_vector_env("Pendulum-v1", 2, seed=0)
    agent = cls.create(cls.config_class(**config), example, jax.random.PRNGKey(0))
    state = stack_states([LoopState.initial(agent, jax.random.PRNGKey(0), 3)])
    policies_before = _compiled_policy.cache_info().currsize
    for step in (0, 1, 2):  # new weights each time, as after training between evaluations
        state = jax.tree_util.tree_map(lambda leaf: leaf * 1.01 if np.issubdtype(leaf.dtype, np.floating) else leaf, state)
        evaluate_seeds(envs, state, [0], 2, deterministic=True, step=step, record_transitions=False)
    envs.close()
    assert _compiled_policy.cache_info().currsize - policies_before == 1
    leaves, treedef = jax.tree_util.tree_flatten((state.agent, state.obs_mean, state.obs_std))
    unread = _unread_leaves(treedef, tuple((leaf.shape, leaf.dtype) for leaf in leaves), True, False)
    policy = _compiled_policy(treedef, unread, True, False)
    assert policy._cache_size() == 1, "three evaluations, one compilation"
