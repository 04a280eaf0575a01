"""Off-screen episode videos (EGL on a headless machine), for any observation space."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import jax.numpy as jnp
import numpy as np

from offrl.online import env_spec
from offrl.video import record_episode

REPO = Path(__file__).resolve().parent.parent


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


# A tiny online run evaluated by scripts/evaluate.py with --video and W&B offline; its own
# process, so wandb's per-process setup reads this environment (the test session disables W&B).
EVALUATE_VIDEO_RUN = """
import sys
from pathlib import Path
from offrl.cli import evaluate
from offrl.experiment import resolve
from offrl.runner import run

run_dir = Path(sys.argv[1])
settings = {"agent": "reinforce", "env": "InvertedPendulum-v5", "steps": 1, "episodes_per_update": 1, "eval_episodes": 1,
            "hidden_dims": [8], "run_dir": str(run_dir), "wandb.mode": "disabled"}
run(resolve(settings), progress=False)
assert evaluate.main([str(run_dir), "--video", str(run_dir / "episode.gif"), "--wandb.mode", "offline"]) == 0
"""


def test_evaluation_video_goes_to_the_wandb_run(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")}
    env.update(WANDB_DISABLE_WEAVE="true", PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-c", EVALUATE_VIDEO_RUN, str(run_dir)], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    offline_runs = list((run_dir / "evaluations" / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
    videos = list(offline_runs[0].glob("files/media/videos/evaluate/video_*.gif"))
    assert len(videos) == 1 and videos[0].read_bytes() == (run_dir / "episode.gif").read_bytes()
