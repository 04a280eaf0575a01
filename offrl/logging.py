"""One logging path: Weights & Biases (real client) plus a local JSONL file in the run directory.

W&B runs online when the user is logged in, offline (synced later with `wandb sync`) when
not, and can be disabled; the local `metrics.jsonl` is always written, so every run can
be inspected without W&B. A logged-in user whose W&B server cannot be reached (no network,
a bad key) gets an offline run and a one-line notice after `ONLINE_INIT_TIMEOUT` seconds,
instead of wandb's 90 s wait and a failed run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MODES = ("online", "offline", "disabled")
# Seconds an online wandb.init may take before the run goes offline; a reachable server
# answers in a few. WANDB_INIT_TIMEOUT, wandb's own setting, takes precedence.
ONLINE_INIT_TIMEOUT = 15.0
SYNC_HINT = "sync later with `wandb sync RUN_DIR/wandb/offline-run-*`"


def resolve_wandb_mode(requested: str | None) -> tuple[str, str | None]:
    """The mode to use and, when it differs from what a user might expect, a one-line notice."""
    if requested is None:
        requested = os.environ.get("WANDB_MODE")
    if requested == "dryrun":
        requested = "offline"
    if requested is not None:
        if requested not in MODES:
            raise ValueError(f"wandb mode must be one of {', '.join(MODES)}, got {requested!r}")
        return requested, None
    if _has_wandb_credentials():
        return "online", None
    return "offline", f"W&B: not logged in, logging offline ({SYNC_HINT})"


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text() or bool(os.environ.get("WANDB_BASE_URL"))
    except OSError:
        return False


def _init_with_offline_fallback(init_args: dict[str, Any], mode: str) -> tuple[Any, str]:
    """`wandb.init` in `mode`; an online init that cannot reach the server is retried offline.

    Returns the run and the mode it runs in."""
    import wandb

    timeout = {} if os.environ.get("WANDB_INIT_TIMEOUT") else {"init_timeout": ONLINE_INIT_TIMEOUT}
    settings = wandb.Settings(silent=True, console="off", **(timeout if mode == "online" else {}))
    try:
        return wandb.init(**init_args, mode=mode, settings=settings), mode
    except (wandb.errors.CommError, wandb.errors.AuthenticationError, wandb.errors.UsageError, TimeoutError) as error:
        if mode != "online":
            raise
        reason = str(error).splitlines()[0] if str(error).strip() else type(error).__name__
        print(
            f"W&B: cannot start an online run ({reason}); logging offline instead ({SYNC_HINT}; "
            "pass --wandb.mode offline to skip the wait)"
        )
    return wandb.init(**init_args, mode="offline", settings=wandb.Settings(silent=True, console="off")), "offline"


def _to_python(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)) or hasattr(value, "__array__"):
        array = np.asarray(value)
        return array.item() if array.ndim == 0 else array.tolist()
    return value


class RunLogger:
    """Writes metrics to W&B and to `run_dir/metrics.jsonl` with one call."""

    def __init__(self, run_dir: Path, config: dict[str, Any], resume: bool = False, concurrent: bool = False) -> None:
        """`concurrent`: this process keeps several runs open at once (one per seed)."""
        # wandb takes our top-level `agents` package for the OpenAI Agents SDK and prints
        # an advertisement for its LLM tracer at every run start.
        os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")
        import wandb

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._metrics_file = self.metrics_path.open("a")
        settings = config.get("wandb", {})
        self.mode, notice = resolve_wandb_mode(settings.get("mode"))
        if notice:
            print(notice)
        run_id_file = self.run_dir / "wandb_run_id"
        run_id = run_id_file.read_text().strip() if resume and run_id_file.is_file() else None
        init_args = dict(
            project=settings.get("project"),
            entity=settings.get("entity"),
            group=settings.get("group"),
            name=settings.get("name") or self.run_dir.name,
            tags=list(settings.get("tags") or []),
            config=config,
            dir=str(self.run_dir),
            id=run_id,
            resume="allow" if run_id else None,
            reinit="create_new" if concurrent else "default",
        )
        self.run, self.mode = _init_with_offline_fallback(init_args, self.mode)
        if self.mode != "disabled":
            run_id_file.write_text(self.run.id)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        row = {key: _to_python(value) for key, value in metrics.items()}
        self._metrics_file.write(json.dumps({"step": step, **row}) + "\n")
        self._metrics_file.flush()
        self.run.log(row, step=step)

    def log_figure(self, name: str, figure: Figure, step: int) -> Path:
        """Save a matplotlib figure as PNG in run_dir/figures and log it as a W&B image.

        A figure made with pyplot is closed: pyplot keeps every figure it made until then."""
        import wandb

        path = self.run_dir / "figures" / f"{name.replace('/', '_')}_{step:08d}.png"
        path.parent.mkdir(exist_ok=True)
        figure.savefig(path, dpi=100, bbox_inches="tight")
        if figure.canvas.manager is not None:
            import matplotlib.pyplot as plt

            plt.close(figure)
        self.run.log({name: wandb.Image(str(path))}, step=step)
        return path

    def log_video(self, name: str, path: Path, step: int) -> None:
        """Log a recorded episode (a GIF or MP4 file, `offrl.video.record_episode`) as a W&B video."""
        import wandb

        self.run.log({name: wandb.Video(str(path))}, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            self.run.summary[key] = _to_python(value)

    def close(self) -> None:
        self._metrics_file.close()
        self.run.finish()
