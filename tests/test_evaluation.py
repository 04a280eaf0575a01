"""Evaluation's fast path (sub-envs stepped directly, keys in chunks) gives run_episodes' results."""

import jax
import numpy as np
import pytest

from offrl.envs import make_eval_vector_env
from offrl.evaluation import KEY_CHUNK, run_episodes


def random_cartpole_policy(observations: jax.Array, keys: jax.Array) -> jax.Array:
    """Random CartPole actions from the step keys, one key per block of rows (as seeds' policies)."""
    keys = keys.reshape(-1, 2)
    per_block = observations.shape[0] // keys.shape[0]
    blocks = [jax.random.randint(key, (per_block, 1), 0, 2) for key in keys]
    return jax.numpy.concatenate(blocks)


@pytest.mark.parametrize("num_keys", [1, 2])
def test_fast_scoring_matches_vector_env_stepping(num_keys: int) -> None:
    # CartPole episodes end at different steps and last longer than one key chunk, so this
    # covers masking finished sub-envs and the chunk boundary.
    envs = make_eval_vector_env("CartPole-v1", 6, seed=0)
    key = jax.random.PRNGKey(3) if num_keys == 1 else jax.random.split(jax.random.PRNGKey(3), num_keys)
    seeds = list(range(100, 106))
    recorded = run_episodes(envs, random_cartpole_policy, key, seeds, record_transitions=True)
    scored = run_episodes(envs, random_cartpole_policy, key, seeds, record_transitions=False)
    envs.close()
    assert set(scored) == {"returns", "lengths", "successes", "success_steps", "actions", "env_ids"}
    np.testing.assert_array_equal(scored["actions"], recorded["actions"])
    np.testing.assert_array_equal(scored["env_ids"], recorded["env_ids"])
    assert len(set(recorded["lengths"].tolist())) > 1
    np.testing.assert_array_equal(scored["lengths"], recorded["lengths"])
    np.testing.assert_allclose(scored["returns"], recorded["returns"])
    np.testing.assert_array_equal(scored["successes"], recorded["successes"])
    np.testing.assert_array_equal(scored["success_steps"], recorded["success_steps"])


def test_long_episodes_cross_key_chunks() -> None:
    assert KEY_CHUNK < 500  # CartPole's limit: a good policy's episodes span several chunks
    envs = make_eval_vector_env("CartPole-v1", 2, seed=0)

    def balance(observations: jax.Array, key: jax.Array) -> jax.Array:
        return (observations[:, 2:3] + observations[:, 3:4] > 0).astype(np.int32)

    recorded = run_episodes(envs, balance, jax.random.PRNGKey(0), [7, 8], record_transitions=True)
    scored = run_episodes(envs, balance, jax.random.PRNGKey(0), [7, 8], record_transitions=False)
    envs.close()
    assert recorded["lengths"].max() > KEY_CHUNK
    np.testing.assert_array_equal(scored["lengths"], recorded["lengths"])


def test_evaluation_policy_compiles_once_per_run() -> None:
    from offrl.agents import get_agent
    from offrl.evaluation import _seeds_actions, evaluate_seeds
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
    compiled_before = _seeds_actions._cache_size()
    for step in (0, 1, 2):  # new weights each time, as after training between evaluations
        state = jax.tree_util.tree_map(lambda leaf: leaf * 1.01 if np.issubdtype(leaf.dtype, np.floating) else leaf, state)
        evaluate_seeds(envs, state, [0], 2, deterministic=True, step=step, record_transitions=False)
    envs.close()
    assert _seeds_actions._cache_size() - compiled_before == 1
