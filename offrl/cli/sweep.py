"""Run a W&B sweep file locally, without a W&B server:

    python scripts/sweep.py sweeps/policy_extraction.yaml --workers 2 [--out DIR]
        [--set key=value ...] [--limit K] [--count N --seed S] [--vmap]

grid and random sweeps are expanded here and every run is a `scripts/train.py` process
(`--wandb.mode=offline` unless `--set wandb.mode=...`) writing to OUT/runs/<run>.
`--set` applies to every run (e.g. `--set steps=2000` for a quick pass). Rerunning the
same command skips finished runs and resumes interrupted ones. Results: OUT/results.csv
and OUT/summary.png. Exit status 1 when any run failed.

--vmap (grid sweeps) folds the axes the agent can batch (its numeric hyperparameters) and a
consecutive seed axis into one `train.py --vmap ... --num-seeds K` process per remaining
combination, so each process compiles once and trains its runs together; every grid point is
still its own run directory and row of results.csv (see offrl/sweep.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from offrl.cli import main_guard


def main(argv: list[str] | None = None) -> int:
    from offrl import sweep as sw

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_file", help="a W&B sweep YAML, e.g. sweeps/fb_dimension.yaml")
    parser.add_argument("--workers", type=int, default=1, help="runs at a time (default 1)")
    parser.add_argument("--out", default=None, help="output directory (default sweeps/<sweep file name>)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a train.py override for every run; repeatable")
    parser.add_argument("--limit", type=int, default=None, help="run only the first K runs of the sweep")
    parser.add_argument("--count", type=int, default=None, help="random sweeps: number of runs (default run_cap)")
    parser.add_argument("--seed", type=int, default=0, help="random sweeps: sampling seed")
    parser.add_argument("--vmap", action="store_true",
                        help="grid sweeps: train batchable axes and seeds together, one process per remaining combination")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.workers < 1:
        raise sw.SweepError(f"--workers must be >= 1, got {args.workers}")

    sweep = sw.load_sweep(args.sweep_file)
    sets = sw.parse_sets(args.set)
    clash = sorted(set(sets) & set(sweep["parameters"]))
    if clash:
        raise sw.SweepError(f"--set {', '.join(clash)}: already a parameter of the sweep; edit the sweep file instead")
    wandb_mode = sets.pop("wandb.mode", "offline")
    out = Path(args.out or Path("sweeps") / Path(args.sweep_file).stem)
    if args.vmap:
        specs = sw.fold_grid(sweep, out, sets, limit=args.limit)
    else:
        specs = sw.plan(sweep, out, count=args.count, seed=args.seed, limit=args.limit)
    keys = sw.swept_keys(sweep)
    metric = sw.metric_name(sweep)
    runs = sum(len(spec.members) or 1 for spec in specs)
    print(f"sweep: {runs} runs of {args.sweep_file} ({sweep['method']}) in {len(specs)} processes, {args.workers} workers -> {out}",
          flush=True)
    sw.prepare_datasets(specs, sets, args.workers)

    def progress(result: sw.RunResult, done: int, total: int) -> None:
        if result.spec.members:
            when = "earlier" if result.started == "earlier" else f"{result.seconds or 0:.0f}s"
            detail = f"{len(result.spec.members)} runs ({when})" if result.status == "finished" else result.error
        elif result.status == "finished":
            score = sw.score_of(result, metric)
            when = "earlier" if result.started == "earlier" else f"{result.seconds:.0f}s"
            detail = f"{metric} {score:.1f} ({when})" if score is not None else f"({when})"
        else:
            detail = result.error
        print(f"[{done}/{total}] {result.status} {result.spec.name}: {detail}", flush=True)

    runner = sw.SweepRunner(sweep, out, args.workers, sets, wandb_mode, on_result=progress)
    results = runner.run(specs)
    runner.write_outputs(results)
    results = sw.unfold(results)
    print(sw.format_table(results, keys, metric))
    print(f"sweep: {out / 'results.csv'}, {out / 'summary.png'}")
    failed = [result for result in results if result.status != "finished"]
    if failed:
        raise sw.SweepError(f"{len(failed)} of {len(results)} runs failed (see {out / 'results.csv'} and {out / 'logs'})")
    return 0


def entry() -> int:
    """The `offrl-sweep` console script."""
    return main_guard(main)
