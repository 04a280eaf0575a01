"""Same seed, same numbers: tiny runs' final metrics are pinned from the code before the
issue-19 redesign (checkpoints, resume, export), so the redesign is shown to keep results.

The pins (tests/pinned_runs.json) were written by `python tests/test_pinned.py` at main
3ce434c. They hold each run's full agent config as it was then, passed back as explicit
overrides, so a later change of an agent's defaults does not move them; a change that is
meant to alter the numbers (a new loss, a new update order) re-pins with the same command
and says why in its commit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

PINNED = Path(__file__).resolve().parent / "pinned_runs.json"
TINY = {"hidden_dims": [32, 32], "updates_per_call": 100, "eval_episodes": 3, "wandb.mode": "disabled"}
# name -> run settings; offline runs train on the conftest's small umaze dataset.
RUNS: dict[str, dict[str, Any]] = {
    # normalize_observations is a run setting the maze2d preset now turns on; pinned as it was.
    "iql-ddpg": {"agent": "iql-ddpg", "steps": 300, "eval_interval": 150, "batch_size": 64, "normalize_observations": False},
    "iql-dawr": {"agent": "iql-dawr", "steps": 200, "batch_size": 64, "num_tokens": 16, "normalize_observations": True},
    "reinforce": {"agent": "reinforce", "env": "CartPole-v1", "steps": 6, "episodes_per_update": 4, "eval_interval": 3},
}
SUMMARY_KEYS = ("return_mean", "success_rate", "length_mean")


def agent_config_of(name: str, dataset: str) -> dict[str, Any]:
    """The run's full agent config as resolved now, presets included (max_steps is the run's
    length, set by the loop)."""
    from offrl.agents import get_agent
    from offrl.run_config import resolve_config

    settings = {**TINY, **RUNS[name]}
    if "env" not in settings:
        settings["dataset"] = dataset
    config = resolve_config(settings)
    _, defaults = get_agent(settings["agent"])
    return {key: list(config[key]) if isinstance(config[key], tuple) else config[key] for key in defaults if key != "max_steps"}


def final_numbers(name: str, dataset: str, run_dir: Path, agent_config: dict[str, Any]) -> dict[str, float]:
    """The run's final summary metrics and the mean of every training metric over its last chunk."""
    from offrl.run_config import resolve_config
    from offrl.train import run

    settings = {**agent_config, **TINY, **RUNS[name], "run_dir": str(run_dir)}
    if "env" not in settings:
        settings["dataset"] = dataset
    summary = run(resolve_config(settings), progress=False)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [row for row in rows if row["step"] == summary["steps"] and any(key.startswith("train/") for key in row)][-1]
    numbers = {key: float(summary[key]) for key in SUMMARY_KEYS}
    numbers.update({key: float(value) for key, value in last.items() if key.startswith("train/") and key != "train/updates_per_second"})
    return numbers


@pytest.mark.parametrize("name", sorted(RUNS))
def test_same_seed_gives_the_pinned_numbers(name: str, small_umaze_id: str, tmp_path: Path) -> None:
    pinned = json.loads(PINNED.read_text())[name]
    numbers = final_numbers(name, small_umaze_id, tmp_path / name, pinned["agent_config"])
    assert set(numbers) == set(pinned["numbers"])
    for key, value in pinned["numbers"].items():
        # Exact on one machine (XLA on CPU is deterministic); the tolerance allows another CPU's float order.
        assert numbers[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def write_pins() -> None:
    """Run every pinned run with the current code and write tests/pinned_runs.json."""
    import os
    import tempfile

    from offrl.data.pointmaze import ensure_maze_dataset, maze2d_dataset_id

    os.environ.setdefault("WANDB_MODE", "disabled")
    from conftest import SMALL_UMAZE_STEPS

    dataset = maze2d_dataset_id("umaze", steps=SMALL_UMAZE_STEPS)
    ensure_maze_dataset(dataset, progress=False)
    pins = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, settings in RUNS.items():
            agent_config = agent_config_of(name, dataset)
            pins[name] = {"agent_config": agent_config, "numbers": final_numbers(name, dataset, Path(tmp) / name, agent_config)}
    PINNED.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
    print(f"pinned {sorted(pins)} -> {PINNED}")


if __name__ == "__main__":
    write_pins()
