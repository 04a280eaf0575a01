"""The shared loop end to end on a small built-in dataset: scripts, resume, NaN stop, errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from offrl import config as cfg
from offrl.experiment import resolve, restore_run
from offrl.runner import NonFiniteLossError, run

from offrl.cli import evaluate as evaluate_script
from offrl.cli import train as train_script

TINY = {
    "hidden_dims": [32, 32],
    "batch_size": 64,
    "updates_per_call": 100,
    "eval_episodes": 3,
    "wandb.mode": "disabled",
}


def tiny_config(dataset: str, run_dir: Path, **overrides) -> dict:
    return resolve({"dataset": dataset, "run_dir": str(run_dir), **TINY, **overrides})


def leaves(state) -> list[np.ndarray]:
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(state)]


def test_resume_after_kill_matches_uninterrupted_run(small_umaze_id, tmp_path):
    settings = {"agent": "iql-ddpg", "steps": 400, "checkpoint_interval": 100, "eval_interval": 200}
    full = run(tiny_config(small_umaze_id, tmp_path / "full", **settings), progress=False)
    killed_dir = tmp_path / "killed"
    assert run(tiny_config(small_umaze_id, killed_dir, **settings), stop_after=300, progress=False) == {}
    assert not (killed_dir / "summary.json").exists()
    resumed = run(resolve({"resume": str(killed_dir)}), progress=False)
    assert resumed["return_mean"] == full["return_mean"]
    full_state, _, full_step = restore_run(tmp_path / "full")
    resumed_state, _, resumed_step = restore_run(killed_dir)
    assert full_step == resumed_step == 400
    for a, b in zip(leaves(full_state), leaves(resumed_state)):
        np.testing.assert_array_equal(a, b)


def test_train_and_evaluate_scripts(small_umaze_id, tmp_path):
    run_dir = tmp_path / "run"
    argv = ["--agent", "iql-awr", f"--dataset={small_umaze_id}", "--steps", "200", "--eval-interval", "100", "--run-dir", str(run_dir)]
    for key, value in TINY.items():
        argv += [f"--{key}={','.join(map(str, value)) if isinstance(value, list) else value}"]
    assert train_script.main(argv) == 0
    for name in ("config.json", "metrics.jsonl", "summary.json", "checkpoints/200/state", "checkpoints/200/meta"):
        assert (run_dir / name).exists(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    for field in ("return_mean", "return_std", "normalized_score", "success_rate", "episodes", "steps",
                  "updates_per_second", "wall_seconds"):
        assert field in summary, field
    assert summary["steps"] == 200 and summary["episodes"] == 3
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in metrics if "train/critic/loss" in row] == [100, 200]
    assert any("train/actor/policy_std" in row for row in metrics)
    assert list((run_dir / "figures").glob("eval_actions_*.png")), "2-D actions get a scatter plot"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["hidden_dims"] == [32, 32] and config["agent"] == "iql-awr"

    out = tmp_path / "eval.json"
    assert evaluate_script.main([str(run_dir), "--json", str(out)]) == 0
    evaluation = json.loads(out.read_text())
    # Same checkpoint, same evaluation seeds, deterministic policy: the same episodes.
    assert evaluation["return_mean"] == pytest.approx(summary["return_mean"])
    assert evaluation["normalized_score"] == pytest.approx(summary["normalized_score"])


def test_nonfinite_loss_stops_and_keeps_last_checkpoint(small_umaze_id, tmp_path):
    run_dir = tmp_path / "run"
    run(tiny_config(small_umaze_id, run_dir, agent="iql-awr", steps=400, checkpoint_interval=100), stop_after=200,
        progress=False)
    # Make the AWR weights overflow from here on: exp(1e6 * A) with no clipping.
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "temperature": 1e6, "max_weight": float("inf")}))
    with pytest.raises(NonFiniteLossError, match=r"became non-finite at update 2\d\d") as error:
        run(resolve({"resume": str(run_dir)}), progress=False)
    assert "actor/" in str(error.value)  # the first non-finite actor metric
    state, _, step = restore_run(run_dir)
    assert step == 200 and all(np.isfinite(leaf).all() for leaf in leaves(state.agent))


def test_nonfinite_loss_before_the_first_checkpoint_says_none_was_saved(small_umaze_id, tmp_path):
    run_dir = tmp_path / "run"
    config = tiny_config(small_umaze_id, run_dir, agent="iql-awr", steps=400, checkpoint_interval=400,
                         temperature=1e6, max_weight=float("inf"))
    with pytest.raises(NonFiniteLossError, match="no checkpoint was saved") as error:
        run(config, progress=False)
    assert "is kept" not in str(error.value) and "due at update 400" in str(error.value)
    assert not list((run_dir / "checkpoints").glob("[0-9]*"))


def fake_run_dir(tmp_path: Path, *checkpoints: str) -> Path:
    """A run directory with config.json and the given checkpoints/<which>/<step> (the old layout)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"agent": "iql-ddpg"}))
    for which in checkpoints:
        (run_dir / "checkpoints" / which / "200").mkdir(parents=True)
    return run_dir


@pytest.mark.parametrize(
    "checkpoints, flags, message",
    [
        ((), [], "has no checkpoints/ directory: it was deleted or moved, or the run stopped before its first checkpoint"),
        # The layout before self-contained checkpoints: refused, naming the commit that restores it.
        (("best",), [], "{run}/checkpoints holds checkpoints in the layout before self-contained checkpoints"),
        (("latest",), ["--best"], "check out a44c0e9 to use it there"),
    ],
)
def test_evaluate_says_which_checkpoint_is_missing(tmp_path, capsys, checkpoints, flags, message):
    from offrl.cli import main_guard

    run_dir = fake_run_dir(tmp_path, *checkpoints)
    if not checkpoints:
        assert not (run_dir / "checkpoints").exists()
    assert main_guard(lambda: evaluate_script.main([str(run_dir), *flags])) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert message.format(run=run_dir.resolve()) in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--agent", "sac"], "valid agents: bc, fb, iql-awr, iql-dawr, iql-ddpg"),
        (["--agent", "iql-ddpg", "--expectil", "0.9"], "unknown config key 'expectil'; valid keys:"),
        (["--agent", "iql-ddpg", "--expectile", "high"], "expects float"),
        (["--agent", "iql-ddpg", "--dataset", "offrl/nonexistent-v0"], "offrl/maze2d/umaze-v0"),
        (["--agent", "iql-ddpg", "--dataset", "offrl/pointmaze/umaze-v0"], "use offrl/maze2d/umaze-v0 (fixed target"),
        (["--agent", "iql-ddpg", "--dataset", "missing.hdf5"], "missing.hdf5"),
        (["--agent", "reinforce", "--env", "CartPole-v1", "--vmap", "actor_lr=0.1,0.2"], "--vmap is for offline agents"),
    ],
)
def test_bad_input_exits_nonzero_with_one_line(argv, message, capsys):
    from offrl.cli import main_guard

    assert main_guard(lambda: train_script.main(argv + ["--wandb.mode", "disabled"])) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert message in err


def test_run_trains_on_given_transitions(small_umaze_id, tmp_path):
    """Relabeled rewards reach the critic: with every reward 10, TD targets are about 10."""
    from offrl.data import load_dataset

    transitions, _ = load_dataset(small_umaze_id)
    relabeled = dataclasses.replace(transitions, rewards=np.full_like(transitions.rewards, 10.0))
    run_dir = tmp_path / "relabeled"
    run(tiny_config(small_umaze_id, run_dir, agent="iql-ddpg", steps=100, eval_episodes=1), transitions=relabeled,
        progress=False)
    targets = [row["train/critic/td_target"] for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
               if "train/critic/td_target" in row]
    assert targets and min(targets) > 9.0

    with pytest.raises(cfg.ConfigError, match="observations"):
        narrow = dataclasses.replace(transitions, observations=transitions.observations[:, :3])
        run(tiny_config(small_umaze_id, tmp_path / "bad"), transitions=narrow, progress=False)
