"""Render one evaluation episode off-screen to a GIF (or MP4 with imageio-ffmpeg installed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

# EGL renders without a display (Mesa on CPU, the NVIDIA driver on GPU machines).
os.environ.setdefault("MUJOCO_GL", "egl")


def record_episode(spec: Any, policy: Callable, path: Path, seed: int, fps: int = 30) -> Path:
    """One episode of `policy` in the evaluation env of `spec`, rendered to `path`: the
    evaluation's own episode loop (`offrl.evaluation.run_episodes`) on one env, so the video
    shows the episode an evaluation with `seed` runs in its first env."""
    import imageio.v2 as imageio

    from offrl.envs import make_eval_vector_env
    from offrl.evaluation import run_episodes

    path = Path(path)
    if path.suffix.lower() == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401 - only checks that MP4 writing is possible
        except ImportError:
            path = path.with_suffix(".gif")
            print("offrl: imageio-ffmpeg is not installed, writing a GIF instead (pip install imageio-ffmpeg for MP4)")
    envs = make_eval_vector_env(spec, 1, seed, render=True)
    frames: list[np.ndarray] = []
    try:
        run_episodes(envs, policy, jax.random.PRNGKey(seed), seed, record_transitions=False, frames=frames)
    finally:
        envs.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        imageio.mimsave(path, frames, duration=1000 / fps, loop=0)
    else:
        imageio.mimsave(path, frames, fps=fps)
    return path
