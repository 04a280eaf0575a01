"""Evaluate a saved checkpoint: python scripts/evaluate.py RUN_DIR_OR_CHECKPOINT [--episodes N]
    [--best] [--seed K] [--stochastic] [--json FILE] [--video [FILE]] [--wandb.mode MODE]
    [--goal=X,Y | --reward dataset|MODULE:FUNCTION [--reward-samples N]] [--value-map FILE.png]

RUN_DIR_OR_CHECKPOINT is a run directory (its latest checkpoint, or the best with --best)
or a checkpoint directory RUN_DIR/checkpoints/{latest,best}/STEP. Prints the metrics;
--json writes them (return_mean, return_std, normalized_score, success_rate, episodes, ...).

FB checkpoints only, zero-shot tasks (the metrics then also hold `task` and the `z` used):
  --goal=X,Y          act with z = B(goal) for this fixed goal, given in B's input
                      coordinates (the goal_dims of an observation; pointmaze: x,y). It
                      replaces the per-episode z = B(desired_goal) of pointmaze runs.
  --reward dataset    z = normalized mean of r(s') B(s') over --reward-samples dataset
                      transitions (default 10000, a fixed sample), with the dataset's rewards;
  --reward MOD:FN     ... with rewards FN(next_observations): a function of a numpy batch of
                      raw observations [N, obs_dim] returning [N] rewards, from module MOD
                      (importable from the current directory or sys.path).
  --value-map FILE    pointmaze: save the value landscape F(s, pi_z(s), z)^T z over the maze
                      as a PNG, for the --goal/--reward z or, without them, z = B(centre of
                      the evaluation goal cell); also logged to W&B unless it is disabled.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from offrl.cli import main_guard
from offrl.config import ConfigError

if TYPE_CHECKING:
    import jax

FB_OPTIONS = "--goal, --reward and --value-map"


def parse_goal(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(value) for value in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 1.0,-2.5, got {text!r}") from None


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="run directory or checkpoint directory")
    parser.add_argument("--episodes", type=int, default=None, help="default: the run's eval_episodes")
    parser.add_argument("--best", action="store_true", help="the best checkpoint by evaluation score")
    parser.add_argument("--seed", type=int, default=None, help="default: the run's seed")
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of the greedy/mean action")
    parser.add_argument("--json", type=Path, default=None, help="write the metrics to this file")
    parser.add_argument("--video", nargs="?", const="", default=None, help="render one episode to FILE (.mp4 or .gif)")
    parser.add_argument("--wandb.mode", dest="wandb_mode", default="disabled", choices=["online", "offline", "disabled"])
    task = parser.add_mutually_exclusive_group()
    task.add_argument("--goal", type=parse_goal, default=None, help="fb: z = B(goal); write --goal=-1,1 for a negative first value")
    task.add_argument("--reward", default=None, help="fb: 'dataset' or MODULE:FUNCTION; z from rewards over dataset states")
    parser.add_argument("--reward-samples", type=positive_int, default=10_000, help="fb: dataset states for --reward")
    parser.add_argument("--value-map", type=Path, default=None, help="fb on pointmaze: value landscape PNG")
    return parser.parse_args(argv)


def check_fb_options(args: argparse.Namespace, which: str) -> None:
    """Refuse FB-only options for other agents, from config.json alone (before loading anything)."""
    if args.goal is None and args.reward is None and args.value_map is None:
        return
    from offrl import checkpoint as ckpt

    manager_dir, _ = ckpt.find_checkpoint(args.path, which)
    agent = ckpt.load_config(ckpt.run_dir_of(manager_dir))["agent"]
    if agent != "fb":
        raise ConfigError(f"{FB_OPTIONS} need an fb checkpoint; {args.path} is a {agent} run")


def load_reward_fn(spec: str) -> Callable[[np.ndarray], Any]:
    """The function named by MODULE:FUNCTION."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ConfigError(f"--reward expects 'dataset' or MODULE:FUNCTION, got {spec!r}")
    # `python scripts/evaluate.py` puts scripts/ on sys.path, not the directory it runs in.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"--reward {spec}: cannot import {module_name!r} ({error})") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise ConfigError(f"--reward {spec}: module {module_name!r} has no function {name!r}")
    return function


def goal_z(state: Any, goal: tuple[float, ...]) -> jax.Array:
    """z = B(goal) for a goal in B's input coordinates (the agent's goal_dims)."""
    from agents.fb import infer_z_from_goal

    obs_dim = state.obs_mean.shape[-1]
    dims = state.agent.config["goal_dims"] or tuple(range(obs_dim))
    if len(goal) != len(dims):
        raise ConfigError(f"--goal has {len(goal)} values but B reads {len(dims)} observation dims (goal_dims {list(dims)})")
    observation = np.zeros(obs_dim, np.float32)
    observation[list(dims)] = goal
    return infer_z_from_goal(state.agent, (observation - state.obs_mean) / state.obs_std)


def reward_z(state: Any, transitions: Any, reward: str, samples: int) -> jax.Array:
    """z from the dataset's rewards ('dataset') or a MODULE:FUNCTION of raw observations."""
    from agents.fb import infer_z_from_reward_fn, infer_z_from_rewards

    mean, std = np.asarray(state.obs_mean), np.asarray(state.obs_std)
    # Next observations: rewards are received there (r(s, a, s')) and B is trained on them.
    observations = (transitions.next_observations - mean) / std
    if reward == "dataset":
        return infer_z_from_rewards(state.agent, observations, transitions.rewards, samples)
    function = load_reward_fn(reward)

    def raw_rewards(normalized: np.ndarray) -> np.ndarray:
        # The user's function reads environment coordinates, as in the dataset and the env.
        raw = normalized * std + mean
        rewards = np.asarray(function(raw), np.float32)
        if rewards.shape != (len(raw),):
            raise ConfigError(f"--reward {reward} returned shape {rewards.shape} for {len(raw)} observations; expected ({len(raw)},)")
        return rewards

    return infer_z_from_reward_fn(state.agent, observations, raw_rewards, samples)


def pointmaze_layout(space: Any) -> tuple[list[tuple[int, int]], list[int]]:
    """In a flattened PointMaze observation: the (x, y) index pairs of the ball's position
    (achieved_goal and observation[:2]) and the velocity indices (observation[2:4])."""
    from gymnasium import spaces

    offsets, start = {}, 0
    for key, subspace in space.spaces.items():
        offsets[key] = start
        start += spaces.flatdim(subspace)
    achieved, own = offsets["achieved_goal"], offsets["observation"]
    return [(achieved, achieved + 1), (own, own + 1)], [own + 2, own + 3]


def pointmaze_value_map(
    state: Any, experiment: Any, seed: int, z: jax.Array | None = None, goal: tuple[float, ...] | None = None
) -> tuple[np.ndarray, tuple[float, float, float, float], jax.Array, np.ndarray | None]:
    """The value landscape over the run's maze: (values, extent, z, goal x, y or None).

    Grid points are a reset observation of the evaluation env with the position moved
    and the velocity zero. Without z, z = B of the centre of the evaluation goal cell
    (marked); with z, `goal` (the --goal values) is marked when B reads a position.
    """
    from agents.fb import infer_z_from_goal, value_landscape
    from offrl.envs import flatten_observations
    from offrl.envs.robotics import gymnasium_robotics

    if experiment.spec.env_factory is None:
        raise ConfigError(f"--value-map needs a PointMaze evaluation env; {experiment.spec.name} has none")
    env = experiment.spec.env_factory()
    try:
        if not isinstance(env.unwrapped, gymnasium_robotics.envs.maze.point_maze.PointMazeEnv):
            raise ConfigError(f"--value-map needs a PointMaze evaluation env, not {env.spec.id if env.spec else env}")
        maze = env.unwrapped.maze
        observation, _ = env.reset(seed=seed)
        space = env.observation_space
    finally:
        env.close()
    base = flatten_observations(space, {key: np.asarray(value)[None] for key, value in observation.items()})[0]
    positions, velocities = pointmaze_layout(space)
    base[velocities] = 0.0
    goal_xy = None
    if z is None:
        if len(maze.unique_goal_locations) != 1:
            raise ConfigError("--value-map: the evaluation maze has no single goal cell; pass --goal")
        goal_xy = np.asarray(maze.unique_goal_locations[0])
        at_goal = base.copy()
        for x_dim, y_dim in positions:
            at_goal[[x_dim, y_dim]] = goal_xy
        z = infer_z_from_goal(state.agent, (at_goal - state.obs_mean) / state.obs_std)
    elif goal is not None and tuple(state.agent.config["goal_dims"] or ()) in positions:
        goal_xy = np.asarray(goal)
    free_cells = np.array([[cell != 1 for cell in row] for row in maze.maze_map])
    values, extent = value_landscape(
        state.agent, z, base, free_cells, positions, maze.maze_size_scaling, obs_mean=state.obs_mean, obs_std=state.obs_std
    )
    return values, extent, z, goal_xy


def main(argv: list[str] | None = None) -> int:
    from offrl.envs import make_eval_vector_env, normalized_score
    from offrl.evaluation import make_policy, summarize_episodes, value_landscape_figure
    from offrl.logging import RunLogger
    from offrl.train import evaluate_seeds, restore_run, stack_states

    args = parse_args(argv)
    which = "best" if args.best else "latest"
    check_fb_options(args, which)
    state, experiment, step = restore_run(args.path, which)
    config = experiment.config
    seed = config["seed"] if args.seed is None else args.seed
    episodes = args.episodes or config["eval_episodes"]
    deterministic = config["eval_deterministic"] and not args.stochastic
    task, z = None, None
    if args.goal is not None:
        task, z = f"goal {','.join(map(str, args.goal))}", goal_z(state, args.goal)
    elif args.reward is not None:
        task, z = f"reward {args.reward}", reward_z(state, experiment.transitions, args.reward, args.reward_samples)
    if z is not None:
        state = state.replace(agent=state.agent.with_task(z))
    envs = make_eval_vector_env(experiment.spec, episodes, seed)
    try:
        # The training loop's own evaluation, for one seed: the same episodes as the run's summary.
        rollouts = evaluate_seeds(envs, stack_states([state]), [seed], episodes, deterministic, step)[0]
    finally:
        envs.close()
    metrics = {**summarize_episodes(rollouts, lambda r: normalized_score(experiment.spec, r)), "step": step}
    report = metrics if task is None else {**metrics, "task": task, "z": np.asarray(z).tolist()}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.video is not None:
        from offrl.video import record_episode

        target = Path(args.video) if args.video else Path(config["run_dir"]) / f"episode_{step}.mp4"
        policy = make_policy(state.agent, state.obs_mean, state.obs_std, deterministic)
        print(f"offrl: video -> {record_episode(experiment.spec, policy, target, seed)}")
    figure = None
    if args.value_map is not None:
        values, extent, _, goal_xy = pointmaze_value_map(state, experiment, seed, z, args.goal)
        figure = value_landscape_figure(values, extent, goal_xy, f"fb step {step}: {task or 'evaluation goal cell'}")
        args.value_map.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.value_map, dpi=100, bbox_inches="tight")
        print(f"offrl: value map -> {args.value_map}")
    if args.wandb_mode != "disabled":
        logger = RunLogger(Path(config["run_dir"]) / "evaluations", {**config, "wandb": {**config["wandb"], "mode": args.wandb_mode}})
        logger.log({f"evaluate/{k}": v for k, v in metrics.items()}, step=step)
        if figure is not None:
            logger.log_figure("evaluate/value_map", figure, step)
        logger.close()
    elif figure is not None:
        import matplotlib.pyplot as plt

        plt.close(figure)
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(lambda: main()))
