"""Evaluate a saved checkpoint: python scripts/evaluate.py RUN_DIR_OR_CHECKPOINT [--episodes N]
    [--best] [--seed K] [--stochastic] [--json FILE] [--video [FILE]] [--wandb.mode MODE]

RUN_DIR_OR_CHECKPOINT is a run directory (its latest checkpoint, or the best with --best)
or a checkpoint directory RUN_DIR/checkpoints/{latest,best}/STEP. Prints the metrics;
--json writes them (return_mean, return_std, normalized_score, success_rate, episodes, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from offrl.cli import main_guard


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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from offrl.envs import make_eval_vector_env, normalized_score
    from offrl.evaluation import make_policy, summarize_episodes
    from offrl.logging import RunLogger
    from offrl.train import evaluate_seeds, restore_run, stack_states

    args = parse_args(argv)
    state, experiment, step = restore_run(args.path, "best" if args.best else "latest")
    config = experiment.config
    seed = config["seed"] if args.seed is None else args.seed
    episodes = args.episodes or config["eval_episodes"]
    deterministic = config["eval_deterministic"] and not args.stochastic
    envs = make_eval_vector_env(experiment.spec, episodes, seed)
    try:
        # The training loop's own evaluation, for one seed: the same episodes as the run's summary.
        rollouts = evaluate_seeds(envs, stack_states([state]), [seed], episodes, deterministic, step)[0]
    finally:
        envs.close()
    metrics = {**summarize_episodes(rollouts, lambda r: normalized_score(experiment.spec, r)), "step": step}
    print(json.dumps(metrics, indent=2))
    if args.json:
        args.json.write_text(json.dumps(metrics, indent=2))
    if args.video is not None:
        from offrl.video import record_episode

        target = Path(args.video) if args.video else Path(config["run_dir"]) / f"episode_{step}.mp4"
        policy = make_policy(state.agent, state.obs_mean, state.obs_std, deterministic)
        print(f"offrl: video -> {record_episode(experiment.spec, policy, target, seed)}")
    if args.wandb_mode != "disabled":
        logger = RunLogger(Path(config["run_dir"]) / "evaluations", {**config, "wandb": {**config["wandb"], "mode": args.wandb_mode}})
        logger.log({f"evaluate/{k}": v for k, v in metrics.items()}, step=step)
        logger.close()
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(lambda: main()))
