"""FB's zero-shot tasks for a restored run: the z of a goal or of a reward function, and the
value landscape of a task over the run's maze, with its figure.

`scripts/evaluate.py` (--goal, --reward, --value-map), `benchmarks/fb_zero_shot.py` and the
FB notebook use these on a restored run (`offrl.experiment.restore_run`); the inference itself
(`infer_z_from_goal`, `infer_z_from_rewards`, `pointmaze_value_map`) is `offrl.agents.fb`'s.
Errors are `ConfigError`s naming the evaluate.py option they come from.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Callable, Sequence

import jax
import numpy as np

from offrl.agents.fb import goal_observation, infer_z_from_goal, infer_z_from_reward_fn, infer_z_from_rewards, pointmaze_value_map
from offrl.config import ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from offrl.loop import LoopState
    from offrl.experiment import Experiment
    from offrl.transitions import Transitions


def import_task_module(module_name: str) -> ModuleType:
    """`module_name` from the installed packages, else as a file under the working directory
    (`my_rewards` -> ./my_rewards.py): an entry point's sys.path does not hold the directory
    it runs in."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError:
        path = Path.cwd() / (module_name.replace(".", "/") + ".py")
        if not path.is_file():
            raise
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_reward_fn(spec: str) -> Callable[[np.ndarray], np.ndarray]:
    """The function named by MODULE:FUNCTION, its output checked to be one reward per row."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ConfigError(f"--reward expects 'dataset' or MODULE:FUNCTION, got {spec!r}")
    try:
        module = import_task_module(module_name)
    except ImportError as error:
        raise ConfigError(f"--reward {spec}: cannot import {module_name!r} ({error})") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise ConfigError(f"--reward {spec}: module {module_name!r} has no function {name!r}")

    def rewards(observations: np.ndarray) -> np.ndarray:
        values = np.asarray(function(observations), np.float32)
        if values.shape != (len(observations),):
            raise ConfigError(
                f"--reward {spec} returned shape {values.shape} for {len(observations)} observations; expected ({len(observations)},)"
            )
        return values

    return rewards


def dataset_transitions(experiment: Experiment) -> Transitions:
    """The run's dataset rows, for a reward task: a restored run carries none (checkpoints are
    self-contained), so the dataset is loaded here, and must then be present."""
    if experiment.transitions is not None:
        return experiment.transitions
    from offrl.data import load_dataset

    config = experiment.config
    return load_dataset(config["dataset"], env_id=config.get("env"), d4rl_reward=config.get("d4rl_reward", "auto"))[0]


def task_z(
    state: LoopState,
    experiment: Experiment,
    goal: Sequence[float] | None = None,
    reward: str | None = None,
    reward_samples: int = 10_000,
    center_reward: bool = False,
) -> tuple[str | None, jax.Array | None]:
    """A task's name and z: z = B(goal) for a goal in B's input coordinates, or z inferred from
    rewards over the dataset's states (`reward` is 'dataset' or MODULE:FUNCTION); (None, None)
    without either."""
    if goal is not None:
        try:
            observation = goal_observation(state.agent, goal, state.obs_mean.shape[-1])
        except ValueError as error:
            raise ConfigError(f"--goal: {error}") from None
        return f"goal {','.join(map(str, goal))}", infer_z_from_goal(state.agent, observation, state.obs_mean, state.obs_std)
    if reward is None:
        return None, None
    # Next observations: rewards are received there (r(s, a, s')) and B is trained on them.
    transitions = dataset_transitions(experiment)
    observations = transitions.next_observations
    normalization = {"obs_mean": state.obs_mean, "obs_std": state.obs_std, "center": center_reward}
    if reward == "dataset":
        z = infer_z_from_rewards(state.agent, observations, transitions.rewards, reward_samples, **normalization)
    else:
        z = infer_z_from_reward_fn(state.agent, observations, load_reward_fn(reward), reward_samples, **normalization)
    return f"reward {reward}", z


def evaluation_value_map(
    state: LoopState, experiment: Experiment, seed: int, z: jax.Array | None, goal: Sequence[float] | None
) -> tuple[np.ndarray, tuple[float, float, float, float], jax.Array, np.ndarray | None]:
    """`offrl.agents.fb.pointmaze_value_map` over the run's evaluation maze (its goal cell's z
    without `z`)."""
    from offrl.envs.pointmaze import maze_geometry

    if experiment.spec.env_factory is None:
        raise ConfigError(f"--value-map needs a PointMaze evaluation env; {experiment.spec.name} has none")
    try:
        maze = maze_geometry(experiment.spec.env_factory, seed)
    except ValueError as error:
        raise ConfigError(f"--value-map: {error}") from None
    if z is None and maze.goal_xy is None:
        raise ConfigError("--value-map: the evaluation maze has no single goal cell; pass --goal")
    return pointmaze_value_map(state.agent, maze, z, goal, state.obs_mean, state.obs_std)


def value_landscape_figure(
    values: np.ndarray, extent: tuple[float, float, float, float], goal: np.ndarray | None = None, title: str = ""
) -> Figure:
    """A value landscape over a maze (`offrl.agents.fb.value_landscape`): NaN cells (walls)
    drawn flat grey so they read as walls, not as low values; the goal as a star."""
    import matplotlib
    from matplotlib.figure import Figure

    height, width = values.shape
    figure = Figure(figsize=(6, max(2.0, 5 * height / width)))
    axis = figure.subplots()
    colormap = matplotlib.colormaps["viridis"].with_extremes(bad="0.3")
    image = axis.imshow(np.ma.masked_invalid(values), extent=extent, origin="upper", cmap=colormap)
    figure.colorbar(image, ax=axis, label=r"$V(s) = F(s, \pi_z(s), z)^\top z$")
    if goal is not None:
        axis.plot(goal[0], goal[1], marker="*", markersize=18, color="red", markeredgecolor="white", linestyle="none", label="goal")
        axis.legend(loc="upper right")
    axis.set_xlabel("x")
    axis.set_ylabel("y")
    if title:
        axis.set_title(title)
    return figure
