"""A hyperparameter x seed grid as one `--vmap` process against one process per run.

Both sides are the local sweep runner (`scripts/sweep.py`) on the same grid sweep file, end to
end (Python start-up, dataset load, compilation, training, evaluation, writing the runs):
  - separate: one `scripts/train.py` process per grid point, `--workers` at a time;
  - one process: `--vmap`, which folds the expectile and seed axes into a single
    `train.py --vmap expectile=... --num-seeds K` process.
Every run does the same updates and evaluation in both, and the scores must agree (the
batched members equal the single runs), which the benchmark checks before it reports.

    python benchmarks/grid_speed.py [--expectiles 0.6,0.7,0.8,0.9] [--seeds 3] [--steps 1000]
        [--workers 2] [--hidden 256,256] [--dataset offrl/maze2d/umaze-v0] [--out DIR]

The last line is `separate / one-process wall time: X`.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent


def sweep_file(path: Path, expectiles: list[float], seeds: int, dataset: str) -> Path:
    path.write_text(yaml.safe_dump({
        "program": "scripts/train.py",
        "method": "grid",
        "metric": {"name": "normalized_score", "goal": "maximize"},
        "parameters": {
            "agent": {"value": "iql-awr"},
            "dataset": {"value": dataset},
            "expectile": {"values": expectiles},
            "seed": {"values": list(range(seeds))},
        },
    }))
    return path


def run_sweep(sweep: Path, out: Path, sets: list[str], workers: int, fold: bool) -> tuple[float, dict[str, float]]:
    """Wall seconds of the whole sweep and each run's mean return, by run name."""
    command = [sys.executable, str(REPO / "scripts" / "sweep.py"), str(sweep), "--out", str(out), "--workers", str(workers)]
    command += ["--vmap"] if fold else []
    for item in sets:
        command += ["--set", item]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"sweep failed ({'--vmap' if fold else 'separate'}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    rows = list(csv.DictReader((out / "results.csv").open()))
    return seconds, {row["run"]: float(row["return_mean"]) for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--expectiles", default="0.6,0.7,0.8,0.9")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="separate processes at a time (default 2: the cores)")
    parser.add_argument("--hidden", default="256,256")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--dataset", default="offrl/maze2d/umaze-v0")
    parser.add_argument("--out", default=None, help="keep the sweeps' runs here (default: a temporary directory)")
    args = parser.parse_args()
    expectiles = [float(x) for x in args.expectiles.split(",")]
    runs = len(expectiles) * args.seeds
    sets = [f"steps={args.steps}", f"hidden_dims=[{args.hidden}]", f"eval_episodes={args.eval_episodes}",
            f"eval_interval={args.steps}", f"updates_per_call={min(1000, args.steps)}", "wandb.mode=disabled"]
    with tempfile.TemporaryDirectory() as temporary:
        out = Path(args.out or temporary)
        out.mkdir(parents=True, exist_ok=True)
        sweep = sweep_file(out / "grid.yaml", expectiles, args.seeds, args.dataset)
        load_before = os.getloadavg()
        one_seconds, one_returns = run_sweep(sweep, out / "vmap", sets, 1, fold=True)
        separate_seconds, separate_returns = run_sweep(sweep, out / "separate", sets, args.workers, fold=False)
        load_after = os.getloadavg()
    assert one_returns.keys() == separate_returns.keys() and len(one_returns) == runs
    names = sorted(one_returns)
    gap = float(np.max(np.abs([one_returns[name] - separate_returns[name] for name in names])))
    print(f"iql-awr on {args.dataset}, hidden {args.hidden}, {len(expectiles)} expectiles x {args.seeds} seeds = {runs} runs, "
          f"{args.steps} updates + {args.eval_episodes} eval episodes each; load average before {load_before[0]:.1f}, "
          f"after {load_after[0]:.1f} ({os.cpu_count()} cores)")
    print(f"largest |return difference| between a batched member and its separate run: {gap:.2e}")
    print("\n| grid as | processes | wall time (s) | s per run |")
    print("|---|---|---|---|")
    print(f"| separate processes ({args.workers} at a time) | {runs} | {separate_seconds:.1f} | {separate_seconds / runs:.1f} |")
    print(f"| one --vmap process | 1 | {one_seconds:.1f} | {one_seconds / runs:.1f} |")
    print(f"\nseparate / one-process wall time: {separate_seconds / one_seconds:.2f}")


if __name__ == "__main__":
    main()
