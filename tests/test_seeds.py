"""Seeds as a batch axis: `--num-seeds K` must train and evaluate each seed exactly as K
single-seed runs would, and spread the seeds over several devices when there are several."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from offrl import config as cfg
from offrl.loop import stack_states
from offrl.experiment import resolve, restore_run
from offrl.runner import run

from test_train import leaves, tiny_config

SETTINGS = {"agent": "iql-dawr", "steps": 200, "eval_interval": 200, "num_tokens": 16}


@pytest.fixture(scope="module")
def two_seed_run(small_umaze_id, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("seeds") / "four"
    summary = run(tiny_config(small_umaze_id, run_dir, seed=3, num_seeds=4, **SETTINGS), progress=False)
    return run_dir, summary


def test_num_seeds_matches_single_seed_runs(small_umaze_id, two_seed_run, tmp_path):
    run_dir, summary = two_seed_run
    assert [row["seed"] for row in summary["seeds"]] == [3, 4, 5, 6]
    for index, seed in enumerate((3, 4, 5, 6)):
        single = run(tiny_config(small_umaze_id, tmp_path / f"single{seed}", seed=seed, **SETTINGS), progress=False)
        batched = summary["seeds"][index]
        assert batched["return_mean"] == pytest.approx(single["return_mean"], rel=1e-4, abs=1e-4)
        assert batched["success_rate"] == single["success_rate"]
        # Each seed's directory is a complete run of its own: evaluate.py and resume read it.
        seed_state, _, _ = restore_run(run_dir / f"seed{seed}")
        single_state, _, _ = restore_run(tmp_path / f"single{seed}")
        for a, b in zip(leaves(seed_state), leaves(single_state)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    returns = [row["return_mean"] for row in summary["seeds"]]
    assert summary["return_mean"] == pytest.approx(np.mean(returns))
    assert summary["return_mean_seed_std"] == pytest.approx(np.std(returns, ddof=1))
    assert json.loads((run_dir / "summary.json").read_text())["episodes"] == 4 * 3


def test_seeds_differ(two_seed_run):
    run_dir, _ = two_seed_run
    first, _, _ = restore_run(run_dir / "seed3")
    second, _, _ = restore_run(run_dir / "seed4")
    assert any(not np.array_equal(a, b) for a, b in zip(leaves(first), leaves(second)))


def test_multi_seed_resume_continues_every_seed_exactly(small_umaze_id, two_seed_run, tmp_path):
    run_dir, summary = two_seed_run
    killed = tmp_path / "killed"
    config = tiny_config(small_umaze_id, killed, seed=3, num_seeds=4, checkpoint_interval=100, **SETTINGS)
    assert run(config, stop_after=100, progress=False) == {}
    resumed = run(resolve({"resume": str(killed)}), progress=False)
    assert [row["return_mean"] for row in resumed["seeds"]] == [row["return_mean"] for row in summary["seeds"]]
    for seed in (3, 4, 5, 6):
        for a, b in zip(leaves(restore_run(killed / f"seed{seed}")[0]), leaves(restore_run(run_dir / f"seed{seed}")[0])):
            np.testing.assert_array_equal(a, b)


SHARDED_RUN = textwrap.dedent(
    """
    import json, sys
    import jax
    from offrl.loop import shard_seeds, stack_states
    from offrl.experiment import load_data
    from offrl.runner import run
    from test_train import tiny_config

    assert jax.device_count() == 2, jax.devices()
    dataset, run_dir, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    config = tiny_config(dataset, run_dir, seed=3, num_seeds=4, **settings)
    experiment = load_data(config)
    batch = experiment.transitions[:256].as_dict()
    stacked = shard_seeds(stack_states([experiment.initial_state(batch, seed) for seed in (3, 4, 5, 6)]))
    devices = {len(leaf.sharding.device_set) for leaf in jax.tree_util.tree_leaves(stacked)}
    summary = run(config, progress=False)
    print(json.dumps({"devices": sorted(devices), "returns": [row["return_mean"] for row in summary["seeds"]]}))
    """
)


def test_seeds_shard_over_two_devices(small_umaze_id, two_seed_run, tmp_path):
    _, summary = two_seed_run
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", SHARDED_RUN, small_umaze_id, str(tmp_path / "sharded"), json.dumps(SETTINGS)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["devices"] == [2], "every leaf is split over both devices, two seeds each"
    expected = [row["return_mean"] for row in summary["seeds"]]
    np.testing.assert_allclose(out["returns"], expected, rtol=1e-4, atol=1e-4)


def test_stack_states_puts_seeds_first():
    states = [{"w": np.full((3,), i, np.float32)} for i in range(4)]
    stacked = stack_states(states)
    assert stacked["w"].shape == (4, 3)
    np.testing.assert_array_equal(jax.device_get(stacked["w"])[:, 0], np.arange(4))


def test_train_script_reports_a_multi_seed_summary(two_seed_run):
    run_dir, summary = two_seed_run
    from offrl.cli import train as train_script

    line = train_script.final_line(summary, str(run_dir))
    assert "across 4 seeds" in line and f"over {summary['episodes']} episodes" in line
    single = train_script.final_line(summary["seeds"][0], str(run_dir / "seed3"))
    assert f"+- {summary['seeds'][0]['return_std']:.1f}," in single
