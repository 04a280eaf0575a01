"""REINFORCE with vs without the learned baseline, same budget, many seeds.

    python studies/reinforce_baseline/run.py [--env CartPole-v1] [--seeds 20] [--first-seed 0]
        [--threshold R] [--out DIR] [--figure PNG] [--only with|without] [--wandb.mode offline]
        [--key value ...]   # extra keys override the preset for both variants

Each (variant, seed) is an ordinary `offrl.train.run` of the env's preset, differing only
in `baseline`, so the comparison uses exactly what `scripts/train.py` would. A seed is
solved when its final greedy evaluation reaches the threshold (490 on CartPole-v1, 950 on
InvertedPendulum-v5 by default). Printed per variant: seeds solved, mean, std and min of the
final greedy return, the median number of training episodes until the first periodic
evaluation at the threshold, and wall and CPU seconds per seed with the 1-minute load
average (the wall time of a shared machine is only an upper bound; CPU time is what an
idle machine would need, give or take the threads JAX runs in parallel).

A (variant, seed) whose run directory already holds the result of the same config
(`benchmark.json`, written after the run) is read back instead of trained again, so an
interrupted benchmark continues where it stopped, and `--only with` / `--only without`
runs and tabulates one variant (a later full invocation reuses its runs).

Learning curves are the mean return of each update's training episodes (stochastic
policy) against training episodes seen; the figure has one panel per variant with every
seed's curve and the min-max band over seeds, and goes to `--figure` and to one W&B run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


VARIANTS = {"with baseline": True, "without baseline": False}
# Mean greedy return that counts as solved: CartPole's customary 490 of 500 (the issue's
# target) and gymnasium's reward threshold for InvertedPendulum (950 of 1000).
THRESHOLDS = {"CartPole-v1": 490.0, "InvertedPendulum-v5": 950.0}


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed + seeds - 1")
    parser.add_argument("--threshold", type=float, default=None, help="greedy return that counts as solved")
    parser.add_argument("--out", type=Path, default=Path("runs/studies/reinforce_baseline"))
    parser.add_argument("--figure", type=Path, default=None, help="learning-curve PNG (default OUT/learning_curves.png)")
    parser.add_argument("--only", choices=["with", "without"], default=None,
                        help="only this variant (with or without the baseline): its runs, its table row and panel")
    parser.add_argument("--wandb.mode", dest="wandb_mode", default="offline", choices=["online", "offline", "disabled"])
    args, extra = parser.parse_known_args(argv)
    if args.threshold is None:
        if args.env not in THRESHOLDS:
            parser.error(f"no default solved threshold for {args.env!r}; give --threshold")
        args.threshold = THRESHOLDS[args.env]
    return args, extra


def learning_curve(run_dir: Path, metric: str = "rollout/return_mean") -> tuple[np.ndarray, np.ndarray]:
    """(training episodes seen, `metric`) per update, from metrics.jsonl; by default the mean
    training-episode return, or any other per-update metric such as `train/actor/advantage_abs`."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [row for row in rows if "rollout/episodes" in row and metric in row]
    return np.array([row["rollout/episodes"] for row in rows]), np.array([row[metric] for row in rows])


def seed_curves(run_dirs: list[Path], metric: str = "rollout/return_mean") -> tuple[np.ndarray, np.ndarray]:
    """`learning_curve` of runs with the same budget: (training episodes seen, [seeds, updates])."""
    curves = [learning_curve(run_dir, metric) for run_dir in run_dirs]
    return curves[0][0], np.stack([values for _, values in curves])


def episodes_to_threshold(run_dir: Path, threshold: float) -> int | None:
    """Training episodes seen at the first periodic greedy evaluation with mean return >=
    `threshold`, or None if none reached it."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [row["step"] for row in rows if row.get("eval/return_mean", -np.inf) >= threshold]
    if not steps:
        return None
    episodes_per_update = json.loads((run_dir / "config.json").read_text())["episodes_per_update"]
    return int(min(steps) * episodes_per_update)


def train_variant(
    name: str, env: str, seeds: int, out: Path, overrides: dict[str, Any], first_seed: int = 0
) -> list[tuple[dict[str, Any], Path]]:
    """Seeds first_seed .. first_seed + seeds - 1 of one variant (a key of VARIANTS), each an
    ordinary run of the env's preset with `overrides`: (final summary, run directory) per
    seed; the summary also holds the run's `cpu_seconds` and the `load_average` at its end."""
    from offrl.experiment import resolve
    from offrl.runner import run

    baseline = VARIANTS[name]
    runs = []
    for seed in range(first_seed, first_seed + seeds):
        run_dir = out / ("baseline" if baseline else "no_baseline") / f"s{seed}"
        experiment = resolve(
            {**overrides, "agent": "reinforce", "env": env, "seed": seed, "baseline": baseline,
             "run_dir": str(run_dir), "wandb.mode": "disabled"}
        )
        config = json.loads(json.dumps(dict(experiment), default=list))  # the resolved keys, as they are recorded
        record = run_dir / "benchmark.json"
        if record.exists() and json.loads(record.read_text())["config"] == config:
            summary, reused = json.loads(record.read_text())["summary"], " (reused)"
        else:
            before = resource.getrusage(resource.RUSAGE_SELF)
            summary = run(experiment, progress=False)
            after = resource.getrusage(resource.RUSAGE_SELF)
            summary = {
                **summary,
                "seed": seed,
                "cpu_seconds": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
                "load_average": os.getloadavg()[0],
            }
            record.write_text(json.dumps({"config": config, "summary": summary}, indent=2))
            reused = ""
        runs.append((summary, run_dir))
        print(
            f"{name}{reused}, seed {seed}: greedy return {summary['return_mean']:.1f} "
            f"({summary['wall_seconds']:.0f} s wall, {summary['cpu_seconds']:.0f} s CPU, load {summary['load_average']:.1f})",
            flush=True,
        )
    return runs


def plot(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, path: Path, ylabel: str = "training-episode return"
) -> Figure:
    """One panel per variant: every seed's curve (thin), the min-max band and the mean."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6 * len(curves), 4))
    axes = figure.subplots(1, len(curves), sharey=True, squeeze=False)[0]
    for axis, (color, (name, (episodes, values))) in zip(axes, enumerate(curves.items())):
        color = f"C{color}"
        axis.fill_between(episodes, values.min(axis=0), values.max(axis=0), color=color, alpha=0.15, label="min-max over seeds")
        for seed_values in values:
            axis.plot(episodes, seed_values, color=color, linewidth=0.6, alpha=0.5)
        axis.plot(episodes, values.mean(axis=0), color="black", linewidth=1.8, label=f"mean of {len(values)} seeds")
        axis.set_title(name)
        axis.set_xlabel("training episodes")
        axis.legend(loc="lower right")
    axes[0].set_ylabel(ylabel)
    figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return figure


def summarize_variant(name: str, runs: list[tuple[dict[str, Any], Path]], threshold: float) -> dict[str, Any]:
    finals = np.array([summary["return_mean"] for summary, _ in runs])
    reached = [episodes_to_threshold(run_dir, threshold) for _, run_dir in runs]
    reached_episodes = [episodes for episodes in reached if episodes is not None]
    wall = np.array([summary["wall_seconds"] for summary, _ in runs])
    cpu = np.array([summary["cpu_seconds"] for summary, _ in runs])
    return {
        "variant": name,
        "seeds": [summary["seed"] for summary, _ in runs],
        "finals": finals.tolist(),
        "seeds_solved": int((finals >= threshold).sum()),
        "greedy_return_mean": float(finals.mean()),
        "greedy_return_std": float(finals.std(ddof=1)) if len(finals) > 1 else 0.0,  # sample std over seeds
        "greedy_return_min": float(finals.min()),
        "episodes_to_threshold": reached,
        # Over the seeds that reached it; how many did is seeds_reached.
        "episodes_to_threshold_median": float(np.median(reached_episodes)) if reached_episodes else None,
        "seeds_reached": len(reached_episodes),
        "train_episodes": int(runs[0][0]["train_episodes"]),
        "wall_seconds": wall.tolist(),
        "wall_seconds_mean": float(wall.mean()),
        "wall_seconds_max": float(wall.max()),
        "cpu_seconds_mean": float(cpu.mean()),
        "cpu_seconds_max": float(cpu.max()),
        "load_average_mean": float(np.mean([summary["load_average"] for summary, _ in runs])),
    }


def main(argv: list[str] | None = None) -> int:
    from offrl import config as cfg
    from offrl.logging import RunLogger

    args, extra = parse_args(argv)
    overrides = cfg.parse_overrides(extra)
    curves, table, eval_episodes = {}, [], None
    for name in VARIANTS:
        if args.only is not None and name != f"{args.only} baseline":
            continue
        runs = train_variant(name, args.env, args.seeds, args.out, overrides, args.first_seed)
        curves[name] = seed_curves([run_dir for _, run_dir in runs])
        eval_episodes = runs[0][0]["episodes"]
        table.append(summarize_variant(name, runs, args.threshold))

    seeds = f"seeds {args.first_seed}-{args.first_seed + args.seeds - 1}"
    title = f"REINFORCE on {args.env}, {seeds}"
    figure = plot(curves, title, args.figure or args.out / "learning_curves.png")
    logger = RunLogger(args.out / "aggregate", {"env": args.env, "seeds": args.seeds, "first_seed": args.first_seed, **overrides,
                                                "wandb": {"mode": args.wandb_mode, "project": "offrl", "group": "reinforce-baseline"}})
    try:
        for index, step in enumerate(next(iter(curves.values()))[0]):
            logger.log(
                {f"{name}/{stat}": float(value) for name, (_, returns) in curves.items()
                 for stat, value in (("return_mean", returns[:, index].mean()), ("return_std", returns[:, index].std()))},
                step=int(step),
            )
        logger.log_figure("learning_curves", figure, step=int(step))
        logger.summary({f"{row['variant']}/{key}": value for row in table for key, value in row.items()
                        if isinstance(value, (int, float))})
    finally:
        logger.close()
    (args.out / "results.json").write_text(json.dumps({"env": args.env, "threshold": args.threshold, "table": table}, indent=2))

    print(f"\n{title}: {table[0]['train_episodes']} training episodes, then greedy evaluation ({eval_episodes} episodes)")
    print(f"{'variant':<18} {'solved':>7} {'mean':>7} {'std':>7} {'min':>7} {'median episodes to ' + str(int(args.threshold)):>26} "
          f"{'wall s mean/max':>16} {'CPU s mean/max':>15} {'load':>5}")
    for row in table:
        median = row["episodes_to_threshold_median"]
        reached = f"{median:.0f} ({row['seeds_reached']}/{args.seeds} reached)" if median is not None else f"never (0/{args.seeds})"
        print(
            f"{row['variant']:<18} {row['seeds_solved']:>3}/{args.seeds:<3} {row['greedy_return_mean']:7.1f} "
            f"{row['greedy_return_std']:7.1f} {row['greedy_return_min']:7.1f} {reached:>26} "
            f"{row['wall_seconds_mean']:7.0f}/{row['wall_seconds_max']:<8.0f} {row['cpu_seconds_mean']:6.0f}/{row['cpu_seconds_max']:<8.0f} "
            f"{row['load_average_mean']:5.1f}"
        )
    print(f"per seed: {json.dumps({row['variant']: [round(value, 1) for value in row['finals']] for row in table})}")
    print(f"curves -> {args.figure or args.out / 'learning_curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
