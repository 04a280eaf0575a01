"""The benchmarks' quick modes run end to end (their numbers are the benchmarks' business).

The studies' scripts are tested in tests/test_studies.py."""

from __future__ import annotations

import json

import pytest

from benchmarks import fb_update_cost, fb_zero_shot


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
