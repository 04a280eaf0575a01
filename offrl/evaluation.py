"""Evaluation: a batch of episodes in a gymnasium vector env, one batched policy call per step,
for one policy or for every seed of a stacked loop state at once (`evaluate_seeds`)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable

import gymnasium as gym
from gymnasium.vector import SyncVectorEnv
from gymnasium.wrappers.vector import TransformObservation
import jax
import jax.numpy as jnp
import numpy as np

from offrl.envs import make_eval_vector_env
from offrl.envs.spec import DatasetSpec
from offrl.loop import LoopState, stack_states

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PolicyFn = Callable[[jax.Array, jax.Array], jax.Array]


def make_policy(agent: Any, obs_mean: jax.Array, obs_std: jax.Array, deterministic: bool) -> PolicyFn:
    """The agent's action sampler on raw environment observations (normalized as in training)."""

    def policy(observations: jax.Array, key: jax.Array) -> jax.Array:
        return agent.sample_actions((observations - obs_mean) / obs_std, key, deterministic=deterministic)

    return jax.jit(policy)


@jax.jit
def split_key(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`jax.random.split` for one key ([2]) or a stack of keys ([n, 2]), each split on its own.

    Jitted: evaluation splits once per environment step, and the un-jitted vmap cost 4-6 ms
    there, more than the simulator's step (issue 20)."""
    if key.ndim == 1:
        new_key, step_key = jax.random.split(key)
        return new_key, step_key
    pairs = jax.vmap(jax.random.split)(key)
    return pairs[:, 0], pairs[:, 1]


def run_episodes(
    envs: gym.vector.VectorEnv,
    policy: PolicyFn,
    key: jax.Array,
    seed: int | list[int],
    record_transitions: bool = True,
    frames: list[np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Exactly one episode per sub-environment.

    Sub-environments that finish early keep stepping (the vector env resets them), but
    nothing after their first episode is counted. Success is whether the env ever
    reported `success`/`is_success` during the episode; `success_steps` is the step count
    at which it first did (-1 if never): the steps to the goal.

    Besides the per-episode results, every counted step is returned as a transition
    (observations, actions, rewards, next_observations, terminals, episode_ends, env_ids),
    in stepping order, so online agents train on exactly the episodes this collects;
    `np.argsort(env_ids, kind="stable")` puts them in episode order. Scoring alone passes
    `record_transitions=False`: then only the actions and env ids come back, and the
    sub-envs of a plain vector env are stepped directly (faster, the same results).
    `frames`, when given, receives the first sub-env's rendered frame before each step of its
    episode (envs made with `render=True`): the video of an evaluation episode.
    """
    if not record_transitions and frames is None:
        direct = _flat_sync_envs(envs)
        if direct is not None:
            return _score_sub_envs(*direct, policy, key, seed)
    num_envs = envs.num_envs
    discrete = isinstance(envs.single_action_space, gym.spaces.Discrete)
    observations, _ = envs.reset(seed=seed)
    returns = np.zeros(num_envs)
    lengths = np.zeros(num_envs, dtype=np.int64)
    successes = np.zeros(num_envs, dtype=bool)
    success_steps = np.full(num_envs, -1, dtype=np.int64)
    active = np.ones(num_envs, dtype=bool)
    steps: dict[str, list[np.ndarray]] = {
        name: [] for name in ("observations", "actions", "rewards", "next_observations", "terminals", "episode_ends", "env_ids")
    }
    while active.any():
        if frames is not None and active[0]:
            frames.append(envs.render()[0])
        key, step_key = split_key(key)
        actions = np.asarray(policy(np.asarray(observations, np.float32), step_key))
        env_actions = actions[:, 0].astype(np.int64) if discrete else actions
        next_observations, rewards, terminations, truncations, infos = envs.step(env_actions)
        terminations, truncations = np.asarray(terminations), np.asarray(truncations)
        returns += np.where(active, rewards, 0.0)
        lengths += active
        for name in ("success", "is_success"):
            if name in infos:
                first = active & ~successes & np.asarray(infos[name], dtype=bool)
                success_steps[first] = lengths[first]
                successes |= first
        if record_transitions:
            steps["observations"].append(np.asarray(observations)[active])
            steps["actions"].append(actions[active])
            # With NEXT_STEP autoreset the observation returned on a final step is still the
            # episode's last state, not the next episode's first.
            steps["next_observations"].append(np.asarray(next_observations)[active])
            steps["rewards"].append(np.asarray(rewards, np.float32)[active])
            steps["terminals"].append(terminations[active].astype(np.float32))
            steps["episode_ends"].append((terminations | truncations)[active].astype(np.float32))
            steps["env_ids"].append(np.flatnonzero(active))
        observations = next_observations
        active &= ~(terminations | truncations)
    return {
        "returns": returns,
        "lengths": lengths,
        "successes": successes,
        "success_steps": success_steps,
        **{name: np.concatenate(values) for name, values in steps.items() if values},
    }


def _flat_sync_envs(envs: gym.vector.VectorEnv) -> tuple[list[gym.Env], gym.Space] | None:
    """The sub-envs and their observation space when `envs` is a `SyncVectorEnv`, bare or
    under the one flattening wrapper of `offrl.envs.make_eval_vector_env`; else None (other
    wrappers must not be bypassed)."""
    inner = envs.env if isinstance(envs, TransformObservation) else envs
    if type(inner) is not SyncVectorEnv:
        return None
    return list(inner.envs), inner.single_observation_space


def _score_sub_envs(
    sub_envs: list[gym.Env], space: gym.Space, policy: PolicyFn, key: jax.Array, seed: int | list[int]
) -> dict[str, np.ndarray]:
    """`run_episodes` without transitions (only the actions and their env ids), stepping the
    sub-envs directly.

    The vector env's per-step info merging and autoreset bookkeeping cost as much as a fast
    simulator's step, and a finished sub-env need not be stepped again. The step keys are
    those of `run_episodes` (one `split_key` per step), computed `KEY_CHUNK` steps per call;
    the actions, and so the results, are the same.
    """
    num_envs = len(sub_envs)
    seeds = seed if isinstance(seed, list) else [None if seed is None else seed + index for index in range(num_envs)]
    flat = isinstance(space, gym.spaces.Box) and len(space.shape) == 1
    discrete = isinstance(sub_envs[0].action_space, gym.spaces.Discrete)
    raw = [env.reset(seed=env_seed)[0] for env, env_seed in zip(sub_envs, seeds)]
    returns = np.zeros(num_envs)
    lengths = np.zeros(num_envs, dtype=np.int64)
    successes = np.zeros(num_envs, dtype=bool)
    success_steps = np.full(num_envs, -1, dtype=np.int64)
    active = np.ones(num_envs, dtype=bool)
    counted_actions, env_ids = [], []
    step = 0
    while active.any():
        if step % KEY_CHUNK == 0:
            key, step_keys = _step_keys(key, KEY_CHUNK)
            step_keys = np.asarray(step_keys)
        observations = raw if flat else [gym.spaces.flatten(space, observation) for observation in raw]
        actions = np.asarray(policy(np.asarray(observations, np.float32), step_keys[step % KEY_CHUNK]))
        step += 1
        stepping = np.flatnonzero(active)
        counted_actions.append(actions[stepping])
        env_ids.append(stepping)
        for index in stepping:
            action = int(actions[index, 0]) if discrete else actions[index]
            observation, reward, terminated, truncated, info = sub_envs[index].step(action)
            raw[index] = observation
            returns[index] += reward
            lengths[index] += 1
            if not successes[index] and (info.get("success", False) or info.get("is_success", False)):
                successes[index] = True
                success_steps[index] = lengths[index]
            if terminated or truncated:
                active[index] = False
    return {
        "returns": returns,
        "lengths": lengths,
        "successes": successes,
        "success_steps": success_steps,
        "actions": np.concatenate(counted_actions),
        "env_ids": np.concatenate(env_ids),
    }


KEY_CHUNK = 128


@functools.partial(jax.jit, static_argnums=1)
def _step_keys(key: jax.Array, num_steps: int) -> tuple[jax.Array, jax.Array]:
    """`num_steps` successive `split_key` steps in one call: (the key after them, the step keys)."""
    return jax.lax.scan(lambda key, _: split_key(key), key, None, length=num_steps)


def summarize_episodes(
    episodes: dict[str, np.ndarray],
    normalize: Callable[[np.ndarray], np.ndarray | None] | None = None,
    d4rl_normalize: Callable[[np.ndarray], np.ndarray | None] | None = None,
) -> dict[str, float]:
    """Mean return, success and length; `normalize` gives `normalized_score` (offrl's reference
    returns) and `d4rl_normalize` `d4rl_normalized_score` (D4RL's, where the task has a twin)."""
    returns = episodes["returns"]
    metrics = {
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "length_mean": float(episodes["lengths"].mean()),
        "episodes": int(len(returns)),
        "success_rate": float(episodes["successes"].mean()),
    }
    reached = episodes["success_steps"][episodes["successes"]] if "success_steps" in episodes else np.array([])
    if len(reached):
        metrics["steps_to_goal"] = float(reached.mean())  # over the episodes that reached it
    normalized = normalize(returns) if normalize is not None else None
    if normalized is not None:
        normalized = np.asarray(normalized)
        metrics["normalized_score"] = float(normalized.mean())
        metrics["normalized_score_std"] = float(normalized.std())
    d4rl = d4rl_normalize(returns) if d4rl_normalize is not None else None
    if d4rl is not None:
        metrics["d4rl_normalized_score"] = float(np.mean(d4rl))
    return metrics


@functools.partial(jax.jit, static_argnames=("treedef", "deterministic"))
def _seeds_actions(
    treedef: Any, leaves: list[jax.Array], observations: jax.Array, keys: jax.Array, deterministic: bool
) -> jax.Array:
    """Seed k's agent (leading seed axis) acts on the k-th block of observations with keys[k].

    (agent, obs_mean, obs_std) come flattened: a list of arrays is dispatched several times
    faster than the agent's nested pytree, which matters at one call per environment step."""
    agent, obs_mean, obs_std = jax.tree_util.tree_unflatten(treedef, leaves)

    def act(agent: Any, mean: jax.Array, std: jax.Array, block: jax.Array, key: jax.Array) -> jax.Array:
        return agent.sample_actions((block - mean) / std, key, deterministic=deterministic)

    blocks = observations.reshape(keys.shape[0], -1, observations.shape[-1])
    actions = jax.vmap(act)(agent, obs_mean, obs_std, blocks, keys)
    return actions.reshape(-1, *actions.shape[2:])


def make_seeds_policy(state: LoopState, deterministic: bool) -> Callable:
    """Every seed's policy on its own equal block of the observations, in one call.

    Takes one key per seed ([seeds, 2]), so seed k's actions are those of a single-seed run.
    The state is an argument of one module-level jitted function rather than a constant of a
    fresh closure, so a run compiles its evaluation policy once, not at every evaluation."""
    leaves, treedef = jax.tree_util.tree_flatten((state.agent, state.obs_mean, state.obs_std))
    return lambda observations, keys: _seeds_actions(treedef, leaves, observations, keys, deterministic)


def eval_env_seeds(seeds: list[int], episodes_per_seed: int) -> list[int]:
    """The evaluation envs' reset seeds, seed after seed: every evaluation of a run with seed
    k starts from the same states, so scores at different steps (or of other policies) pair up."""
    return [seed + 10_000 + j for seed in seeds for j in range(episodes_per_seed)]


def evaluate_seeds(
    envs: Any,
    state: LoopState,
    seeds: list[int],
    episodes_per_seed: int,
    deterministic: bool,
    step: int,
    record_transitions: bool = True,
) -> list[dict[str, np.ndarray]]:
    """One batch of episodes for all seeds; seed k gets the environment seeds and policy keys
    a single-seed run with seed k would use, so the two evaluate identically. Without
    `record_transitions` only the per-episode results and the actions come back (faster)."""
    policy = make_seeds_policy(state, deterministic)
    keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(seed + 1), step) for seed in seeds])
    episodes = run_episodes(envs, policy, keys, eval_env_seeds(seeds, episodes_per_seed), record_transitions)
    return split_episodes(episodes, len(seeds), episodes_per_seed)


def evaluate_state(
    state: LoopState, spec: DatasetSpec | str, episodes: int, seed: int, deterministic: bool, step: int
) -> dict[str, np.ndarray]:
    """`episodes` episodes of one (unstacked) state in the env of `spec` (a `DatasetSpec` or
    a gymnasium id): the episodes a run with `seed` evaluates at `step`, as `run_episodes`
    returns them."""
    envs = make_eval_vector_env(spec, episodes, seed)
    try:
        return evaluate_seeds(envs, stack_states([state]), [seed], episodes, deterministic, step)[0]
    finally:
        envs.close()


def split_episodes(episodes: dict[str, np.ndarray], num_seeds: int, per_seed: int) -> list[dict[str, np.ndarray]]:
    per_env = ("returns", "lengths", "successes", "success_steps")
    out = []
    for index in range(num_seeds):
        envs = slice(index * per_seed, (index + 1) * per_seed)
        if "env_ids" in episodes:
            rows = (episodes["env_ids"] >= index * per_seed) & (episodes["env_ids"] < (index + 1) * per_seed)
        out.append({name: values[envs] if name in per_env else values[rows] for name, values in episodes.items()})
    return out


def action_scatter(dataset_actions: np.ndarray, policy_actions: np.ndarray, title: str = "") -> Figure:
    """Dataset actions next to policy actions (2-D action spaces): where mean-matching shows."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4))
    axes = figure.subplots(1, 2, sharex=True, sharey=True)
    for axis, actions, label in ((axes[0], dataset_actions, "dataset"), (axes[1], policy_actions, "policy")):
        axis.scatter(actions[:, 0], actions[:, 1], s=2, alpha=0.3)
        axis.set_title(f"{label} actions")
        axis.set_xlim(-1.1, 1.1)
        axis.set_ylim(-1.1, 1.1)
        axis.set_aspect("equal")
    if title:
        figure.suptitle(title)
    return figure
