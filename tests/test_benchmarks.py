"""The benchmarks' quick modes run end to end (their numbers are the benchmarks' business).

The extraction study's tiny version runs in tests/test_notebooks.py, through
notebooks/policy_extraction.ipynb; here its planning, budget check, plateau and claim
verdicts are checked on made-up numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import extraction_study, fb_gridworld, fb_update_cost, fb_zero_shot


def test_fb_update_cost_times_both_agents(capsys):
    """One width and batch, one round: a table row with both agents' times and their ratio,
    and the breakdown of FB's update."""
    assert fb_update_cost.main(["--dataset-steps", "5000", "--widths", "32", "--batches", "64", "--updates", "4", "--chunk", "2",
                                "--rounds", "1", "--breakdown"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| 32 | 64 |"))
    cells = [cell.strip().strip("*x") for cell in row.strip("|").split("|")]
    assert all(float(cell) > 0 for cell in cells[2:])
    assert float(cells[7]) == pytest.approx(float(cells[6]) / float(cells[5]), rel=0.05, abs=0.02)  # CPU ratio = FB / IQL
    for part in ("target", "fb grad", "measure (N x N)", "actor grad", "full update"):
        assert part in out


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


def test_extraction_study_plans_one_process_per_dataset_and_extraction(tmp_path):
    args = extraction_study.parse_args(["--quick", "--noises", "0.0,1.0"])
    settings = extraction_study.StudySettings.from_args(args)
    specs = extraction_study.study_specs(settings, tmp_path)
    # 2 families x 2 noises x 4 processes (DDPG+BC and pure DDPG share one, batched over bc_weight)
    assert len(specs) == 16
    ddpg = next(spec for spec in specs if spec.name == "pointmaze_umaze_noise1_ddpg")
    assert ddpg.params == {"agent": "iql-ddpg", "dataset": "offrl/pointmaze/umaze-noise1p0-steps100000-v1",
                           "vmap": "bc_weight=0.1,0.0"}
    # the seed directories train.py writes for that --vmap, where the runner looks for checkpoints
    assert [m.run_dir.relative_to(ddpg.run_dir).as_posix() for m in ddpg.members] == [
        "bc_weight=0.1/seed0", "bc_weight=0.1/seed1", "bc_weight=0.0/seed0", "bc_weight=0.0/seed1"]
    bins = next(spec for spec in specs if spec.name == "maze2d_umaze_noise0_dawr-bins")
    assert bins.params == {"agent": "iql-dawr", "dataset": "offrl/maze2d/umaze-noise0p0-steps100000-v0", "tokenizer": "bins"}
    sets = extraction_study.study_sets(settings)
    assert sets["num_seeds"] == "2" and int(sets["eval_interval"]) * 10 == int(sets["steps"])


def test_extraction_study_refuses_a_second_budget_in_one_directory(tmp_path):
    first = extraction_study.StudySettings.from_args(extraction_study.parse_args(["--quick"]))
    (tmp_path / "settings.json").write_text(json.dumps(first.budget()))
    extraction_study.check_budget(first, tmp_path)  # the same budget (e.g. more noise levels) is fine
    second = extraction_study.StudySettings.from_args(extraction_study.parse_args(["--quick", "--steps", "4000"]))
    with pytest.raises(ValueError, match="steps 3000 -> 4000"):
        extraction_study.check_budget(second, tmp_path)


def test_plateau_tells_a_flat_curve_from_a_rising_one():
    steps = np.arange(1, 11) * 1000
    flat_step, late = extraction_study.plateau(steps, np.array([0, 5, 8, 9.5, 10, 10, 10.1, 10, 9.9, 10.0]))
    assert flat_step == 4000 and late < extraction_study.FLAT_TOLERANCE
    flat_step, late = extraction_study.plateau(steps, np.linspace(0, 1, 10))
    assert flat_step == 10000 and late > 0.2


def cell(method: str, noise: float, score: float, spread: float, **extra: float) -> dict:
    return {"family": "maze2d", "maze": "umaze", "noise": noise, "method": method, "normalized_score": score,
            "normalized_score_std": spread, **extra}


def test_extraction_claims_are_read_off_the_numbers():
    cells = [
        cell("awr", 0.0, 50, 2, policy_std=0.45, policy_std_std=0.01),
        cell("ddpg-bc", 0.0, 40, 2, clip_score=41, clip_score_std=2),
        cell("ddpg-pure", 0.0, 10, 2, clip_score=30, clip_score_std=2),
        cell("awr", 0.5, 50, 2, policy_std=0.45, policy_std_std=0.01),
        cell("awr", 1.0, 50, 2, policy_std=0.6, policy_std_std=0.01),
        cell("ddpg-bc", 1.0, 70, 2, clip_score=70, clip_score_std=2),
        cell("dawr-kmeans", 1.0, 51, 2),
        cell("dawr-bins", 1.0, 60, 2),
    ]
    verdicts = {row["claim"].split(" (")[0].split(" on ")[0]: row["verdict"] for row in extraction_study.claims(cells)}
    assert verdicts == {
        "AWR's std settles near 0.4": "reproduced",
        "DDPG(+BC) and dAWR beat AWR": "mixed",  # DDPG+BC and bins win, k-means ties (51 vs 50 within 2.8)
        "AWR beats DDPG": "reproduced",
        "tanh vs clip at evaluation does not matter": "mixed",  # pure DDPG 10 vs 30
    }


RECORDED_STUDIES = sorted((Path(__file__).resolve().parent.parent / "docs" / "results" / "extraction_study").iterdir())


@pytest.mark.parametrize("directory", RECORDED_STUDIES, ids=lambda directory: directory.name)
def test_recorded_extraction_study_tables_are_what_the_code_writes(directory: Path, tmp_path: Path):
    """The committed studies that the notebook and docs/extraction_study_v2.md show: their tables
    and claims are regenerated from their results.json by today's code, so a changed verdict rule
    or table format cannot leave a stale recorded table behind (rerun write_tables / write_claims)."""
    results = extraction_study.load_results(directory)
    cells = [result["cell"] for result in results]
    settings = json.loads((directory / "settings.json").read_text())
    assert {(c["family"], c["maze"], c["noise"], c["method"]) for c in cells} == {
        (family, maze, noise, method) for family in settings["families"] for maze in settings["mazes"]
        for noise in settings["noises"] for method in settings["methods"]}
    assert {c["steps"] for c in cells} == {settings["steps"]}
    assert extraction_study.write_tables(cells, tmp_path) + "\n" == (directory / "results.md").read_text()
    assert extraction_study.write_claims(cells, tmp_path) == (directory / "claims.md").read_text()
