"""Gather run.py's run directories into this study's small raw files.

    python studies/reinforce_baseline/collect.py OUT NAME

OUT is the `--out` of `run.py` (OUT/baseline/s<k>, OUT/no_baseline/s<k>, each with the
`benchmark.json` run.py writes after a run). For every finished (variant, seed),
`raw/NAME/<variant>/seed<k>.json` keeps the run's settings, its final greedy evaluation (with the
CPU and wall seconds and the load average run.py recorded), the greedy evaluation every
`eval_interval` updates and the training return of every update; checkpoints stay behind.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RAW = Path(__file__).resolve().parent / "raw"
SETTINGS = ("agent", "env", "seed", "baseline", "steps", "episodes_per_update", "hidden_dims", "actor_lr",
            "actor_lr_schedule", "value_lr", "discount", "normalize_advantages", "eval_episodes", "eval_interval")


def raw_record(run_dir: Path) -> dict:
    record = json.loads((run_dir / "benchmark.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {
        "settings": {key: record["config"][key] for key in SETTINGS},
        "summary": record["summary"],
        "evaluations": [[row["step"], row["eval/return_mean"]] for row in rows if "eval/return_mean" in row],
        "training_return": [[row["step"], row["rollout/return_mean"]] for row in rows if "rollout/return_mean" in row],
    }


def collect(out: Path, name: str) -> None:
    for record_path in sorted(out.glob("*/s*/benchmark.json")):
        run_dir = record_path.parent
        target = RAW / name / run_dir.parent.name / f"seed{run_dir.name.removeprefix('s')}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(raw_record(run_dir)) + "\n")


if __name__ == "__main__":
    collect(Path(sys.argv[1]), sys.argv[2])
