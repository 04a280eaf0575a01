"""Off-screen episode videos (EGL on a headless machine), for any observation space."""

from __future__ import annotations

import imageio.v2 as imageio
import jax.numpy as jnp
import numpy as np

from offrl.online import env_spec
from offrl.video import record_episode


def test_records_one_episode_of_a_box_observation_env(tmp_path):
    seen = []

    def policy(observations, key):
        seen.append(observations.shape)
        return jnp.zeros((observations.shape[0], 1))

    path = record_episode(env_spec("InvertedPendulum-v5"), policy, tmp_path / "episode.gif", seed=0)
    frames = imageio.mimread(path)
    assert len(frames) == len(seen) > 1, "one frame per step of the episode"
    assert set(seen) == {(1, 4)}, "the policy gets a batch of one flattened observation"
    assert np.asarray(frames[0]).std() > 0, "a rendered image, not a blank frame"
