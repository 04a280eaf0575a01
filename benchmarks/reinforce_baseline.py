"""REINFORCE with vs without the learned baseline, same budget, several seeds.

    python benchmarks/reinforce_baseline.py [--env CartPole-v1] [--seeds 5] [--out DIR]
        [--wandb.mode offline] [--key value ...]   # extra keys override the preset for both variants

Each (variant, seed) is an ordinary `offrl.train.run` of the env's preset, differing only
in `baseline`, so the comparison uses exactly what `scripts/train.py` would. Learning
curves are the mean return of each update's training episodes (stochastic policy),
against training episodes seen; their mean and min-max band over seeds go to a PNG and to
one W&B run, and the final greedy evaluations are printed as a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VARIANTS = {"with baseline": True, "without baseline": False}


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/reinforce_baseline"))
    parser.add_argument("--wandb.mode", dest="wandb_mode", default="offline", choices=["online", "offline", "disabled"])
    return parser.parse_known_args(argv)


def learning_curve(run_dir: Path, metric: str = "rollout/return_mean") -> tuple[np.ndarray, np.ndarray]:
    """(training episodes seen, `metric`) per update, from metrics.jsonl; by default the mean
    training-episode return, or any other per-update metric such as `train/advantage_abs`."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [row for row in rows if "rollout/episodes" in row and metric in row]
    return np.array([row["rollout/episodes"] for row in rows]), np.array([row[metric] for row in rows])


def seed_curves(run_dirs: list[Path], metric: str = "rollout/return_mean") -> tuple[np.ndarray, np.ndarray]:
    """`learning_curve` of runs with the same budget: (training episodes seen, [seeds, updates])."""
    curves = [learning_curve(run_dir, metric) for run_dir in run_dirs]
    return curves[0][0], np.stack([values for _, values in curves])


def train_variant(name: str, env: str, seeds: int, out: Path, overrides: dict[str, Any]) -> list[tuple[dict[str, Any], Path]]:
    """Seeds 0..seeds-1 of one variant (a key of VARIANTS), each an ordinary run of the env's
    preset with `overrides`: (final summary, run directory) per seed."""
    from offrl.train import resolve_config, run

    baseline = VARIANTS[name]
    runs = []
    for seed in range(seeds):
        run_dir = out / ("baseline" if baseline else "no_baseline") / f"s{seed}"
        config = resolve_config(
            {**overrides, "agent": "reinforce", "env": env, "seed": seed, "baseline": baseline,
             "run_dir": str(run_dir), "wandb.mode": "disabled"}
        )
        summary = run(config, progress=False)
        runs.append((summary, run_dir))
        print(f"{name}, seed {seed}: greedy return {summary['return_mean']:.1f} ({summary['wall_seconds']:.0f} s)", flush=True)
    return runs


def plot(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, path: Path, ylabel: str = "training-episode return (min-max band)"
) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4))
    axis = figure.subplots()
    for name, (episodes, returns) in curves.items():
        mean = returns.mean(axis=0)
        axis.plot(episodes, mean, label=f"{name} (mean of {len(returns)} seeds)")
        axis.fill_between(episodes, returns.min(axis=0), returns.max(axis=0), alpha=0.2)
    axis.set_xlabel("training episodes")
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return figure


def main(argv: list[str] | None = None) -> int:
    from offrl import config as cfg
    from offrl.logging import RunLogger

    args, extra = parse_args(argv)
    overrides = cfg.parse_overrides(extra)
    curves, finals, table, eval_episodes = {}, {}, [], None
    for name in VARIANTS:
        runs = train_variant(name, args.env, args.seeds, args.out, overrides)
        curves[name] = seed_curves([run_dir for _, run_dir in runs])
        finals[name] = np.array([summary["return_mean"] for summary, _ in runs])
        eval_episodes = runs[0][0]["episodes"]
        seconds = np.array([summary["wall_seconds"] for summary, _ in runs])
        table.append(
            {
                "variant": name,
                "greedy_return_mean": float(finals[name].mean()),
                "greedy_return_std": float(finals[name].std()),
                "greedy_return_min": float(finals[name].min()),
                "seeds_at_490": int((finals[name] >= 490).sum()),
                "last_10_updates_train_return": float(curves[name][1][:, -10:].mean()),
                "wall_seconds_mean": float(seconds.mean()),
            }
        )

    title = f"REINFORCE on {args.env}, {args.seeds} seeds"
    figure = plot(curves, title, args.out / "learning_curves.png")
    logger = RunLogger(args.out / "aggregate", {"env": args.env, "seeds": args.seeds, **overrides,
                                                "wandb": {"mode": args.wandb_mode, "project": "offrl", "group": "reinforce-baseline"}})
    try:
        for index, step in enumerate(next(iter(curves.values()))[0]):
            logger.log(
                {f"{name}/{stat}": float(value) for name, (_, returns) in curves.items()
                 for stat, value in (("return_mean", returns[:, index].mean()), ("return_std", returns[:, index].std()))},
                step=int(step),
            )
        logger.log_figure("learning_curves", figure, step=int(step))
        logger.summary({f"{row['variant']}/{key}": value for row in table for key, value in row.items() if key != "variant"})
    finally:
        logger.close()
    (args.out / "results.json").write_text(json.dumps({"finals": {k: v.tolist() for k, v in finals.items()}, "table": table}, indent=2))

    print(f"\n{title}: greedy evaluation ({eval_episodes} episodes) after training")
    print(f"{'variant':<18} {'mean':>7} {'std':>7} {'min':>7} {'>=490':>6} {'train ret (last 10)':>20} {'wall s':>7}")
    for row in table:
        print(
            f"{row['variant']:<18} {row['greedy_return_mean']:7.1f} {row['greedy_return_std']:7.1f} {row['greedy_return_min']:7.1f} "
            f"{row['seeds_at_490']:>3}/{args.seeds:<2} {row['last_10_updates_train_return']:20.1f} {row['wall_seconds_mean']:7.0f}"
        )
    print(f"per seed: {json.dumps({k: v.round(1).tolist() for k, v in finals.items()})}")
    print(f"curves -> {args.out / 'learning_curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
