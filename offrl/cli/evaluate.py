"""Evaluate a saved checkpoint: python scripts/evaluate.py RUN_DIR_OR_CHECKPOINT [--episodes N]
    [--best] [--seed K] [--stochastic] [--json FILE] [--video [FILE]] [--wandb.mode MODE]
    [--goal=X,Y | --reward dataset|MODULE:FUNCTION [--reward-samples N] [--center-reward]] [--value-map FILE.png]

RUN_DIR_OR_CHECKPOINT is a run directory (its latest checkpoint, or the best with --best)
or a checkpoint directory RUN_DIR/checkpoints/STEP. Prints the metrics; --json writes them
(return_mean, return_std, normalized_score, success_rate, episodes, ...). The run directory
is enough: checkpoints hold the config, input shapes and evaluation env, so the dataset
need not be present (only --reward reads it).

FB checkpoints only, zero-shot tasks (offrl/agents/fb_tasks.py; the metrics then also hold `task` and the `z` used).
Without --goal or --reward, FB acts as in the training loop's evaluation: z = B(observed goal)
per episode (pointmaze-v1, eval_goal_dims), else its eval_task: by default the dataset-reward
task estimated during training (offrl/agents/fb.py, reward_task_z), which approximates --reward dataset.
  --goal=X,Y          act with z = B(goal) for this fixed goal, given in B's input
                      coordinates (the goal_dims of an observation; mazes: x,y). It
                      replaces the per-episode z = B(observed goal) of pointmaze-v1 runs.
  --reward dataset    z = normalized mean of r(s') B(s') over --reward-samples dataset
                      transitions (default 10000, a fixed sample), with the dataset's rewards;
  --reward MOD:FN     ... with rewards FN(next_observations): a function of a numpy batch of
                      raw observations [N, obs_dim] returning [N] rewards, from module MOD
                      (importable from the current directory or sys.path).
  --center-reward     subtract the sample's mean reward before inferring z: a constant
                      offset does not change the task but adds a multiple of E[B] to z.
  --value-map FILE    maze2d / pointmaze: save the value landscape F(s, pi_z(s), z)^T z over the
                      maze as a PNG, for the --goal/--reward z or, without them, z = B(centre
                      of the evaluation goal cell: maze2d's target; pointmaze-v1 evaluates
                      several goals, so pass --goal); also logged to W&B unless disabled.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from offrl.cli import main_guard
from offrl.config import ConfigError

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
    parser.add_argument("--video", nargs="?", const="", default=None,
                        help="render one episode to FILE (.mp4 or .gif); also logged to W&B unless disabled")
    parser.add_argument("--wandb.mode", dest="wandb_mode", default="disabled", choices=["online", "offline", "disabled"])
    task = parser.add_mutually_exclusive_group()
    task.add_argument("--goal", type=parse_goal, default=None, help="fb: z = B(goal); write --goal=-1,1 for a negative first value")
    task.add_argument("--reward", default=None, help="fb: 'dataset' or MODULE:FUNCTION; z from rewards over dataset states")
    parser.add_argument("--reward-samples", type=positive_int, default=10_000, help="fb: dataset states for --reward")
    parser.add_argument("--center-reward", action="store_true",
                        help="fb: subtract the sampled states' mean reward before inferring z (see infer_z_from_rewards)")
    parser.add_argument("--value-map", type=Path, default=None, help="fb on pointmaze: value landscape PNG")
    return parser.parse_args(argv)


def check_fb_options(args: argparse.Namespace, which: str) -> None:
    """Refuse FB-only options for other agents, from config.json alone (before loading anything)."""
    if args.center_reward and args.reward is None:
        raise ConfigError("--center-reward applies to --reward; give --reward dataset or --reward MODULE:FUNCTION")
    if args.goal is None and args.reward is None and args.value_map is None:
        return
    from offrl import checkpoint as ckpt

    manager_dir, _ = ckpt.find_checkpoint(args.path, which)
    agent = ckpt.load_config(ckpt.run_dir_of(manager_dir))["agent"]
    if agent != "fb":
        raise ConfigError(f"{FB_OPTIONS} need an fb checkpoint; {args.path} is a {agent} run")


def main(argv: list[str] | None = None) -> int:
    from offrl.envs import d4rl_normalized_score, normalized_score
    from offrl.evaluation import evaluate_state, make_policy, summarize_episodes
    from offrl.logging import RunLogger
    from offrl.experiment import restore_run

    args = parse_args(argv)
    which = "best" if args.best else "latest"
    check_fb_options(args, which)
    state, experiment, step = restore_run(args.path, which, data=False)
    config = experiment.config
    seed = config["seed"] if args.seed is None else args.seed
    episodes = args.episodes or config["eval_episodes"]
    deterministic = config["eval_deterministic"] and not args.stochastic
    task, z = None, None
    if args.goal is not None or args.reward is not None:  # an fb run (check_fb_options)
        from offrl.agents.fb_tasks import task_z

        task, z = task_z(state, experiment, args.goal, args.reward, args.reward_samples, args.center_reward)
    if z is not None:
        state = state.replace(agent=state.agent.with_task(z))
    # The training loop's own evaluation, for one seed: the same episodes as the run's summary.
    rollouts = evaluate_state(state, experiment.spec, episodes, seed, deterministic, step)
    metrics = {**summarize_episodes(
        rollouts, lambda r: normalized_score(experiment.spec, r), lambda r: d4rl_normalized_score(experiment.spec, r)
    ), "step": step}
    report = metrics if task is None else {**metrics, "task": task, "z": np.asarray(z).tolist()}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    video = None
    if args.video is not None:
        from offrl.video import record_episode

        target = Path(args.video) if args.video else Path(config["run_dir"]) / f"episode_{step}.mp4"
        policy = make_policy(state.agent, state.obs_mean, state.obs_std, deterministic)
        video = record_episode(experiment.spec, policy, target, seed)
        print(f"offrl: video -> {video}")
    figure = None
    if args.value_map is not None:
        from offrl.agents.fb_tasks import evaluation_value_map, value_landscape_figure

        values, extent, _, goal_xy = evaluation_value_map(state, experiment, seed, z, args.goal)
        figure = value_landscape_figure(values, extent, goal_xy, f"fb step {step}: {task or 'evaluation goal cell'}")
        args.value_map.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.value_map, dpi=100, bbox_inches="tight")
        print(f"offrl: value map -> {args.value_map}")
    if args.wandb_mode != "disabled":
        logger = RunLogger(Path(config["run_dir"]) / "evaluations", {**config, "wandb": {**config["wandb"], "mode": args.wandb_mode}})
        logger.log({f"evaluate/{k}": v for k, v in metrics.items()}, step=step)
        if figure is not None:
            logger.log_figure("evaluate/value_map", figure, step)
        if video is not None:
            logger.log_video("evaluate/video", video, step)
        logger.close()
    return 0


def entry() -> int:
    """The `offrl-evaluate` console script."""
    return main_guard(main)
