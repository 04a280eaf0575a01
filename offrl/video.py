"""Render one evaluation episode off-screen to a GIF (or MP4 with imageio-ffmpeg installed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

# EGL renders without a display (Mesa on CPU, the NVIDIA driver on GPU machines).
os.environ.setdefault("MUJOCO_GL", "egl")


def record_episode(spec: Any, policy: Callable, path: Path, seed: int, fps: int = 30) -> Path:
    import imageio.v2 as imageio
    import gymnasium as gym

    from offrl.envs import flatten_observation

    path = Path(path)
    if path.suffix.lower() == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401 - only checks that MP4 writing is possible
        except ImportError:
            path = path.with_suffix(".gif")
            print("offrl: imageio-ffmpeg is not installed, writing a GIF instead (pip install imageio-ffmpeg for MP4)")
    env = spec.env_factory(render_mode="rgb_array")
    frames = []
    try:
        observation, _ = env.reset(seed=seed)
        key = jax.random.PRNGKey(seed)
        done = False
        while not done:
            frames.append(env.render())
            # The policy takes a batch, as in evaluation: a batch of one.
            flat = flatten_observation(env.observation_space, observation)[None]
            key, step_key = jax.random.split(key)
            action = np.asarray(policy(jnp.asarray(flat, jnp.float32), step_key))[0]
            if isinstance(env.action_space, gym.spaces.Discrete):
                action = int(action[0])
            observation, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
    finally:
        env.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        imageio.mimsave(path, frames, duration=1000 / fps, loop=0)
    else:
        imageio.mimsave(path, frames, fps=fps)
    return path
