"""Mean Q(s, a) on dataset batches over training, from run directories' metrics.jsonl.

    python studies/iql_pointmaze/plot_q_curve.py RUN_DIR [RUN_DIR ...] --out studies/iql_pointmaze/figures/iql_mean_q.png [--r-max 1]

A multi-seed run directory (seed0/, seed1/, ...) contributes one line per seed. The bound
r_max / (1 - gamma), gamma read from each run's config, is drawn as a dashed line: a Q
above it is an overestimate no return can have. Prints, per line, the last logged mean Q
and its rise over the last 20% of training (a flattening curve rises little there).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def q_series(metrics_path: Path) -> tuple[np.ndarray, np.ndarray]:
    steps, values = [], []
    for line in metrics_path.read_text().splitlines():
        row = json.loads(line)
        if "train/critic/q" in row:
            steps.append(row["step"])
            values.append(row["train/critic/q"])
    if not steps:
        raise SystemExit(f"plot_q_curve: {metrics_path} has no train/critic/q rows (is it an IQL run?)")
    return np.asarray(steps), np.asarray(values)


def run_metrics(run_dir: Path) -> list[tuple[str, Path]]:
    if (run_dir / "metrics.jsonl").is_file():
        return [(run_dir.name, run_dir / "metrics.jsonl")]
    seeds = sorted(run_dir.glob("seed*/metrics.jsonl"))
    if not seeds:
        raise SystemExit(f"plot_q_curve: {run_dir} holds no metrics.jsonl (give a run directory)")
    return [(f"{run_dir.name}/{path.parent.name}", path) for path in seeds]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--r-max", type=float, default=1.0, help="largest reward of the dataset")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)

    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    bounds = set()
    for run_dir in args.run_dirs:
        config = json.loads((run_dir / "config.json").read_text())
        bounds.add(args.r_max / (1.0 - config["discount"]))
        for label, path in run_metrics(run_dir):
            steps, values = q_series(path)
            axis.plot(steps, values, label=label)
            tail = values[steps >= 0.8 * steps[-1]]
            print(f"{label}: mean Q {values[-1]:.2f} at {steps[-1]}, rise over the last 20%: {tail[-1] - tail[0]:.2f}")
    for bound in sorted(bounds):
        axis.axhline(bound, linestyle="--", color="grey")
        # x in axes coordinates: the label stays inside the plot whatever step the curves start at.
        axis.text(0.01, bound, f"r_max/(1-gamma) = {bound:.0f}", va="bottom", fontsize=8, transform=axis.get_yaxis_transform())
    axis.set_xlabel("updates")
    axis.set_ylabel("mean Q(s, a) on dataset batches")
    axis.set_yscale("symlog", linthresh=1.0)
    axis.legend(fontsize=7)
    if args.title:
        axis.set_title(args.title)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=100, bbox_inches="tight")
    print(f"plot_q_curve: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
