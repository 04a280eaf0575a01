"""One name -> (Transitions, DatasetSpec): which loader reads it and how to evaluate on it.

Resolution, in order:

1. a path ending in `.hdf5` / `.h5`: a D4RL file (`offrl.data.d4rl`). A stem that is exactly
   a D4RL id (`hopper-medium-v2.hdf5` or D4RL's own `hopper_medium-v2.hdf5`) picks the
   reward convention (unless `d4rl_reward` says otherwise) and the D4RL reference scores.
   D4RL's locomotion envs (gym MuJoCo v2/v3, mujoco-py) are not
   installable next to gymnasium; their modern equivalents `HalfCheetah-v5`, `Hopper-v5`,
   `Walker2d-v5` have the same observation and action layouts and serve as evaluation envs,
   so normalized scores are close to, not identical with, published D4RL numbers.
   Other files (antmaze, maze2d, your own) get no env unless `env_id` (`--env`) is given;
   when an env is known the file's shapes are checked against its spaces on loading.
2. an `offrl/maze2d/...` or `offrl/pointmaze/...` id: a built-in generated maze dataset
   (`offrl.data.pointmaze`, `docs/datasets.md`), built on first use, evaluated in
   `offrl.envs.pointmaze.make_maze2d_env` (fixed target, family 'maze2d', as D4RL's maze2d
   files) or `make_pointmaze_env` (goal-conditioned, family 'pointmaze').
3. any other id in the local Minari store: evaluated in the env the dataset recorded for
   evaluation (`recover_environment(eval_env=True)`, which builds from the stored EnvSpec and
   needs no network).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from offrl.data.errors import BUILTIN_PREFIXES, DatasetError, DatasetNotFoundError
from offrl.data.d4rl import (
    apply_reward_convention,
    check_against_spaces,
    d4rl_id,
    describe_convention,
    infer_family,
    qlearning_transitions,
    read_d4rl_arrays,
    reward_family,
)
from offrl.data.minari_loader import HOW_TO_GET, local_minari_ids, minari_ref_scores, minari_transitions, open_minari_dataset
from offrl.envs import make_env
from offrl.envs.scores import d4rl_ref_scores
from offrl.envs.spec import DatasetSpec
from offrl.transitions import Transitions

HDF5_SUFFIXES = (".hdf5", ".h5")
D4RL_LOCOMOTION_ENVS = {"halfcheetah": "HalfCheetah-v5", "hopper": "Hopper-v5", "walker2d": "Walker2d-v5"}


def load_dataset(name: str, *, env_id: str | None = None, d4rl_reward: str = "auto") -> tuple[Transitions, DatasetSpec]:
    """Load a dataset by path or id and describe its evaluation env (see the module docstring).

    `env_id` replaces the evaluation env with `gym.make(env_id)`, for datasets whose env is
    unknown or to evaluate in a variant; reference scores are kept. `d4rl_reward` (D4RL
    files only) is one of `offrl.data.d4rl.REWARD_CONVENTIONS`.
    """
    if Path(name).suffix.lower() in HDF5_SUFFIXES:
        return _load_hdf5(name, env_id, d4rl_reward)
    if name.startswith(BUILTIN_PREFIXES):
        transitions, spec = _load_builtin(name)
    else:
        try:
            transitions, spec = _load_minari(name)
        except DatasetNotFoundError:
            raise DatasetNotFoundError(_unknown_name_message(name)) from None
    if env_id is not None:
        spec = dataclasses.replace(spec, env_factory=functools.partial(make_env, env_id))
    return transitions, spec


def dataset_family(name: str, d4rl_reward: str = "auto") -> str:
    """The `DatasetSpec.family` `load_dataset(name, d4rl_reward=...)` would give, without
    loading anything.

    Config presets are chosen by family before the data is read; for a D4RL file the family
    is that of its reward convention, which the presets' hyperparameters assume.
    """
    if Path(name).suffix.lower() in HDF5_SUFFIXES:
        return _hdf5_family(name, d4rl_reward)
    if name.startswith(BUILTIN_PREFIXES):
        return "maze2d" if name.startswith("offrl/maze2d/") else "pointmaze"
    return "minari"


def dataset_names() -> list[str]:
    """Built-in dataset ids followed by the ids in the local Minari store, for listings and errors."""
    builtin = builtin_dataset_names()
    return builtin + [name for name in local_minari_ids() if name not in builtin]


def builtin_dataset_names() -> list[str]:
    """The generated maze ids with default settings (built on first use)."""
    from offrl.data.pointmaze import builtin_ids

    return builtin_ids()


def _hdf5_family(path: str, d4rl_reward: str) -> str:
    return reward_family(path, d4rl_reward) or infer_family(path) or "hdf5"


def _load_hdf5(path: str, env_id: str | None, d4rl_reward: str) -> tuple[Transitions, DatasetSpec]:
    official = d4rl_id(path)
    convention = reward_family(path, d4rl_reward)
    if env_id is None and official is not None and infer_family(official) == "locomotion":
        env_id = D4RL_LOCOMOTION_ENVS[official.split("-")[0]]
    arrays = read_d4rl_arrays(Path(path))
    if env_id is not None:
        env = make_env(env_id)
        try:
            arrays = check_against_spaces(arrays, env.observation_space, env.action_space, env_id, path)
        finally:
            env.close()
    elif not np.issubdtype(arrays["actions"].dtype, np.floating):
        raise DatasetError(
            f"{path}: actions are {arrays['actions'].dtype}, not floats; give the env with --env ENV_ID so they "
            "are read as its action space says (indices for Discrete, values for Box)"
        )
    transitions = apply_reward_convention(qlearning_transitions(arrays, source=path), convention)
    print(f"offrl: {path}: {describe_convention(convention)} (d4rl_reward={d4rl_reward}; --d4rl-reward "
          "auto|none|locomotion|antmaze)")
    ref = d4rl_ref_scores(official) if official is not None else None
    spec = DatasetSpec(
        name=path,
        family=_hdf5_family(path, d4rl_reward),
        env_factory=functools.partial(make_env, env_id) if env_id is not None else None,
        ref_min_score=None if ref is None else ref[0],
        ref_max_score=None if ref is None else ref[1],
        goal_conditioned=False,
    )
    return transitions, spec


def _load_builtin(name: str) -> tuple[Transitions, DatasetSpec]:
    from offrl.data.pointmaze import ensure_maze_dataset, parse_maze_id, ref_scores, retired_id_message
    from offrl.envs.pointmaze import make_maze2d_env, make_pointmaze_env

    settings = parse_maze_id(name)
    if settings is None:
        raise DatasetNotFoundError(retired_id_message(name) or _unknown_name_message(name))
    dataset = ensure_maze_dataset(name)
    ref_min, ref_max = ref_scores(settings)
    if settings.family == "maze2d":
        env_factory = functools.partial(make_maze2d_env, settings.maze, dense=settings.dense)
    else:
        env_factory = functools.partial(make_pointmaze_env, settings.maze)
    spec = DatasetSpec(
        name=name,
        family=settings.family,
        env_factory=env_factory,
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        goal_conditioned=settings.family == "pointmaze",
    )
    return minari_transitions(dataset), spec


def _load_minari(name: str) -> tuple[Transitions, DatasetSpec]:
    dataset = open_minari_dataset(name)
    ref_min, ref_max = minari_ref_scores(dataset)
    has_env = dataset.env_spec is not None or dataset.storage.metadata.get("eval_env_spec") is not None
    spec = DatasetSpec(
        name=name,
        family="minari",
        env_factory=functools.partial(_recover_eval_env, name) if has_env else None,
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        goal_conditioned=_is_goal_conditioned(dataset.observation_space),
    )
    return minari_transitions(dataset), spec


def _recover_eval_env(dataset_id: str, **kwargs: Any) -> gym.Env:
    """The dataset's recorded evaluation env; reopens the dataset so the factory stays picklable."""
    return open_minari_dataset(dataset_id).recover_environment(eval_env=True, **kwargs)


def _is_goal_conditioned(space: gym.Space) -> bool:
    return isinstance(space, gym.spaces.Dict) and "desired_goal" in space.spaces


def _unknown_name_message(name: str) -> str:
    return (
        f"unknown dataset {name!r}. Built-in ids: {builtin_dataset_names()}; local Minari ids: "
        f"{local_minari_ids() or 'none'}; or pass the path of a D4RL .hdf5 file. " + HOW_TO_GET.format(id=name)
    )
