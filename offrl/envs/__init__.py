"""Evaluation environments whose observations match the dataset rows agents are trained on.

Datasets and envs meet in `flatten_observations`: the Minari loader flattens recorded
observations with it and `make_eval_vector_env` flattens env observations with it, so a
state looks the same to an agent in training and in evaluation by construction.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv
from gymnasium.wrappers.vector import TransformObservation

from offrl.envs.scores import d4rl_maze2d_ref_scores
from offrl.envs.scores import normalized_score as _normalized_score
from offrl.envs.spec import DatasetSpec


def flatten_observations(space: spaces.Space, observations: Any) -> np.ndarray:
    """A batch of observations of `space` as one float32 array of shape (batch, flat_dim).

    `observations` carries a leading batch axis on every leaf: a dataset's recorded
    observations (T + 1 rows) or a vector env's observations (num_envs rows); for a Dict
    space it is a dict of such arrays, for a Tuple space a tuple. Dict entries are
    concatenated in the space's key order, which gymnasium's `spaces.Dict` sorts by default
    (for the goal-conditioned mazes: achieved_goal, desired_goal, observation), nested
    spaces recursively, each leaf flattened in C order; this is the order of
    `gymnasium.spaces.flatten` applied row by row, without the per-row Python loop.
    """
    if isinstance(space, spaces.Dict):
        parts = [flatten_observations(subspace, observations[key]) for key, subspace in space.spaces.items()]
        return np.concatenate(parts, axis=-1)
    if isinstance(space, spaces.Tuple):
        parts = [flatten_observations(subspace, part) for subspace, part in zip(space.spaces, observations)]
        return np.concatenate(parts, axis=-1)
    if isinstance(space, (spaces.Box, spaces.MultiBinary)):
        array = np.asarray(observations)
        if array.shape[1:] != space.shape:
            raise ValueError(f"observations of shape {array.shape} are not a batch of {space} (shape {space.shape})")
        return array.reshape(len(array), -1).astype(np.float32, copy=False)
    if isinstance(space, spaces.Discrete):
        indices = np.asarray(observations).reshape(-1) - space.start
        return np.eye(space.n, dtype=np.float32)[indices]  # one-hot, as gymnasium.spaces.flatten
    raise TypeError(f"cannot flatten observations of space {space}; supported: Box, MultiBinary, Discrete, Dict, Tuple")


def flatten_observation(space: spaces.Space, observation: Any) -> np.ndarray:
    """One observation of `space` (no batch axis, as `env.reset`/`env.step` return it) as a
    flat float32 vector of shape (flat_dim,), exactly as `flatten_observations` flattens a row."""

    def with_batch_axis(subspace: spaces.Space, value: Any) -> Any:
        if isinstance(subspace, spaces.Dict):
            return {key: with_batch_axis(inner, value[key]) for key, inner in subspace.spaces.items()}
        if isinstance(subspace, spaces.Tuple):
            return tuple(with_batch_axis(inner, part) for inner, part in zip(subspace.spaces, value))
        return np.asarray(value)[None]

    return flatten_observations(space, with_batch_axis(space, observation))[0]


def flat_dim(space: spaces.Space) -> int:
    """Length of a flattened observation of `space`."""
    return int(spaces.flatdim(space))


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    """`gym.make` that also finds gymnasium-robotics ids (mazes), registering them on first use.

    gymnasium-robotics is imported only when needed because its import takes about half a second.
    """
    if env_id not in gym.registry:
        import offrl.envs.robotics  # noqa: F401  (registers on import)
    return gym.make(env_id, **kwargs)


def make_eval_vector_env(spec: DatasetSpec | str, num_envs: int, seed: int, render: bool = False) -> VectorEnv:
    """`num_envs` copies of the dataset's evaluation env, stepping together, with flat float32 observations.

    `spec` is a `DatasetSpec` (its `env_factory` builds one env) or a gymnasium id.
    SyncVectorEnv rather than AsyncVectorEnv: a MuJoCo step takes microseconds, so the
    inter-process round trip of AsyncVectorEnv would cost more than the physics it parallelizes
    on a machine with few cores. Autoreset is gymnasium's NEXT_STEP: a sub-env that finishes
    reports `terminated | truncated` once, and the following `step()` resets it (ignoring its
    action, reward 0), so an evaluation loop counts each sub-env's first episode and masks it
    afterwards (`offrl.evaluation.run_episodes` does this). SAME_STEP is not usable because
    gymnasium's vector observation wrappers refuse it. The envs are reset once with `seed` here, so later
    `reset()` calls without a seed give fresh but reproducible start states. With `render`
    the envs render RGB frames (`envs.render()`, for videos).
    """
    if isinstance(spec, str):
        factory: Callable[..., gym.Env] = functools.partial(make_env, spec)
    elif spec.env_factory is None:
        raise ValueError(
            f"dataset {spec.name!r} has no known evaluation env; give a gymnasium id with --env ENV_ID "
            "(e.g. --env Hopper-v5; in Python load_dataset(name, env_id='Hopper-v5'))"
        )
    else:
        factory = spec.env_factory
    if render:
        factory = functools.partial(factory, render_mode="rgb_array")
    envs = SyncVectorEnv([factory for _ in range(num_envs)], autoreset_mode=AutoresetMode.NEXT_STEP)
    single_space = envs.single_observation_space
    flat_space = spaces.Box(-np.inf, np.inf, (flat_dim(single_space),), np.float32)
    envs = TransformObservation(
        envs,
        functools.partial(flatten_observations, single_space),
        observation_space=spaces.Box(-np.inf, np.inf, (num_envs, flat_space.shape[0]), np.float32),
        single_observation_space=flat_space,
    )
    envs.reset(seed=seed)
    envs.action_space.seed(seed)
    return envs


def normalized_score(spec: DatasetSpec, returns: np.ndarray | float) -> np.ndarray | None:
    """D4RL-style 100 * (R - min) / (max - min) from the spec's reference scores, None without them."""
    if spec.ref_min_score is None or spec.ref_max_score is None:
        return None
    return _normalized_score(returns, spec.ref_min_score, spec.ref_max_score)


def d4rl_normalized_score(spec: DatasetSpec, returns: np.ndarray | float) -> np.ndarray | None:
    """The return on D4RL's scale where offrl's task has a D4RL twin (the sparse maze2d datasets,
    `offrl.envs.scores.d4rl_maze2d_ref_scores`), None elsewhere."""
    reference = d4rl_maze2d_ref_scores(spec.name)
    return None if reference is None else _normalized_score(returns, *reference)


__all__ = [
    "d4rl_normalized_score",
    "flat_dim",
    "flatten_observation",
    "flatten_observations",
    "make_env",
    "make_eval_vector_env",
    "normalized_score",
]
