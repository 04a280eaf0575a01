"""The benchmarks' quick modes run end to end (their numbers are the benchmarks' business).

The studies' scripts are tested in tests/test_studies.py."""

from __future__ import annotations

import json

import pytest

from benchmarks import fb_zero_shot


@pytest.mark.slow
def test_fb_zero_shot_quick(tmp_path):
    assert fb_zero_shot.main(["--quick", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["goal_reaching"]["per_cell"]) == 7  # every free cell of umaze is a goal
    assert {"goal_met", "dense_met", "dense_met_centred"} <= set(results["targets"])
    assert (tmp_path / "value_map.png").stat().st_size > 0
