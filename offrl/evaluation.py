"""Evaluation: a batch of episodes in a gymnasium vector env, one batched policy call per step,
for one policy or for every seed of a stacked loop state at once (`evaluate_seeds`); the
policy is `offrl.policy.policy_actions`, compiled once per run."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable

import gymnasium as gym
from gymnasium.vector import SyncVectorEnv
from gymnasium.wrappers.vector import TransformObservation
import jax
import jax.numpy as jnp
import numpy as np

from offrl.envs import flatten_observation, make_eval_vector_env
from offrl.envs.spec import DatasetSpec
from offrl.loop import LoopState, stack_states
from offrl.policy import env_actions, policy_actions

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PolicyFn = Callable[[np.ndarray, jax.Array], jax.Array]
KEY_CHUNK = 128


@jax.jit
def split_key(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`jax.random.split` for one key ([2]) or a stack of keys ([n, 2]), each split on its own."""
    if key.ndim == 1:
        new_key, step_key = jax.random.split(key)
        return new_key, step_key
    pairs = jax.vmap(jax.random.split)(key)
    return pairs[:, 0], pairs[:, 1]


@functools.partial(jax.jit, static_argnums=1)
def _step_keys(key: jax.Array, num_steps: int) -> tuple[jax.Array, jax.Array]:
    """`num_steps` successive `split_key` steps in one call: (the key after them, the step keys)."""
    return jax.lax.scan(lambda key, _: split_key(key), key, None, length=num_steps)


def _sub_envs(envs: gym.vector.VectorEnv) -> tuple[list[gym.Env], gym.Space]:
    """The sub-envs and their own observation space of a `SyncVectorEnv`, bare or under the one
    flattening wrapper of `offrl.envs.make_eval_vector_env` (which this loop applies itself)."""
    inner = envs.env if isinstance(envs, TransformObservation) else envs
    if type(inner) is not SyncVectorEnv:
        raise TypeError(f"run_episodes steps the sub-envs of a SyncVectorEnv (offrl.envs.make_eval_vector_env), got {envs}")
    return list(inner.envs), inner.single_observation_space


def run_episodes(
    envs: gym.vector.VectorEnv,
    policy: PolicyFn,
    key: jax.Array,
    seed: int | list[int],
    record_transitions: bool = True,
    frames: list[np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Exactly one episode per sub-environment, with one batched policy call per step.

    The sub-envs are stepped directly, a finished one no more: the vector env's per-step
    info merging and autoreset bookkeeping cost as much as a fast simulator's step. Env i is
    reset with seed[i] (an int seed: seed + i). Success is whether the env ever reported
    `success`/`is_success` during the episode; `success_steps` is the step count at which it
    first did (-1 if never): the steps to the goal. Each step's key is the next of a chain of
    `split_key`s from `key`, made `KEY_CHUNK` steps per call.

    Besides the per-episode results, every step comes back as a transition (observations,
    actions, rewards, next_observations, terminals, episode_ends, env_ids), in stepping order,
    so online agents train on exactly the episodes this collects; `np.argsort(env_ids,
    kind="stable")` puts them in episode order. With `record_transitions=False` only the
    actions and env ids come back. `frames`, when given, receives the first sub-env's
    rendered frame before each step of its episode (envs made with `render=True`).
    """
    sub_envs, space = _sub_envs(envs)
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
    names = ("observations", "actions", "rewards", "next_observations", "terminals", "episode_ends", "env_ids")
    steps: dict[str, list] = {name: [] for name in (names if record_transitions else ("actions", "env_ids"))}
    step = 0
    while active.any():
        if frames is not None and active[0]:
            frames.append(sub_envs[0].render())
        if step % KEY_CHUNK == 0:
            key, step_keys = _step_keys(key, KEY_CHUNK)
            step_keys = np.asarray(step_keys)
        observations = np.asarray(raw if flat else [flatten_observation(space, observation) for observation in raw], np.float32)
        actions = np.asarray(policy(observations, step_keys[step % KEY_CHUNK]))
        to_env = env_actions(actions, discrete)
        step += 1
        stepping = np.flatnonzero(active)
        steps["actions"].append(actions[stepping])
        steps["env_ids"].append(stepping)
        for index in stepping:
            observation, reward, terminated, truncated, info = sub_envs[index].step(to_env[index])
            raw[index] = observation
            returns[index] += reward
            lengths[index] += 1
            if not successes[index] and (info.get("success", False) or info.get("is_success", False)):
                successes[index] = True
                success_steps[index] = lengths[index]
            if record_transitions:
                steps["observations"].append(observations[index])
                steps["next_observations"].append(observation if flat else flatten_observation(space, observation))
                steps["rewards"].append(reward)
                steps["terminals"].append(terminated)
                steps["episode_ends"].append(terminated or truncated)
            if terminated or truncated:
                active[index] = False
    episodes = {"returns": returns, "lengths": lengths, "successes": successes, "success_steps": success_steps,
                "actions": np.concatenate(steps.pop("actions")), "env_ids": np.concatenate(steps.pop("env_ids"))}
    return {**episodes, **{name: np.asarray(values, np.float32) for name, values in steps.items()}}


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


def _seeds_actions(
    treedef: Any, unread: tuple, deterministic: bool, discrete: bool, leaves: list[jax.Array], observations: jax.Array,
    keys: jax.Array,
) -> jax.Array:
    """Seed k's agent (leading seed axis) acts on the k-th block of observations with keys[k].

    (agent, obs_mean, obs_std) come flattened, without the leaves the policy does not read
    (`unread`: their positions and shapes, rebuilt here as zeros that compile away): every
    argument costs dispatch time at each environment step, and an agent's optimizer states
    and critics are most of its leaves."""
    leaves = list(leaves)
    for index, shape, dtype in unread:
        leaves.insert(index, jnp.zeros(shape, dtype))
    agent, obs_mean, obs_std = jax.tree_util.tree_unflatten(treedef, leaves)
    act = functools.partial(policy_actions, deterministic=deterministic, discrete=discrete)
    blocks = observations.reshape(keys.shape[0], -1, observations.shape[-1])
    actions = jax.vmap(act)(agent, obs_mean, obs_std, blocks, keys)
    return actions.reshape(-1, *actions.shape[2:])


@functools.lru_cache(maxsize=64)
def _unread_leaves(treedef: Any, shapes: tuple, deterministic: bool, discrete: bool) -> tuple:
    """(position, shape, dtype) of the leaves (of these `shapes`: (shape, dtype) each) that
    `_seeds_actions` does not read, from its computation traced once per agent structure with
    jit inlined (a jitted method's unused inputs count as unread)."""
    leaves = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in shapes]
    seeds, dim = shapes[-1][0]
    observations = jax.ShapeDtypeStruct((seeds, dim), jnp.float32)
    keys = jax.ShapeDtypeStruct((seeds, 2), jnp.uint32)
    with jax.disable_jit():
        jaxpr = jax.make_jaxpr(functools.partial(_seeds_actions, treedef, (), deterministic, discrete))(leaves, observations, keys).jaxpr
    read = {id(var) for equation in jaxpr.eqns for var in equation.invars} | {id(var) for var in jaxpr.outvars}
    return tuple((index, *shapes[index]) for index, var in enumerate(jaxpr.invars[: len(leaves)]) if id(var) not in read)


@functools.lru_cache(maxsize=64)
def _compiled_policy(treedef: Any, unread: tuple, deterministic: bool, discrete: bool) -> Callable:
    """`_seeds_actions` with its static parts bound and jitted, one per agent structure (so a
    run compiles it once): each step's call then hashes no static arguments."""
    return jax.jit(functools.partial(_seeds_actions, treedef, unread, deterministic, discrete))


def make_seeds_policy(state: LoopState, deterministic: bool, discrete: bool = False) -> Callable:
    """Every seed's policy on its own equal block of the observations, in one call.

    Takes one key per seed ([seeds, 2]), so seed k's actions are those of a single-seed run.
    The state is an argument of a cached jitted function rather than a constant of a fresh
    closure, so a run compiles its evaluation policy once, not at every evaluation."""
    leaves, treedef = jax.tree_util.tree_flatten((state.agent, state.obs_mean, state.obs_std))
    unread = _unread_leaves(treedef, tuple((leaf.shape, leaf.dtype) for leaf in leaves), deterministic, discrete)
    skipped = {index for index, _, _ in unread}
    read = [leaf for index, leaf in enumerate(leaves) if index not in skipped]
    policy = _compiled_policy(treedef, unread, deterministic, discrete)
    return lambda observations, keys: policy(read, observations, keys)


def make_policy(agent: Any, obs_mean: jax.Array, obs_std: jax.Array, deterministic: bool, discrete: bool = False) -> PolicyFn:
    """One agent's policy on raw flat observations, with one key [2] per call (videos, tests)."""
    one = jax.tree_util.tree_map(lambda leaf: leaf[None], LoopState.initial(agent, jax.random.PRNGKey(0), obs_mean.shape[-1]))
    seeds_policy = make_seeds_policy(one.replace(obs_mean=obs_mean[None], obs_std=obs_std[None]), deterministic, discrete)
    return lambda observations, key: seeds_policy(observations, key[None])


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
    policy = make_seeds_policy(state, deterministic, isinstance(envs.single_action_space, gym.spaces.Discrete))
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
