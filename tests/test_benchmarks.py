"""The benchmarks' quick modes run end to end (their numbers are the benchmarks' business).

The extraction study's tiny version runs in tests/test_notebooks.py, through
notebooks/policy_extraction.ipynb."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import extraction_study  # noqa: E402
import fb_gridworld  # noqa: E402
import fb_zero_shot  # noqa: E402


@pytest.mark.slow
def test_fb_zero_shot_quick(tmp_path):
    assert fb_zero_shot.main(["--quick", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["goal_reaching"]["per_cell"]) == 7  # every free cell of umaze is a goal
    assert {"goal_met", "dense_met", "dense_met_centred"} <= set(results["targets"])
    assert (tmp_path / "value_map.png").stat().st_size > 0


def test_fb_gridworld_table_learns_goal_reaching():
    from offrl.buffer import ReplayBuffer
    from offrl.envs.gridworld import GridWorld, collect_uniform_dataset

    env = GridWorld()
    buffer = ReplayBuffer.from_transitions(collect_uniform_dataset(env, num_steps=50_000, seed=0))
    first, second = fb_gridworld.table_checkpoints(env, buffer, updates=1000, every=500, learning_rate=0.03)
    assert 0.0 <= first < second and second > 0.35  # 0.25 then 0.43 when measured


def test_extraction_study_narrows_the_sweep_file():
    args = extraction_study.parse_args(["--quick", "--noises", "0.0,1.0"])
    settings = extraction_study.StudySettings.from_args(args)
    sweep = extraction_study.study_sweep(settings)
    assert sweep["program"] == "scripts/train.py"
    assert sweep["parameters"]["agent"]["values"] == list(extraction_study.METHODS)
    assert sweep["parameters"]["dataset"]["values"] == [
        "offrl/maze2d/umaze-noise0p0-steps100000-v0", "offrl/maze2d/umaze-noise1p0-steps100000-v0"]
    sets = extraction_study.study_sets(settings)
    assert sets["num_seeds"] == "2" and sets["eval_interval"] == sets["steps"]
