"""Built-in dataset builds from several processes at once (issue 24): one builds, the others
wait and then use the finished dataset; leftovers of a killed build are cleaned under the lock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import minari
import numpy as np
from minari.storage.datasets_root_dir import get_dataset_path

from offrl.data.pointmaze import BUILD_DIR, build_lock, ensure_maze_dataset, maze2d_dataset_id, pointmaze_dataset_id

REPO = Path(__file__).resolve().parents[1]
BUILD = (
    "import sys; from offrl.data.pointmaze import ensure_maze_dataset; "
    "d = ensure_maze_dataset(sys.argv[1]); print('loaded', d.total_steps, d.total_episodes, flush=True)"
)


def _wait_for(paths: list[Path], text: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(text in path.read_text() for path in paths):
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in every output: {[path.read_text() for path in paths]}")


def test_two_processes_building_one_new_id_both_succeed(tmp_path):
    dataset_id = pointmaze_dataset_id("umaze", noise=0.3, steps=3000)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    outputs = [tmp_path / f"out{i}.txt" for i in range(2)]
    # Holding the lock first makes both processes arrive while a "build" is in progress.
    with build_lock(dataset_id):
        processes = []
        for output in outputs:
            with open(output, "w") as handle:
                command = [sys.executable, "-c", BUILD, dataset_id]
                processes.append(subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO))
        _wait_for(outputs, "waiting for another process that is building")
    codes = [process.wait(timeout=300) for process in processes]
    texts = [output.read_text() for output in outputs]
    assert codes == [0, 0], texts
    assert sum(f"building {dataset_id} (first use)" in text for text in texts) == 1, texts
    loaded = [line for text in texts for line in text.splitlines() if line.startswith("loaded")]
    assert len(loaded) == 2 and loaded[0] == loaded[1] and loaded[0].startswith("loaded 3000 ")

    dataset = minari.load_dataset(dataset_id)
    assert dataset.total_steps == 3000 and sum(len(e) for e in dataset.iterate_episodes()) == 3000
    assert not list((get_dataset_path() / BUILD_DIR).glob(dataset_id.replace("/", "+") + "*"))


def test_leftovers_of_a_killed_build_are_cleaned_while_holding_the_lock():
    dataset_id = maze2d_dataset_id("umaze", noise=0.3, steps=600)
    final = get_dataset_path(dataset_id)
    (final / "data").mkdir(parents=True)  # what an interrupted writer leaves: no metadata.json
    (final / "data" / "main_data.hdf5").write_bytes(b"partial")
    stale = get_dataset_path() / BUILD_DIR / dataset_id.replace("/", "+") / "junk"
    stale.mkdir(parents=True)
    dataset = ensure_maze_dataset(dataset_id, progress=False)
    assert dataset.total_steps == 600 and not stale.exists()
    episodes = list(dataset.iterate_episodes())
    assert [len(episode) for episode in episodes] == [300, 300]
    assert np.isfinite(np.concatenate([episode.rewards for episode in episodes])).all()
