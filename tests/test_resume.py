"""Honest resume: `--resume RUN --steps N` extends a finished or killed run, other changed keys
are applied where safe or refused by name, metrics.jsonl has one row per logged step, the
summary's times cover every process and the last line names the real summary path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from offrl import checkpoint as ckpt
from offrl import config as cfg
from offrl.cli import main_guard
from offrl.experiment import resolve, restore_run
from offrl.runner import run

from test_train import TINY, leaves, tiny_config

from offrl.cli import train as train_script

# A constant actor learning rate: no schedule depends on --steps, so extending a run is
# exactly training longer.
SETTINGS = {"agent": "iql-ddpg", "eval_interval": 100, "checkpoint_interval": 100, "actor_lr_schedule": "constant"}


def train_rows(run_dir: Path) -> list[int]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["step"] for row in rows if "train/critic/loss" in row]


def eval_rows(run_dir: Path) -> list[int]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["step"] for row in rows if "eval/return_mean" in row]


def test_steps_extends_a_finished_run_exactly(small_umaze_id, tmp_path, capsys):
    longer = run(tiny_config(small_umaze_id, tmp_path / "longer", steps=300, **SETTINGS), progress=False)
    extended_dir = tmp_path / "extended"
    run(tiny_config(small_umaze_id, extended_dir, steps=200, **SETTINGS), progress=False)
    capsys.readouterr()
    assert train_script.main(["--resume", str(extended_dir), "--steps", "300"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "resumed from step 200, now training to step 300 (was 200)" in "\n".join(out)
    assert out[-1].endswith(f"-> {extended_dir}/summary.json")
    summary = json.loads((extended_dir / "summary.json").read_text())
    assert summary["steps"] == 300 and summary["return_mean"] == longer["return_mean"]
    assert json.loads((extended_dir / "config.json").read_text())["steps"] == 300
    assert train_rows(extended_dir) == [100, 200, 300] and eval_rows(extended_dir) == [100, 200, 300]
    for a, b in zip(leaves(restore_run(extended_dir)[0]), leaves(restore_run(tmp_path / "longer")[0])):
        np.testing.assert_array_equal(a, b)


def test_schedule_length_change_is_announced(small_umaze_id, tmp_path, capsys):
    run_dir = tmp_path / "cosine"
    run(tiny_config(small_umaze_id, run_dir, steps=100, **{**SETTINGS, "actor_lr_schedule": "cosine"}), progress=False)
    capsys.readouterr()
    run(resolve({"resume": str(run_dir), "steps": 200}), progress=False)
    assert "max_steps is now 200, not 100" in capsys.readouterr().out


def test_killed_run_keeps_one_row_per_step_and_the_whole_time(small_umaze_id, tmp_path):
    run_dir = tmp_path / "killed"
    config = tiny_config(small_umaze_id, run_dir, steps=400, **{**SETTINGS, "checkpoint_interval": 200})
    assert run(config, stop_after=300, progress=False) == {}
    assert train_rows(run_dir) == [100, 200, 300], "the killed process logged past its last checkpoint"
    first = ckpt.read_meta(run_dir / "checkpoints", 200)["timing"]
    summary = run(resolve({"resume": str(run_dir)}), progress=False)
    assert train_rows(run_dir) == [100, 200, 300, 400] and eval_rows(run_dir) == [100, 200, 300, 400]
    final = ckpt.read_meta(run_dir / "checkpoints", 400)["timing"]
    assert final["train_seconds"] > first["train_seconds"] > 0
    assert summary["updates_per_second"] == pytest.approx(400 / final["train_seconds"])
    assert summary["wall_seconds"] > first["wall_seconds"]


@pytest.fixture(scope="module")
def finished_run(small_umaze_id, tmp_path_factory):
    """A finished 200-step run that the refusals below must leave as it is."""
    run_dir = tmp_path_factory.mktemp("resume") / "run"
    run(tiny_config(small_umaze_id, run_dir, steps=200, **SETTINGS), progress=False)
    return run_dir


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--expectile", "0.8"], "expectile is 0.9 in the run but 0.8 was given"),
        (["--seed", "5"], "seed is 0 in the run but 5 was given"),
        (["--dataset", "offrl/maze2d/medium-v0"], "start a new run to change dataset"),
        (["--steps", "100"], "--steps 100 is below step 200 the run has reached"),
        (["--expectil", "0.8"], "unknown config key 'expectil'"),
    ],
)
def test_changed_keys_are_refused_by_name(finished_run, capsys, flags, message):
    run_dir = finished_run
    config_before = (run_dir / "config.json").read_text()
    capsys.readouterr()
    assert main_guard(lambda: train_script.main(["--resume", str(run_dir), *flags])) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert message in err
    assert (run_dir / "config.json").read_text() == config_before


def test_unchanged_and_safe_keys_are_accepted(small_umaze_id, tmp_path):
    run_dir = tmp_path / "run"
    run(tiny_config(small_umaze_id, run_dir, steps=200, **SETTINGS), progress=False)
    saved = ckpt.load_config(run_dir)
    config = resolve({
        "resume": str(run_dir), "expectile": saved["expectile"], "hidden_dims": "32,32", "batch_size": TINY["batch_size"],
        "eval_episodes": 5, "keep_checkpoints": 1, "wandb.mode": "disabled",
    })
    assert config["eval_episodes"] == 5 and config["keep_checkpoints"] == 1
    assert {key: value for key, value in config.items() if key not in ("eval_episodes", "keep_checkpoints", "resume")} == {
        key: value for key, value in saved.items() if key not in ("eval_episodes", "keep_checkpoints", "resume")
    }
    assert run(config, progress=False)["episodes"] == 5
