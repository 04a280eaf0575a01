"""Shared test setup: an isolated Minari store, no wandb, small built-in maze datasets."""

from __future__ import annotations

import os

import pytest

SMALL_UMAZE_STEPS = 5000


@pytest.fixture(scope="session", autouse=True)
def isolated_environment(tmp_path_factory: pytest.TempPathFactory):
    """Point Minari at a per-session temp store (never ~/.minari) and silence wandb."""
    names = ("MINARI_DATASETS_PATH", "WANDB_MODE", "WANDB_SILENT")
    saved = {name: os.environ.get(name) for name in names}
    os.environ["MINARI_DATASETS_PATH"] = str(tmp_path_factory.mktemp("minari_datasets"))
    os.environ["WANDB_MODE"] = "disabled"
    os.environ["WANDB_SILENT"] = "true"
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def small_umaze_id(isolated_environment) -> str:
    """A 5000-step maze2d umaze dataset (fixed target), built once per session into the temp store."""
    from offrl.data.pointmaze import ensure_maze_dataset, maze2d_dataset_id

    dataset_id = maze2d_dataset_id("umaze", steps=SMALL_UMAZE_STEPS)
    ensure_maze_dataset(dataset_id, progress=False)
    return dataset_id


@pytest.fixture(scope="session")
def small_pointmaze_id(isolated_environment) -> str:
    """A 5000-step goal-conditioned pointmaze umaze dataset (v1), built once per session."""
    from offrl.data.pointmaze import ensure_maze_dataset, pointmaze_dataset_id

    dataset_id = pointmaze_dataset_id("umaze", steps=SMALL_UMAZE_STEPS)
    ensure_maze_dataset(dataset_id, progress=False)
    return dataset_id
