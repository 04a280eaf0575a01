"""Fault injection (issue 36): a damaged checkpoint is detected and passed over, a kill -9 during a
checkpoint write resumes bit-identically, a run directory has one writer, a damaged dataset file
and a batch larger than the dataset each end in one line. The kill -9 tests start a process each
and are marked slow (`pytest -m slow tests/test_faults.py`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from offrl import checkpoint as ckpt
from offrl.cli import main_guard
from offrl.experiment import load_data, resolve, restore_run
from offrl.runner import run
from offrl.sources import DatasetSource

from test_train import leaves, tiny_config

REPO = Path(__file__).resolve().parents[1]
from offrl.cli import evaluate as evaluate_script
from offrl.cli import make_dataset as make_dataset_script
from offrl.cli import train as train_script

# Checkpoints at 100, 200, 300 (all scored); the full run is 400 updates.
SETTINGS = {"agent": "iql-ddpg", "steps": 400, "checkpoint_interval": 100, "eval_interval": 100, "hidden_dims": [16, 16]}
# One file of each kind orbax and offrl write into a step directory (a glob, the first match is damaged).
CHECKPOINT_FILES = [
    "_CHECKPOINT_METADATA", "commit_success.txt", "meta/metadata", "state/_METADATA", "state/_sharding",
    "state/array_metadatas/process_0", "state/manifest.ocdbt", "state/d/*", "state/ocdbt.process_0/manifest.ocdbt",
    "state/ocdbt.process_0/d/*", ckpt.MANIFEST,
]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def killed_run(small_umaze_id, tmp_path_factory) -> Path:
    """A run stopped after its checkpoint at 300 of 400 updates."""
    run_dir = tmp_path_factory.mktemp("faults") / "killed"
    assert run(tiny_config(small_umaze_id, run_dir, **SETTINGS), stop_after=300, progress=False) == {}
    return run_dir


@pytest.fixture(scope="module")
def reference(killed_run, tmp_path_factory) -> list[np.ndarray]:
    """The final state of a resume from step 200 when step 300 never existed."""
    run_dir = shutil.copytree(killed_run, tmp_path_factory.mktemp("faults") / "reference")
    shutil.rmtree(run_dir / "checkpoints" / "300")
    run(resolve({"resume": str(run_dir)}), progress=False)
    return leaves(restore_run(run_dir, data=False)[0])


def damaged_copy(run_dir: Path, target: Path, step: int, pattern: str) -> tuple[Path, str]:
    """A copy of the run whose checkpoint `step` has the file `pattern` cut to half its size."""
    copy = shutil.copytree(run_dir, target)
    step_dir = copy / "checkpoints" / str(step)
    path = sorted(step_dir.glob(pattern))[0]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return copy, str(path.relative_to(step_dir))


def offrl_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(("offrl:", "error:"))]


@pytest.mark.parametrize("pattern", CHECKPOINT_FILES)
def test_each_damaged_file_of_the_latest_checkpoint_is_named_and_passed_over(killed_run, tmp_path, capsys, pattern):
    copy, name = damaged_copy(killed_run, tmp_path / "run", 300, pattern)
    assert ckpt.find_checkpoint(copy) == ((copy / "checkpoints").resolve(), 200)
    lines = offrl_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "checkpoint step 300" in lines[0] and name in lines[0], lines
    assert lines[0].endswith("using step 200, the newest intact checkpoint")
    # Asked for by its path, the damaged step is an error naming it, not a fallback.
    with pytest.raises(ckpt.DamagedCheckpointError, match=f"checkpoint step 300 .*{name}"):
        ckpt.find_checkpoint(copy / "checkpoints" / "300")


def test_best_falls_back_to_the_best_intact_checkpoint(killed_run, tmp_path, capsys):
    directory = killed_run / "checkpoints"
    ranked = sorted(((ckpt.read_meta(directory, step)["score"], step) for step in (100, 200, 300)), reverse=True)
    best, second = ranked[0][1], ranked[1][1]
    copy, name = damaged_copy(killed_run, tmp_path / "run", best, "state/d/*")
    capsys.readouterr()
    assert ckpt.find_checkpoint(copy, "best")[1] == second
    lines = offrl_lines(capsys.readouterr().err)
    assert len(lines) == 1 and f"checkpoint step {best}" in lines[0] and lines[0].endswith(f"using step {second}, the best intact checkpoint")


def test_evaluate_falls_back_in_one_line_and_fails_in_one_when_nothing_is_intact(killed_run, tmp_path, capsys):
    copy, _ = damaged_copy(killed_run, tmp_path / "run", 300, "state/d/*")
    out = tmp_path / "eval.json"
    assert main_guard(lambda: evaluate_script.main([str(copy), "--json", str(out)])) == 0
    assert json.loads(out.read_text())["step"] == 200
    assert len(offrl_lines(capsys.readouterr().err)) == 1
    for step in (100, 200):
        path = sorted((copy / "checkpoints" / str(step) / "state").glob("d/*"))[0]
        path.write_bytes(path.read_bytes()[:10])
    assert main_guard(lambda: evaluate_script.main([str(copy)])) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no intact checkpoint in") and "\n" not in err and "checkpoint step 100" in err


@pytest.mark.parametrize("pattern", ["state/d/*", "meta/metadata"])
def test_resume_past_a_damaged_latest_checkpoint_is_bit_identical(killed_run, reference, tmp_path, capsys, pattern):
    copy, name = damaged_copy(killed_run, tmp_path / "run", 300, pattern)
    capsys.readouterr()
    assert main_guard(lambda: train_script.main(["--resume", str(copy)])) == 0
    lines = offrl_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "checkpoint step 300" in lines[0] and name in lines[0], lines
    assert "resuming from step 200, the newest intact checkpoint" in lines[0]
    for a, b in zip(leaves(restore_run(copy, data=False)[0]), reference):
        np.testing.assert_array_equal(a, b)
    assert ckpt.damage(copy / "checkpoints", 300) is None, "step 300 was written again, whole"


KILLED_WRITE = """
import json, os, random, signal, sys, threading, time
from offrl import checkpoint as ckpt
from offrl.runner import run

config, point, seed = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
save = ckpt.Checkpointer.save

def die(*args):
    os.kill(os.getpid(), signal.SIGKILL)

def killed_save(self, step, *args, **kwargs):
    if step == 300 and point == "before-manifest":
        ckpt.write_manifest = die
    elif step == 300:  # somewhere in the first 0.4 s of the save: orbax's write, its commit, the manifest, or after
        threading.Timer(random.Random(seed).uniform(0.0, 0.4), die).start()
    save(self, step, *args, **kwargs)
    if step == 300:
        time.sleep(60)

ckpt.Checkpointer.save = killed_save
run(config, progress=False)
"""


def kill_during_save_then_resume(small_umaze_id, run_dir: Path, point: str, seed: int) -> list[np.ndarray]:
    config = tiny_config(small_umaze_id, run_dir, **SETTINGS)
    process = subprocess.run([sys.executable, "-c", KILLED_WRITE, json.dumps(config), point, str(seed)], env=ENV,
                             cwd=REPO, capture_output=True, text=True, timeout=300)
    assert process.returncode == -signal.SIGKILL, process.stderr[-2000:]
    assert main_guard(lambda: train_script.main(["--resume", str(run_dir)])) == 0
    return leaves(restore_run(run_dir, data=False)[0])


@pytest.mark.slow  # a process of its own: ~30 s on 2 busy cores
def test_kill_before_the_manifest_is_detected_and_resumes_bit_identically(small_umaze_id, reference, tmp_path, capsys):
    final = kill_during_save_then_resume(small_umaze_id, tmp_path / "run", "before-manifest", 0)
    lines = offrl_lines(capsys.readouterr().err)
    assert len(lines) == 1 and f"{ckpt.MANIFEST} is missing (the save was cut short)" in lines[0], lines
    for a, b in zip(final, reference):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_kill_at_a_random_point_of_a_checkpoint_write_resumes_bit_identically(small_umaze_id, reference, tmp_path, seed):
    final = kill_during_save_then_resume(small_umaze_id, tmp_path / "run", "random", seed)
    for a, b in zip(final, reference):
        np.testing.assert_array_equal(a, b)
    assert not list((tmp_path / "run" / "checkpoints").glob("*.orbax-checkpoint-tmp*")), "a killed write's leftovers are cleaned"


HOLD = """
import sys, time
from offrl import checkpoint as ckpt
with ckpt.run_dir_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_writer_is_refused_before_it_writes_and_a_killed_holder_leaves_no_lock(small_umaze_id, tmp_path, capsys):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], env=ENV, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        argv = ["--agent", "iql-ddpg", f"--dataset={small_umaze_id}", "--steps", "100", "--run-dir", str(run_dir),
                "--hidden_dims", "16,16", "--batch_size", "64", "--eval_episodes", "2"]
        assert main_guard(lambda: train_script.main(argv)) == 1
        err = capsys.readouterr().err.strip()
        assert err == (f"error: run directory {run_dir} is in use by process {holder.pid} (lock {run_dir / ckpt.LOCK_FILE}); "
                       "wait for it to end or give another --run-dir")
        assert [path.name for path in run_dir.iterdir()] == [ckpt.LOCK_FILE], "nothing but the lock was written"
    finally:
        holder.kill()
        holder.wait()
    # The holder died with its lock: the next writer takes it (and records its own PID).
    with ckpt.run_dir_lock(run_dir):
        assert (run_dir / ckpt.LOCK_FILE).read_text().strip() == str(os.getpid())


@pytest.mark.parametrize("file, damage", [("data/main_data.hdf5", "truncate"), ("data/main_data.hdf5", "zero"),
                                          ("data/metadata.json", "truncate")])
def test_a_damaged_dataset_file_names_the_dataset_and_the_rebuild_command(tmp_path, capsys, file, damage):
    from minari.storage.datasets_root_dir import get_dataset_path

    from offrl.data import load_dataset
    from offrl.data.pointmaze import ensure_maze_dataset, maze2d_dataset_id

    dataset_id = maze2d_dataset_id("umaze", steps=700)  # its own id: other tests read the shared small dataset
    ensure_maze_dataset(dataset_id, progress=False)
    rows = load_dataset(dataset_id)[0].observations
    path = get_dataset_path(dataset_id) / file
    data = path.read_bytes()
    half = len(data) // 2
    path.write_bytes(data[:half] if damage == "truncate" else data[:half] + bytes(len(data) - half))
    capsys.readouterr()
    argv = ["--agent", "iql-ddpg", f"--dataset={dataset_id}", "--steps", "10", "--run-dir", str(tmp_path / "run")]
    assert main_guard(lambda: train_script.main(argv)) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: dataset {dataset_id!r} is damaged: {path}") and "\n" not in err
    assert err.endswith(f"rebuild it with `python scripts/make_dataset.py {dataset_id} --force`")
    assert not (tmp_path / "run").exists()

    assert make_dataset_script.main([dataset_id, "--force"]) == 0
    np.testing.assert_array_equal(load_dataset(dataset_id)[0].observations, rows)


def test_a_damaged_dataset_file_is_one_line_from_the_command_line_too(tmp_path):
    """The whole process: no traceback, no HDF5 diagnostics, only the error line (with the traceback under OFFRL_DEBUG=1)."""
    from minari.storage.datasets_root_dir import get_dataset_path

    from offrl.data.pointmaze import ensure_maze_dataset, maze2d_dataset_id

    store = tmp_path / "store"
    env = {**ENV, "MINARI_DATASETS_PATH": str(store)}
    os.environ["MINARI_DATASETS_PATH"], saved = str(store), os.environ["MINARI_DATASETS_PATH"]
    try:
        dataset_id = maze2d_dataset_id("umaze", steps=600)
        ensure_maze_dataset(dataset_id, progress=False)
        path = get_dataset_path(dataset_id) / "data" / "main_data.hdf5"
    finally:
        os.environ["MINARI_DATASETS_PATH"] = saved
    path.write_bytes(path.read_bytes()[:1000])
    command = [sys.executable, "scripts/train.py", f"--dataset={dataset_id}", "--steps", "10", "--run-dir", str(tmp_path / "run")]
    process = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert process.returncode == 1
    assert process.stderr.strip().startswith(f"error: dataset {dataset_id!r} is damaged") and "\n" not in process.stderr.strip()
    debug = subprocess.run(command, env={**env, "OFFRL_DEBUG": "1"}, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert "Traceback" in debug.stderr


def test_a_batch_larger_than_the_dataset_warns_that_it_samples_with_replacement(small_umaze_id, tmp_path, capsys):
    experiment = load_data(tiny_config(small_umaze_id, tmp_path / "run", batch_size=100_000))
    capsys.readouterr()
    DatasetSource(experiment)
    err = capsys.readouterr().err.strip()
    rows = len(experiment.transitions)
    assert err == (f"offrl: warning: batch_size 100000 is larger than the {rows} rows of {small_umaze_id}; "
                   "batches sample rows with replacement, so each repeats rows")
    assert not (tmp_path / "run").exists()
