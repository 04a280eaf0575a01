"""Self-contained checkpoints with orbax: the whole training state (agent, optimizer, RNG,
step, normalizer) and, beside it, what restoring needs without the dataset.

Layout: RUN_DIR/checkpoints/<step>/{state, meta, metrics}. One `CheckpointManager` keeps
the latest `keep` steps and the best by evaluation score (a preservation policy: latest N
or best 1), so each checkpoint is written once. `meta` (JSON) holds the agent name, the
resolved config, the shapes of the example batch the agent was built from, the evaluation
env (how to build it, its spaces and reference scores), the step's score and the run's
time so far; so `offrl.experiment.restore_run`, `scripts/evaluate.py`, `offrl.load_policy` and
`scripts/export.py` need only the run directory.

Each step also gets `MANIFEST`, the size and sha256 of each of its files, written once orbax has
committed the step; `damage` checks it, and `find_checkpoint` and a resume use the newest intact
step (the best intact one with --best), saying on stderr which damaged ones they passed over. A
step whose meta promises a manifest that is missing was cut short; steps written before
manifests carry no promise and are used unverified. One process at a time writes a run
directory: `run_dir_lock`.

This is the one format. Older run directories (checkpoints/latest/<step> and
checkpoints/best/<step>, no meta; or meta `format` below `META_FORMAT`) fail with a one-line
`CheckpointFormatError` that names the commit to check out to use them. Restoring builds an abstract
state on the current default device, so a checkpoint written on a GPU restores on a CPU.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator

import jax
import numpy as np
import orbax.checkpoint as ocp

CONFIG_FILE = "config.json"
MANIFEST = "offrl_manifest.json"  # in each step directory: {"files": {path: {"bytes": n, "sha256": hex}}}
LOCK_FILE = "run.lock"  # in the run directory: fcntl-locked by the process writing it, which writes its PID there
# The meta and state layout new checkpoints are written in. 2: self-contained checkpoints;
# 3: agent hyperparameters as state leaves (--vmap, merged in 5826318), so an IQL or FB state of
# format 2 has a different pytree; 4: the agent's config is a pytree in the state, its batchable
# fields leaves (no `hparams`). Bump it with any change that stops older states restoring.
META_FORMAT = 4
LAST_READERS = {2: "5826318^", 3: "9f9ce7d"}  # format -> a commit on main that still restores it
# Before self-contained checkpoints (61afac5) a run kept checkpoints/latest/ and checkpoints/best/;
# a44c0e9 is the last commit on main that still restores them.
LEGACY_MANAGERS = ("latest", "best")
LEGACY_LAYOUT_READER = "a44c0e9"
# Env factories a checkpoint may name (module:function); any other evaluation env is stored
# as its gymnasium EnvSpec. A closed list: a run directory must not be able to import code.
STORABLE_FACTORIES = (
    "offrl.envs:make_env",
    "offrl.envs.pointmaze:make_maze2d_env",
    "offrl.envs.pointmaze:make_pointmaze_env",
    "offrl.online:make_online_env",
)


class CheckpointFormatError(ValueError):
    """A checkpoint in an older layout than this code restores (see `META_FORMAT`)."""


class DamagedCheckpointError(ValueError):
    """A checkpoint whose files do not match its manifest, or no intact checkpoint to use."""


class RunDirInUseError(RuntimeError):
    """Another process holds the run directory's lock."""


def is_older_format(written: int | None) -> bool:
    """Whether a meta's `format` (None: written before formats) predates this code's layout."""
    return written is None or written < META_FORMAT


def old_format_error(run_dir: Path, written: int | None, doing: str) -> CheckpointFormatError:
    """What to do with `run_dir`, whose checkpoints are of format `written` (None: before formats)."""
    reader = LAST_READERS.get(written or 0, "a commit from before the checkpoint format change")
    return CheckpointFormatError(
        f"{run_dir} holds checkpoints of format {written or 'unversioned'}, older than this code's {META_FORMAT} "
        f"(the --vmap state layout), so this code cannot {doing} it: retrain it with a new run, or check out "
        f"{reader} to use it there"
    )


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write through a temporary file and `os.replace`: a reader (e.g. `offrl.sweep`, which
    takes summary.json as "finished") sees the old file or the whole new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as file:
        file.write(content.encode() if isinstance(content, str) else content)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=2, sort_keys=True, default=list))


def _score(metrics: dict[str, float]) -> float:
    return metrics["score"]


def _manager(directory: Path, keep: int) -> ocp.CheckpointManager:
    policy = ocp.checkpoint_managers
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy.AnyPreservationPolicy([
            policy.LatestN(n=keep),
            policy.BestN(get_metric_fn=_score, n=1, keep_checkpoints_without_metrics=False),
        ]),
        create=True,
        enable_async_checkpointing=False,
        # A kill during a save leaves <step>.orbax-checkpoint-tmp-*; the run lock makes it no other writer's.
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(Path(directory).resolve(), options=options)


class Checkpointer:
    """One run directory's checkpoints: `save` writes the state and its meta in one step."""

    def __init__(self, run_dir: Path, keep: int = 3, meta: dict[str, Any] | None = None) -> None:
        self.directory = Path(run_dir) / "checkpoints"
        check_resumable(run_dir)
        self.manager = _manager(self.directory, keep)
        self.meta = dict(meta or {})

    def save(self, step: int, state: Any, score: float | None = None, timing: dict[str, float] | None = None) -> None:
        meta = {**self.meta, "step": int(step), "score": None if score is None else float(score), "timing": timing or {},
                "manifest": MANIFEST}  # the promise that lets `damage` tell a save cut short before its manifest
        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            metrics=None if score is None else {"score": float(score)},
            force=True,
        )
        self.manager.wait_until_finished()
        write_manifest(self.directory / str(step))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def close(self) -> None:
        self.manager.close()


def check_resumable(run_dir: Path) -> None:
    """Refuse to train on in a run directory (or any of its seed directories) in an older layout:
    before self-contained checkpoints, or of an older `META_FORMAT` (training on would mix two
    state layouts even where the older one happens to restore)."""
    for directory in [Path(run_dir), *sorted(Path(run_dir).glob("seed*"))]:
        check_not_legacy(directory / "checkpoints")
        metas = (_readable_meta(directory / "checkpoints", step) for step in reversed(_steps(directory / "checkpoints")))
        meta = next((meta for meta in metas if meta is not None), None)  # a damaged newest step must not hide the format
        if meta is not None and is_older_format(meta.get("format")):
            raise old_format_error(directory, meta.get("format"), "resume")


def saved_step(run_dir: Path) -> int | None:
    """The step a resume of `run_dir` restores: its latest checkpoint, the oldest of its
    seeds' (or --vmap members': <key=value...>[/seed<N>]) latest ones for a batched run; None
    before the first checkpoint."""
    run_dir = Path(run_dir)
    seed_dirs = sorted({*run_dir.glob("seed*/checkpoints"), *run_dir.glob("*=*/checkpoints"), *run_dir.glob("*=*/seed*/checkpoints")})
    latest = [_steps(directory)[-1] if _steps(directory) else None for directory in seed_dirs or [Path(run_dir) / "checkpoints"]]
    return None if None in latest else min(latest)


def check_not_legacy(directory: Path) -> None:
    """Refuse RUN_DIR/checkpoints in the layout before self-contained checkpoints (latest/, best/)."""
    if any((Path(directory) / name).is_dir() for name in LEGACY_MANAGERS):
        raise CheckpointFormatError(
            f"{directory} holds checkpoints in the layout before self-contained checkpoints (latest/, best/), which "
            f"this code no longer restores: retrain it with a new run, or check out {LEGACY_LAYOUT_READER} to use it there"
        )


def abstract_like(state: Any) -> Any:
    """Shapes and dtypes of `state`, placed on the current default device."""
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree_util.tree_map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), state
    )


def _steps(manager_dir: Path) -> list[int]:
    return sorted(int(child.name) for child in manager_dir.iterdir() if child.name.isdigit()) if manager_dir.is_dir() else []


def find_checkpoint(path: str | Path, which: str = "latest") -> tuple[Path, int]:
    """Resolve a run directory or a checkpoint step directory to (checkpoints directory, step).

    `which` is "latest" or "best" (the best evaluation score). A run directory without the
    requested checkpoint gets an error that says what is there instead."""
    path = Path(path).resolve()
    if path.name in LEGACY_MANAGERS or path.parent.name in LEGACY_MANAGERS:  # checkpoints/latest[/STEP]
        check_not_legacy(path.parent if path.name in LEGACY_MANAGERS else path.parent.parent)
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
        check_not_legacy(path)
    elif (path / CONFIG_FILE).is_file():
        seed_dirs = sorted(child.name for child in path.glob("seed*") if (child / "checkpoints").is_dir())
        if seed_dirs:
            raise FileNotFoundError(f"{path} is a multi-seed run; give one seed's directory, e.g. {path / seed_dirs[0]}")
        raise FileNotFoundError(
            f"run directory {path} has no checkpoints/ directory: it was deleted or moved, or the run stopped "
            "before its first checkpoint; nothing to evaluate or resume"
        )
    if path.name == "checkpoints":
        return path, _pick_step(path, which)
    if path.name.isdigit() and path.parent.name == "checkpoints":
        problem = damage(path.parent, int(path.name))
        if problem is not None:  # this step was asked for: no fallback
            raise DamagedCheckpointError(f"{problem}; give the run directory to use its newest intact checkpoint")
        return path.parent, int(path.name)
    raise FileNotFoundError(
        f"{path} is neither a run directory (with checkpoints/) nor a checkpoint directory (RUN_DIR/checkpoints/STEP)"
    )


def _pick_step(directory: Path, which: str) -> int:
    """The latest intact step, or the best-scored intact one (the later of equal scores, as the
    manager keeps); one line on stderr names the damaged steps passed over."""
    steps = _steps(directory)
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {directory}: the run stopped before its first checkpoint")
    if which != "best":
        candidates = steps[::-1]
    else:
        metas = {step: _readable_meta(directory, step) for step in steps}  # an unreadable meta has no score to rank by
        scored = [(meta["score"], step) for step, meta in metas.items() if meta is not None and meta.get("score") is not None]
        if not scored:
            raise FileNotFoundError(f"no scored checkpoint in {directory} (scores come from evaluations): use no --best")
        candidates = [step for _, step in sorted(scored, reverse=True)]
    step, damaged = newest_intact([directory], candidates)
    if step is None:
        raise DamagedCheckpointError(f"no intact checkpoint in {directory}: {'; '.join(damaged)}; start a new run")
    if damaged:
        kind = "best" if which == "best" else "newest"
        print(f"offrl: {'; '.join(damaged)}; using step {step}, the {kind} intact checkpoint", file=sys.stderr)
    return step


def newest_intact(manager_dirs: list[Path], candidates: list[int]) -> tuple[int | None, list[str]]:
    """The first of `candidates` (steps, in order of preference) intact in every one of
    `manager_dirs`, or None; and what is wrong with each one passed over."""
    damaged = []
    for step in candidates:
        problems = [problem for directory in manager_dirs if (problem := damage(directory, step)) is not None]
        if not problems:
            return step, damaged
        damaged.extend(problems)
    return None, damaged


def damage(manager_dir: Path, step: int) -> str | None:
    """None if checkpoint `step` matches its manifest (or predates manifests), else one phrase
    naming the step and the first file at fault."""
    step_dir = Path(manager_dir) / str(step)
    where = f"checkpoint step {step} in {Path(manager_dir)} is damaged"
    manifest_path = step_dir / MANIFEST
    if not manifest_path.is_file():
        try:
            meta = read_meta(manager_dir, step)
        except (DamagedCheckpointError, FileNotFoundError):
            return f"{where}: meta/metadata is missing or unreadable and there is no {MANIFEST}"
        return f"{where}: {MANIFEST} is missing (the save was cut short)" if "manifest" in meta else None
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return f"{where}: {MANIFEST} is unreadable"
    for name, expected in sorted(files.items()):
        path = step_dir / name
        if not path.is_file():
            return f"{where}: {name} is missing"
        size = path.stat().st_size
        if size != expected["bytes"]:
            return f"{where}: {name} has {size} bytes, {expected['bytes']} were written"
        if _sha256(path) != expected["sha256"]:
            return f"{where}: {name} differs from what was written (sha256)"
    return None


def write_manifest(step_dir: Path) -> None:
    """Record the size and sha256 of every file of a committed step (see `damage`)."""
    files = {
        str(path.relative_to(step_dir)): {"bytes": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(Path(step_dir).rglob("*")) if path.is_file() and path.name != MANIFEST
    }
    write_json_atomic(Path(step_dir) / MANIFEST, {"files": files})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resume_step(manager_dirs: list[Path]) -> int:
    """The step a resume restores: the newest intact in every member's checkpoints (members
    save together), 0 before the first checkpoint. Every step after it is removed, as the
    resumed run writes those steps again (orbax will not overwrite a step); one line on stderr
    names the damaged ones."""
    common = set.intersection(*(set(_steps(directory)) for directory in manager_dirs))
    step, damaged = newest_intact(manager_dirs, sorted(common, reverse=True))
    if step is None and damaged:
        raise DamagedCheckpointError(f"no intact checkpoint to resume from: {'; '.join(damaged)}; start a new run")
    step = step or 0  # no step saved by every member: from scratch
    if damaged:
        print(f"offrl: {'; '.join(damaged)}; resuming from step {step}, the newest intact checkpoint "
              "(the steps after it are removed and trained again)", file=sys.stderr)
    for directory in manager_dirs:
        for later in (s for s in _steps(directory) if s > step):
            shutil.rmtree(directory / str(later))
    return step


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir`'s writer lock (creating the directory) until the block ends; another
    holder gets `RunDirInUseError` at once. fcntl locks die with their process, so a killed
    run leaves no stale lock; the file only keeps the last holder's PID for the message."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise RunDirInUseError(
                f"run directory {run_dir} is in use by process {holder} (lock {path}); wait for it to end or give another --run-dir"
            ) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def restore(manager_dir: Path, step: int, target: Any) -> Any:
    """Restore the state at `step` into the structure of `target` (a concrete or abstract state)."""
    manager = ocp.CheckpointManager(Path(manager_dir).resolve())
    try:
        try:
            restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_like(target))))
        except ValueError:  # orbax: the saved pytree does not match the target's
            written = read_meta(manager_dir, step).get("format")
            if is_older_format(written):
                raise old_format_error(run_dir_of(manager_dir), written, "restore") from None
            raise
        return restored["state"]
    finally:
        manager.close()


def read_meta(manager_dir: Path, step: int) -> dict[str, Any]:
    """The meta saved with a checkpoint (see the module docstring)."""
    path = Path(manager_dir) / str(step) / "meta" / "metadata"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {Path(manager_dir) / str(step)} has no meta/: it is incomplete or not an offrl checkpoint")
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise DamagedCheckpointError(f"checkpoint step {step} in {Path(manager_dir)} is damaged: meta/metadata is not JSON") from None


def _readable_meta(manager_dir: Path, step: int) -> dict[str, Any] | None:
    try:
        return read_meta(manager_dir, step)
    except (DamagedCheckpointError, FileNotFoundError):
        return None


def run_dir_of(manager_dir: Path) -> Path:
    return Path(manager_dir).resolve().parent


def save_config(run_dir: Path, config: dict[str, Any]) -> None:
    write_json_atomic(Path(run_dir) / CONFIG_FILE, config)


def load_config(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: is {run_dir} a run directory written by scripts/train.py?")
    return json.loads(path.read_text())


# ---- what a checkpoint stores besides the state ------------------------------------------


def batch_shapes(batch: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: {"shape": list(np.shape(value)), "dtype": str(np.asarray(value).dtype)} for name, value in batch.items()}


def zeros_batch(shapes: dict[str, dict[str, Any]]) -> dict[str, jax.Array]:
    """An all-zero batch of the stored shapes; call it under `jax.eval_shape`, where it costs nothing."""
    import jax.numpy as jnp

    return {name: jnp.zeros(entry["shape"], entry["dtype"]) for name, entry in shapes.items()}


def run_meta(agent: str, config: dict[str, Any], example_batch: dict[str, Any], env: dict[str, Any]) -> dict[str, Any]:
    """The static part of every checkpoint's meta for one run (one seed); `env` is the
    evaluation env's `env_record`."""
    return {
        "format": META_FORMAT,
        "agent": agent,
        "config": json.loads(json.dumps(config, default=list)),
        "example_batch": batch_shapes(example_batch),
        "env": env,
    }


def env_record(spec: Any) -> dict[str, Any]:
    """A `DatasetSpec` as JSON: its scores and spaces, and how to rebuild the env without the
    dataset: a factory from `STORABLE_FACTORIES` with JSON arguments, else the gymnasium
    EnvSpec of an env it builds, else nothing (restoring then needs the dataset)."""
    from offrl.policy import space_layout

    record: dict[str, Any] = {
        "name": spec.name,
        "family": spec.family,
        "ref_min_score": spec.ref_min_score,
        "ref_max_score": spec.ref_max_score,
        "goal_conditioned": spec.goal_conditioned,
        "factory": None,
        "gym_spec": None,
        "observation_space": None,
        "action_space": None,
    }
    if spec.env_factory is None:
        return record
    record["factory"] = _factory_record(spec.env_factory)
    env = spec.env_factory()
    try:
        record["observation_space"] = space_layout(env.observation_space)
        record["action_space"] = space_layout(env.action_space)
        if record["factory"] is None and env.spec is not None:
            try:
                record["gym_spec"] = env.spec.to_json()
            except ValueError:  # kwargs that are not JSON: the env is rebuilt from the dataset
                pass
    finally:
        env.close()
    return record


def _factory_record(factory: Any) -> dict[str, Any] | None:
    if not isinstance(factory, functools.partial):
        return None
    name = f"{factory.func.__module__}:{factory.func.__qualname__}"
    if name not in STORABLE_FACTORIES:
        return None
    record = {"function": name, "args": list(factory.args), "kwargs": dict(factory.keywords)}
    try:
        if json.loads(json.dumps(record)) != record:
            return None
    except (TypeError, ValueError):
        return None
    return record


def spec_from_record(record: dict[str, Any]) -> Any:
    """The `DatasetSpec` an `env_record` describes; None when the env was not storable."""
    from offrl.envs.spec import DatasetSpec

    factory = record.get("factory")
    if factory is not None:
        if factory["function"] not in STORABLE_FACTORIES:
            raise ValueError(f"checkpoint names env factory {factory['function']!r}, not one of {', '.join(STORABLE_FACTORIES)}")
        module_name, function_name = factory["function"].split(":")
        function = getattr(importlib.import_module(module_name), function_name)
        env_factory = functools.partial(function, *factory["args"], **factory["kwargs"])
    elif record.get("gym_spec") is not None:
        env_factory = functools.partial(_make_from_gym_spec, record["gym_spec"])
    else:
        return None
    return DatasetSpec(
        name=record["name"],
        family=record["family"],
        env_factory=env_factory,
        ref_min_score=record["ref_min_score"],
        ref_max_score=record["ref_max_score"],
        goal_conditioned=record["goal_conditioned"],
    )


def _make_from_gym_spec(spec_json: str, **kwargs: Any) -> Any:
    import gymnasium as gym

    import offrl.envs.robotics  # noqa: F401 - Minari's recorded envs are often gymnasium-robotics ones

    spec = gym.envs.registration.EnvSpec.from_json(spec_json)
    return gym.make(spec, **kwargs)
