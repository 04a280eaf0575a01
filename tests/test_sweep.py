"""Sweeps: W&B sweep files expand and parse as train.py overrides; the local runner end to end."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from offrl import config as cfg
from offrl import sweep as sw
from offrl.experiment import resolve

REPO = Path(__file__).resolve().parent.parent
SWEEP_FILES = sorted((REPO / "sweeps").glob("*.yaml"))


def test_the_three_sweeps_exist():
    names = {path.stem for path in SWEEP_FILES}
    assert {"policy_extraction", "iql_expectile_temperature", "fb_dimension"} <= names


def test_grid_expansion_is_the_full_product():
    sweep = sw.load_sweep(REPO / "sweeps/policy_extraction.yaml")
    runs = sw.expand(sweep)
    assert len(runs) == 3 * 9 * 3
    assert len({tuple(run.items()) for run in runs}) == len(runs)
    assert {run["agent"] for run in runs} == {"iql-awr", "iql-ddpg", "iql-dawr"}
    assert {run["seed"] for run in runs} == {0, 1, 2}
    specs = sw.plan(sweep, Path("out"), limit=5)
    assert [spec.name for spec in specs][:2] == ["000-agent=iql-awr_dataset=umaze-noise0p0-v0_seed=0",
                                               "001-agent=iql-awr_dataset=umaze-noise0p0-v0_seed=1"]
    assert len(specs) == 5 and specs[0].run_dir == Path("out/runs") / specs[0].name
    assert len(sw.expand(sw.load_sweep(REPO / "sweeps/fb_dimension.yaml"))) == 4 * 3


def test_random_expansion_is_reproducible_and_in_range():
    sweep = {
        "program": "scripts/train.py",
        "method": "random",
        "run_cap": 7,
        "parameters": {
            "agent": {"value": "iql-awr"},
            "seed": {"values": [0, 1, 2]},
            "expectile": {"distribution": "uniform", "min": 0.5, "max": 0.95},
            "temperature": {"distribution": "log_uniform_values", "min": 0.5, "max": 30.0},
            "steps": {"distribution": "int_uniform", "min": 10, "max": 20},
            "tau": {"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.25},
            "batch_size": {"min": 32, "max": 64},  # integer bounds, no distribution: int_uniform
        },
    }
    assert len(sw.expand(sweep)) == 7  # run_cap
    runs = sw.expand(sweep, count=300, seed=1)
    assert runs == sw.expand(sweep, count=300, seed=1)
    assert runs != sw.expand(sweep, count=300, seed=2)
    for run in runs:
        assert run["agent"] == "iql-awr" and run["seed"] in (0, 1, 2)
        assert 0.5 <= run["expectile"] <= 0.95
        assert 0.5 <= run["temperature"] <= 30.0
        assert isinstance(run["steps"], int) and 10 <= run["steps"] <= 20
        assert run["tau"] in (0.0, 0.25, 0.5, 0.75, 1.0)
        assert isinstance(run["batch_size"], int) and 32 <= run["batch_size"] <= 64
    temperatures = [run["temperature"] for run in runs]
    assert sum(t < 3.9 for t in temperatures) > 0.35 * len(runs), "log-uniform: half the mass below the geometric mean"
    assert {run["seed"] for run in runs} == {0, 1, 2} and len({run["steps"] for run in runs}) == 11


@pytest.mark.parametrize(
    "method, parameters, message",
    [
        ("bayes", {"seed": {"values": [0]}}, "cannot run offline"),
        ("grid", {"expectile": {"min": 0.5, "max": 0.9}}, "grid sweeps need 'values'"),
        ("random", {"lr": {"distribution": "beta", "min": 0, "max": 1}}, "not supported offline"),
    ],
)
def test_unsupported_sweeps_are_clear_errors(method, parameters, message):
    with pytest.raises(sw.SweepError, match=message):
        sw.expand({"program": "p", "method": method, "parameters": parameters}, count=2)


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda path: path.stem)
def test_wandb_agent_command_line_resolves(path):
    """What `wandb agent` would run for one parameter set parses into a valid config."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    sweep = yaml.safe_load(path.read_text())
    assert sweep["command"] == ["${env}", "${interpreter}", "${program}", "${args}"]
    assert (REPO / sweep["program"]).is_file()
    assert sweep["metric"] == {"name": "normalized_score", "goal": "maximize"}
    params = sw.expand(sweep, count=1, seed=3)[-1]
    wandb_args = create_sweep_command_args({"args": {key: {"value": value} for key, value in params.items()}})["args"]
    assert wandb_args == sw.format_args(params)
    config = resolve(cfg.parse_overrides(wandb_args))
    for key, value in params.items():
        assert config[key] == pytest.approx(value) if isinstance(value, float) else config[key] == value


def test_interrupted_runs_resume_from_their_checkpoint(tmp_path):
    sweep = {"program": "scripts/train.py", "method": "grid", "parameters": {"seed": {"values": [0]}}}
    spec = sw.plan(sweep, tmp_path)[0]
    fresh = sw.build_command(sweep, spec, {"steps": "100"}, "disabled")
    assert fresh[0] == sys.executable and fresh[1] == str(REPO / "scripts/train.py")
    assert fresh[2:] == ["--wandb.mode=disabled", "--seed=0", "--steps=100", f"--run_dir={spec.run_dir}"]
    (spec.run_dir / "checkpoints" / "300").mkdir(parents=True)
    (spec.run_dir / "config.json").write_text("{}")
    assert sw.build_command(sweep, spec, {"steps": "100"}, "disabled")[2:] == [f"--resume={spec.run_dir}"]


# What the end-to-end sweeps set on every run: a few seconds of training each.
TINY_SETS = ("steps=100", "hidden_dims=[32,32]", "eval_episodes=2", "eval_interval=100", "updates_per_call=50",
             "batch_size=32", "wandb.mode=disabled")


def write_sweep(path: Path, parameters: dict, **fields) -> Path:
    """A grid sweep file (W&B format) over `parameters`, maximizing the normalized score."""
    path.write_text(yaml.safe_dump({
        "program": "scripts/train.py",
        "method": "grid",
        "metric": {"name": "normalized_score", "goal": "maximize"},
        "parameters": parameters,
        **fields,
    }))
    return path


def tiny_sweep_command(sweep_file: Path, out: Path, *flags: str) -> list[str]:
    """scripts/sweep.py over `sweep_file` with two workers and `TINY_SETS`."""
    command = [sys.executable, str(REPO / "scripts/sweep.py"), str(sweep_file), *flags, "--workers", "2", "--out", str(out)]
    for item in TINY_SETS:
        command += ["--set", item]
    return command


def test_local_sweep_end_to_end(small_umaze_id, tmp_path):
    sweep_file = write_sweep(
        tmp_path / "tiny.yaml",
        {
            "agent": {"values": ["iql-awr", "iql-ddpg", "iql-nope"]},  # the last one must fail
            "dataset": {"value": small_umaze_id},
            "seed": {"values": [0]},
        },
        command=["${env}", "${interpreter}", "${program}", "${args}"],
    )
    out = tmp_path / "out"
    command = tiny_sweep_command(sweep_file, out)

    first = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "1 of 3 runs failed" in first.stderr
    rows = {row["agent"]: row for row in csv.DictReader((out / "results.csv").open())}
    assert set(rows) == {"iql-awr", "iql-ddpg", "iql-nope"}
    for agent in ("iql-awr", "iql-ddpg"):
        assert rows[agent]["status"] == "finished" and rows[agent]["started"] == "new"
        assert float(rows[agent]["steps"]) == 100 and rows[agent]["normalized_score"] != ""
        assert json.loads((Path(rows[agent]["run_dir"]) / "config.json").read_text())["hidden_dims"] == [32, 32]
    assert rows["iql-nope"]["status"] == "failed" and "valid agents" in rows["iql-nope"]["error"]
    assert (out / "summary.png").stat().st_size > 0
    assert first.stdout.count("] finished ") == 2 and "] failed " in first.stdout

    summaries = {agent: Path(rows[agent]["run_dir"]) / "summary.json" for agent in ("iql-awr", "iql-ddpg")}
    mtimes = {agent: path.stat().st_mtime_ns for agent, path in summaries.items()}
    second = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert second.returncode == 1, second.stdout + second.stderr
    assert {agent: path.stat().st_mtime_ns for agent, path in summaries.items()} == mtimes
    rows = {row["agent"]: row for row in csv.DictReader((out / "results.csv").open())}
    assert [rows[agent]["started"] for agent in ("iql-awr", "iql-ddpg")] == ["earlier", "earlier"]
    assert rows["iql-nope"]["status"] == "failed"


def folding_sweep(**parameters) -> dict:
    base = {"agent": {"value": "iql-awr"}, "dataset": {"value": "offrl/maze2d/umaze-v0"},
            "expectile": {"values": [0.6, 0.9]}, "temperature": {"values": [1, 3]},
            "batch_size": {"values": [32, 64]}, "seed": {"values": [0, 1]}}
    return {"program": "scripts/train.py", "method": "grid", "parameters": {**base, **parameters}}


def test_fold_grid_batches_hyperparameters_and_seeds(tmp_path):
    processes = sw.fold_grid(folding_sweep(), tmp_path, {})
    assert len(processes) == 2, "batch_size changes shapes: one process per value"
    assert [process.params["batch_size"] for process in processes] == [32, 64]
    first = processes[0]
    assert first.params["vmap"] == "expectile=0.6,0.9,temperature=1.0,3.0"
    assert first.params["seed"] == 0 and first.params["num_seeds"] == 2
    assert "expectile" not in first.params and "temperature" not in first.params
    assert len(first.members) == 8
    plain = {spec.name: spec for spec in sw.plan(folding_sweep(), tmp_path)}
    member = first.members[3]
    assert member.params == plain[member.name].params, "members are the grid points, named as unfolded"
    assert member.params == {"agent": "iql-awr", "dataset": "offrl/maze2d/umaze-v0", "expectile": 0.6,
                             "temperature": 3, "batch_size": 32, "seed": 1}
    assert member.run_dir == first.run_dir / "expectile=0.6_temperature=3.0" / "seed1"
    # What train.py runs for the process parses into a --vmap config.
    config = resolve(cfg.parse_overrides(sw.format_args(first.params)))
    assert config["vmap"] == first.params["vmap"] and config["num_seeds"] == 2


def test_fold_grid_keeps_what_cannot_be_batched_apart(tmp_path):
    gapped = sw.fold_grid(folding_sweep(seed={"values": [0, 2]}), tmp_path, {})
    assert len(gapped) == 4 and all("num_seeds" not in p.params and p.params["seed"] in (0, 2) for p in gapped)
    mixed = sw.fold_grid(folding_sweep(agent={"values": ["iql-awr", "reinforce"]}), tmp_path, {})
    assert all("vmap" not in p.params and "num_seeds" not in p.params for p in mixed), "reinforce batches nothing"
    assert len(mixed) == len(sw.expand(folding_sweep(agent={"values": ["iql-awr", "reinforce"]})))
    with pytest.raises(sw.SweepError, match="folds grid sweeps"):
        sw.fold_grid({**folding_sweep(), "method": "random"}, tmp_path, {})


def test_folded_process_resumes_only_when_every_member_saved(tmp_path):
    process = sw.fold_grid(folding_sweep(batch_size={"value": 32}), tmp_path, {})[0]
    (process.run_dir).mkdir(parents=True)
    (process.run_dir / "config.json").write_text("{}")
    for member in process.members[:-1]:
        (member.run_dir / "checkpoints" / "100").mkdir(parents=True)
        (member.run_dir / "config.json").write_text("{}")
    assert "--resume" not in " ".join(sw.build_command(folding_sweep(), process, {}, "disabled"))
    last = process.members[-1].run_dir
    (last / "checkpoints" / "100").mkdir(parents=True)
    (last / "config.json").write_text("{}")
    assert sw.build_command(folding_sweep(), process, {}, "disabled")[2:] == [f"--resume={process.run_dir}"]


def test_local_sweep_folded_end_to_end(small_umaze_id, tmp_path):
    sweep_file = write_sweep(tmp_path / "folded.yaml", {
        "agent": {"values": ["iql-awr", "iql-ddpg"]},
        "dataset": {"value": small_umaze_id},
        "expectile": {"values": [0.6, 0.9]},
        "seed": {"values": [0, 1]},
    })
    out = tmp_path / "out"
    command = tiny_sweep_command(sweep_file, out, "--vmap")
    first = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "8 runs of" in first.stdout and "in 2 processes" in first.stdout
    assert sorted(path.name for path in (out / "logs").glob("*.out")) == ["000-agent=iql-awr.out", "001-agent=iql-ddpg.out"]
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 8 and all(row["status"] == "finished" for row in rows)
    for row in rows:
        summary = json.loads((Path(row["run_dir"]) / "summary.json").read_text())
        assert summary["expectile"] == float(row["expectile"]) and summary["seed"] == int(row["seed"])
        assert float(row["steps"]) == 100 and row["normalized_score"] != ""
        assert json.loads((Path(row["run_dir"]) / "config.json").read_text())["agent"] == row["agent"]
    second = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert {row["started"] for row in csv.DictReader((out / "results.csv").open())} == {"earlier"}
