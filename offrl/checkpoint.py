"""Checkpoints with orbax: the whole training state (agent, optimizer, RNG, step, normalizer)
plus the resolved config, so a run can be resumed exactly or evaluated elsewhere.

Two managers per run: `checkpoints/latest` keeps the last few, `checkpoints/best` keeps
the one with the best evaluation score. Restoring builds an abstract state on the current
default device, so a checkpoint written on a GPU restores on a CPU and back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

CONFIG_FILE = "config.json"


def _manager(directory: Path, max_to_keep: int, best: bool) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        best_fn=(lambda metrics: metrics["score"]) if best else None,
        best_mode="max",
        create=True,
        enable_async_checkpointing=False,
    )
    return ocp.CheckpointManager(directory.resolve(), options=options)


class Checkpointer:
    def __init__(self, run_dir: Path, keep: int = 3) -> None:
        self.directory = Path(run_dir) / "checkpoints"
        self.latest = _manager(self.directory / "latest", keep, best=False)
        self.best = _manager(self.directory / "best", 1, best=True)

    def save(self, step: int, state: Any, score: float | None = None) -> None:
        self.latest.save(step, args=ocp.args.StandardSave(state), force=True)
        if score is not None:
            self.best.save(step, args=ocp.args.StandardSave(state), metrics={"score": float(score)}, force=True)
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def abstract_like(state: Any) -> Any:
    """Shapes and dtypes of `state`, placed on the current default device."""
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree_util.tree_map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), state
    )


def _steps(manager_dir: Path) -> list[int]:
    return sorted(int(child.name) for child in manager_dir.iterdir() if child.name.isdigit()) if manager_dir.is_dir() else []


def find_checkpoint(path: str | Path, which: str = "latest") -> tuple[Path, int]:
    """Resolve a run directory or a checkpoint step directory to (manager directory, step).

    A run directory without the requested checkpoint gets an error that says what is there
    instead: no checkpoints/ at all, or only the other of latest/best (with the flag for it)."""
    path = Path(path).resolve()
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints" / which
    elif (path / CONFIG_FILE).is_file():
        seed_dirs = sorted(child.name for child in path.glob("seed*") if (child / "checkpoints").is_dir())
        if seed_dirs:
            raise FileNotFoundError(f"{path} is a multi-seed run; give one seed's directory, e.g. {path / seed_dirs[0]}")
        raise FileNotFoundError(
            f"run directory {path} has no checkpoints/ directory: it was deleted or moved, or the run stopped "
            "before its first checkpoint; nothing to evaluate or resume"
        )
    if path.name in ("latest", "best") and path.parent.name == "checkpoints":
        steps = _steps(path)
        if steps:
            return path, steps[-1]
        other = "best" if path.name == "latest" else "latest"
        if _steps(path.parent / other):
            flag = "--best" if other == "best" else "no --best"
            raise FileNotFoundError(f"no {path.name} checkpoint in {path.parent}, but a {other} one exists: use {flag}")
        raise FileNotFoundError(f"no checkpoint in {path.parent} (neither latest/ nor best/ holds one)")
    if path.name.isdigit() and path.parent.name in ("latest", "best"):
        return path.parent, int(path.name)
    raise FileNotFoundError(
        f"{path} is neither a run directory (with checkpoints/) nor a checkpoint directory "
        "(RUN_DIR/checkpoints/latest/STEP)"
    )


def restore(manager_dir: Path, step: int, target: Any) -> Any:
    """Restore into the structure of `target` (a concrete or abstract state)."""
    manager = ocp.CheckpointManager(Path(manager_dir).resolve())
    try:
        return manager.restore(step, args=ocp.args.StandardRestore(abstract_like(target)))
    finally:
        manager.close()


def run_dir_of(manager_dir: Path) -> Path:
    return Path(manager_dir).resolve().parent.parent


def save_config(run_dir: Path, config: dict[str, Any]) -> None:
    (Path(run_dir) / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True, default=list))


def load_config(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: is {run_dir} a run directory written by scripts/train.py?")
    return json.loads(path.read_text())
