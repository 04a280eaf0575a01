"""D4RL HDF5 files read with h5py alone, reproducing `d4rl.qlearning_dataset` exactly.

The `d4rl` package pins old gym and mujoco-py, so it is not a dependency; its files are plain
HDF5 with flat columns `observations`, `actions`, `rewards`, `terminals`, `timeouts`
(plus `infos/...` and `metadata/...`, ignored here). The conversion follows
`d4rl.qlearning_dataset(env, terminate_on_end=False)` row for row:

* row i becomes the transition (obs[i], actions[i], rewards[i], obs[i + 1], terminals[i]);
* a row whose `timeouts` flag is set is dropped: its successor row is the first state of the
  next episode, so it has no valid next observation (and its reward is lost, as in D4RL);
* the file's last row is dropped: it has no successor row;
* `terminals` are kept as they are, including on rows whose successor starts a new episode
  (a terminal transition never bootstraps, so its next observation is never used).

`episode_ends[i]` is set on a kept row whose successor row in the file is not the next
kept row of the same episode: the row is terminal, its successor was dropped (a timeout row,
or the file's last row), or it is the final kept row. This is where IQL's `dones_float`
(`ikostrikov/implicit_q_learning`, found by comparing `observations[i + 1]` with
`next_observations[i]`) puts its trajectory boundaries, computed from the flags instead.

Reward conventions that IQL and CORL apply after loading live in `apply_reward_convention`,
separate from loading so they can be inspected or skipped. Which one applies is the
`d4rl_reward` setting (`REWARD_CONVENTIONS`): `auto` applies a convention only to a file
named exactly as a D4RL dataset (`hopper-medium-v2.hdf5` or D4RL's own
`hopper_medium-v2.hdf5`), never to a name that merely contains `hopper`.

`check_against_spaces` compares a file's columns with the evaluation env's spaces at load
time, so a file recorded in another env fails with its shapes named instead of at the first
evaluation, and integer actions are read as the env's action space says (indices for
Discrete, bounded values for Box).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np

from offrl.data.errors import DatasetError
from offrl.transitions import Transitions, make_transitions

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
FAMILIES = ("locomotion", "antmaze", "maze2d")
# The `d4rl_reward` setting: `auto` (by the exact D4RL id of the file name), `none` (rewards
# as stored) or a family's convention whatever the file is called.
REWARD_CONVENTIONS = ("auto", "none", "locomotion", "antmaze")
LOCOMOTION_ENVS = ("halfcheetah", "hopper", "walker2d")
_LOCOMOTION_DATASETS = ("random", "medium", "expert", "medium-replay", "medium-expert", "full-replay")
_ANTMAZE_DATASETS = ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse")
_MAZE2D_DATASETS = ("open", "umaze", "medium", "large", "open-dense", "umaze-dense", "medium-dense", "large-dense")
# Every D4RL id of these families (the versions D4RL published), with its family.
D4RL_IDS: dict[str, str] = {
    **{f"{env}-{data}-v{v}": "locomotion" for env in LOCOMOTION_ENVS for data in _LOCOMOTION_DATASETS for v in (0, 1, 2)},
    **{f"antmaze-{data}-v{v}": "antmaze" for data in _ANTMAZE_DATASETS for v in (0, 1, 2)},
    **{f"maze2d-{data}-v{v}": "maze2d" for data in _MAZE2D_DATASETS for v in (0, 1)},
}


def d4rl_id(name: str | os.PathLike) -> str | None:
    """The D4RL id a file or dataset name is exactly (case, `_` for `-` and the .hdf5/.h5
    suffix aside: D4RL's v2 files are named `hopper_medium_replay-v2.hdf5`), or None."""
    stem = Path(name).name.lower()
    for suffix in (".hdf5", ".h5"):
        stem = stem.removesuffix(suffix)
    stem = stem.replace("_", "-")
    return stem if stem in D4RL_IDS else None


def infer_family(name: str | os.PathLike) -> str | None:
    """The family of a D4RL dataset named by its exact id or file name, or None: a name that
    only contains `hopper` (`my-hopper-run.hdf5`) is not a D4RL dataset."""
    official = d4rl_id(name)
    return None if official is None else D4RL_IDS[official]


def reward_family(name: str | os.PathLike, d4rl_reward: str = "auto") -> str | None:
    """The reward convention `d4rl_reward` (one of REWARD_CONVENTIONS) selects for file `name`."""
    if d4rl_reward == "auto":
        return infer_family(name)
    if d4rl_reward == "none":
        return None
    if d4rl_reward in FAMILIES:
        return d4rl_reward
    raise ValueError(f"d4rl_reward must be one of {', '.join(REWARD_CONVENTIONS)}, got {d4rl_reward!r}")


def describe_convention(family: str | None) -> str:
    """One phrase for the notice a run prints about its rewards."""
    return {
        "locomotion": "locomotion convention: rewards scaled by 1000 / (max - min episode return)",
        "antmaze": "antmaze convention: rewards - 1",
    }.get(family or "", "rewards as stored")


def check_against_spaces(
    arrays: dict[str, np.ndarray], observation_space: gym.Space, action_space: gym.Space, env_id: str, source: str
) -> dict[str, np.ndarray]:
    """The file's columns checked against the evaluation env's spaces. Integer actions of a
    Discrete action space stay indices, one float column, which is what the agents with
    discrete actions read (`batch["actions"][:, 0]` in fb and sr); for a Box they are read as
    continuous values only when they lie in its bounds."""
    from offrl.envs import flat_dim

    hint = "pass the env the data was recorded in with --env ENV_ID"
    observation_shape = (flat_dim(observation_space),)
    if arrays["observations"].shape[1:] != observation_shape:
        raise DatasetError(
            f"{source}: observations have shape {arrays['observations'].shape[1:]} per row but env {env_id} "
            f"observes {observation_shape}; {hint}"
        )
    actions = arrays["actions"]
    integer = np.issubdtype(actions.dtype, np.integer) or actions.dtype == np.bool_
    if isinstance(action_space, gym.spaces.Discrete):
        flat = actions.reshape(len(actions), -1)
        if not integer or flat.shape[1] != 1:
            raise DatasetError(
                f"{source}: actions have dtype {actions.dtype} and shape {actions.shape[1:]} per row but env {env_id} "
                f"has discrete actions {action_space}; store one integer action per row, or {hint}"
            )
        low, high = action_space.start, action_space.start + action_space.n - 1
        if flat.min() < low or flat.max() > high:
            raise DatasetError(f"{source}: actions range over [{flat.min()}, {flat.max()}] but env {env_id} has {action_space}")
        print(f"offrl: {source}: integer actions kept as indices of {env_id}'s {action_space} (for fb --discrete-actions N)")
        return {**arrays, "actions": flat.astype(np.float32)}
    if not isinstance(action_space, gym.spaces.Box):
        raise DatasetError(f"{source}: env {env_id} has action space {action_space}; D4RL files need Box or Discrete actions")
    if actions.shape[1:] != action_space.shape:
        raise DatasetError(
            f"{source}: actions have shape {actions.shape[1:]} per row but env {env_id} takes {action_space.shape}; {hint}"
        )
    if integer:
        if (actions < action_space.low).any() or (actions > action_space.high).any():
            raise DatasetError(
                f"{source}: integer actions outside the bounds of env {env_id}'s continuous {action_space}; "
                "discrete actions need an env with a Discrete action space (--env ENV_ID)"
            )
        print(f"offrl: {source}: integer actions read as continuous values of {env_id}'s {action_space}")
        return {**arrays, "actions": actions.astype(np.float32)}
    return arrays


def load_d4rl_hdf5(
    path: str | os.PathLike, family: str | None = None, *, reward_convention: bool = True
) -> Transitions:
    """Transitions from a D4RL-layout HDF5 file, with the family's reward convention applied.

    `family` ('locomotion', 'antmaze', 'maze2d' or None) defaults to `infer_family(path)`;
    pass `reward_convention=False` to keep the file's rewards untouched.
    """
    path = Path(path)
    arrays = read_d4rl_arrays(path)
    transitions = qlearning_transitions(arrays, source=str(path))
    if family is None:
        family = infer_family(path)
    elif family not in FAMILIES:
        raise ValueError(f"unknown D4RL family {family!r} for {path}; expected one of {FAMILIES} or None")
    return apply_reward_convention(transitions, family) if reward_convention else transitions


def read_d4rl_arrays(path: Path) -> dict[str, np.ndarray]:
    """The five required columns of a D4RL file, validated, as in-memory numpy arrays."""
    if not path.exists():
        raise FileNotFoundError(f"D4RL dataset file not found: {path}")
    if not h5py.is_hdf5(path):
        raise DatasetError(
            f"{path} is not an HDF5 file (truncated download or wrong file?); "
            "download it again from the D4RL dataset URLs."
        )
    try:
        with h5py.File(path, "r") as file:
            missing = [key for key in REQUIRED_KEYS if not isinstance(file.get(key), h5py.Dataset)]
            if missing:
                raise DatasetError(
                    f"{path} lacks the D4RL columns {missing} (it has {sorted(file.keys())}); "
                    f"a D4RL file needs datasets {list(REQUIRED_KEYS)} at the top level. Files from before "
                    "D4RL added `timeouts` are not supported: download the current (-v2 / -v1) version."
                )
            arrays = {key: file[key][()] for key in REQUIRED_KEYS}
    except OSError as error:
        raise DatasetError(f"cannot read HDF5 file {path}: {error}; the file is probably corrupt, download it again.") from error
    validate_d4rl_arrays(arrays, source=str(path))
    return arrays


def validate_d4rl_arrays(arrays: dict[str, np.ndarray], source: str) -> None:
    """Reject non-numeric columns, mismatched row counts, bad shapes and non-finite values."""
    for key in REQUIRED_KEYS:
        value = arrays[key]
        if not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
            raise DatasetError(f"{source}: column {key!r} has non-numeric dtype {value.dtype}; it must hold numbers.")
        if value.ndim == 0:
            raise DatasetError(f"{source}: column {key!r} is a scalar; it must have one row per step.")
    lengths = {key: len(arrays[key]) for key in REQUIRED_KEYS}
    if len(set(lengths.values())) != 1:
        raise DatasetError(f"{source}: columns have different numbers of rows {lengths}; the file is inconsistent.")
    for key in ("rewards", "terminals", "timeouts"):
        if arrays[key].ndim > 2 or (arrays[key].ndim == 2 and arrays[key].shape[1] != 1):
            raise DatasetError(f"{source}: column {key!r} has shape {arrays[key].shape}; expected one value per row.")
    for key in ("observations", "actions", "rewards"):
        finite = np.isfinite(arrays[key])
        if not finite.all():
            bad_rows = np.flatnonzero(~finite.reshape(len(finite), -1).all(axis=1))
            raise DatasetError(
                f"{source}: column {key!r} has NaN or Inf values in {len(bad_rows)} rows (first row {bad_rows[0]}); "
                "clean or regenerate the file."
            )
    if lengths["rewards"] < 2:
        raise DatasetError(f"{source}: {lengths['rewards']} rows is too few to form a transition.")


def qlearning_transitions(arrays: dict[str, np.ndarray], source: str = "<arrays>") -> Transitions:
    """`d4rl.qlearning_dataset` semantics (see the module docstring), vectorized."""
    observations = arrays["observations"]
    terminals = arrays["terminals"].reshape(-1).astype(bool)
    timeouts = arrays["timeouts"].reshape(-1).astype(bool)
    rows = np.flatnonzero(~timeouts[:-1])
    if len(rows) == 0:
        raise DatasetError(f"{source}: every row is a timeout or the last row, so no transition remains.")
    successor_breaks = terminals[:-1] | timeouts[1:]
    successor_breaks[-1] = True  # the successor of row n - 2 is the file's last row, always dropped
    return make_transitions(
        observations=observations[rows],
        actions=arrays["actions"][rows],
        rewards=arrays["rewards"].reshape(-1)[rows],
        next_observations=observations[rows + 1],
        terminals=terminals[rows],
        episode_ends=successor_breaks[rows],
    )


def apply_reward_convention(transitions: Transitions, family: str | None) -> Transitions:
    """The reward post-processing IQL (and CORL) use for D4RL, so results are comparable.

    * locomotion: rewards * 1000 / (max_return - min_return), returns summed over the
      trajectories delimited by `episode_ends` (IQL's `normalize`), which puts returns on a
      scale of about 1000 whatever the dataset quality.
    * antmaze: rewards - 1, turning the sparse 0/1 goal reward into -1 per step until the goal,
      which IQL reports works better than the raw reward.
    * maze2d and None: unchanged.
    """
    if family == "locomotion":
        returns = transitions.episode_returns().astype(np.float64)
        spread = float(returns.max() - returns.min())
        if spread == 0.0:
            raise DatasetError("locomotion reward scaling needs episodes with different returns; all are equal.")
        rewards = transitions.rewards.astype(np.float64) / spread * 1000.0
    elif family == "antmaze":
        rewards = transitions.rewards.astype(np.float64) - 1.0
    elif family in ("maze2d", None):
        return transitions
    else:
        raise ValueError(f"unknown reward convention family {family!r}; expected one of {FAMILIES} or None")
    return dataclasses.replace(transitions, rewards=rewards.astype(np.float32))
