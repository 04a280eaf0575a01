"""Gather this study's runs into small raw files and its tables.

    python studies/iql_maze2d/collect.py RUNS_ROOT BUDGET

RUNS_ROOT holds the run directories the commands in README.md write (RUNS_ROOT/<arm>/...). For
every arm and seed, `raw/<BUDGET>/<arm>/seed<k>.json` keeps the run's settings, its final summary and its
curves (evaluation score, D4RL score and success at every evaluation; the critic's mean Q on
batches at every logged chunk); `tables.md` is rebuilt from those raw files alone, so
`python studies/iql_maze2d/collect.py --tables` re-derives it with no run directory present.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from offrl.envs.scores import d4rl_maze2d_ref_scores

HERE = Path(__file__).resolve().parent
RAW = HERE / "raw"
SETTINGS = ("agent", "dataset", "steps", "hidden_dims", "batch_size", "expectile", "temperature", "bc_weight",
            "actor_lr_schedule", "normalize_observations", "layer_norm", "reward_shift", "policy_head", "alpha")


def d4rl_score(returns: float, dataset: str) -> float:
    """D4RL's normalization of a return (offrl.envs.scores.d4rl_maze2d_ref_scores): runs from
    before `d4rl_normalized_score` was logged convert the same way."""
    low, high = d4rl_maze2d_ref_scores(dataset)
    return 100.0 * (returns - low) / (high - low)


def seed_dirs(arm_dir: Path) -> dict[str, list[Path]]:
    """{member name ('' or 'temperature=3'): [seed run directories]}."""
    members: dict[str, list[Path]] = {}
    for summary in sorted(arm_dir.rglob("seed*/summary.json")):
        member = summary.parent.parent.relative_to(arm_dir).as_posix()
        members.setdefault("" if member == "." else member, []).append(summary.parent)
    return members


def raw_record(seed_dir: Path) -> dict:
    config = json.loads((seed_dir / "config.json").read_text())
    summary = json.loads((seed_dir / "summary.json").read_text())
    rows = [json.loads(line) for line in (seed_dir / "metrics.jsonl").read_text().splitlines()]
    evaluations = [
        {"step": row["step"], "normalized_score": row["eval/normalized_score"], "d4rl_normalized_score": d4rl_score(row["eval/return_mean"], config["dataset"]),
         "success_rate": row["eval/success_rate"]}
        for row in rows if "eval/normalized_score" in row
    ]
    mean_q = [[row["step"], row["train/critic/q"]] for row in rows if "train/critic/q" in row]
    return {
        "settings": {key: config.get(key) for key in SETTINGS if key in config},
        "summary": {key: summary[key] for key in ("normalized_score", "return_mean", "success_rate", "episodes", "steps", "seed")},
        "d4rl_normalized_score": d4rl_score(summary["return_mean"], config["dataset"]),
        "evaluations": evaluations,
        "mean_q": mean_q,
    }


def collect(runs_root: Path, budget: str) -> None:
    for arm_dir in sorted(path for path in runs_root.iterdir() if path.is_dir()):
        for member, directories in seed_dirs(arm_dir).items():
            name = arm_dir.name + (f"/{member}" if member else "")
            for directory in directories:
                target = RAW / budget / name / f"{directory.name}.json"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(raw_record(directory), indent=1) + "\n")


def spread(values: list[float]) -> str:
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def tables() -> str:
    lines = ["| arm | updates | seeds | normalized score | D4RL-normalized | success | mean Q at the end | per seed (score) |",
             "|---|---|---|---|---|---|---|---|"]
    for arm in sorted({path.parent for path in RAW.rglob("seed*.json")}):
        records = [json.loads(path.read_text()) for path in sorted(arm.glob("seed*.json"))]
        scores = [record["summary"]["normalized_score"] for record in records]
        q = [record["mean_q"][-1][1] for record in records if record["mean_q"]]
        lines.append(
            f"| {arm.relative_to(RAW).as_posix()} | {records[0]['summary']['steps']} | {len(records)} | {spread(scores)} | "
            f"{spread([record['d4rl_normalized_score'] for record in records])} | "
            f"{np.mean([record['summary']['success_rate'] for record in records]):.2f} | "
            f"{spread(q) if q else '-'} | {', '.join(f'{score:.1f}' for score in scores)} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--tables"]:
        collect(Path(sys.argv[1]), sys.argv[2])
    (HERE / "tables.md").write_text(tables())
    print((HERE / "tables.md").read_text())
