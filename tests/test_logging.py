"""W&B through the real client: a logged-in user without a reachable server gets an offline run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from offrl.logging import resolve_wandb_mode

REPO = Path(__file__).resolve().parent.parent

# A RunLogger in online mode whose server is a closed local port, as when logged in without a
# network; its own process, so wandb's per-process setup reads this environment.
UNREACHABLE_RUN = """
import json, sys, time
from pathlib import Path
import offrl.logging as logging
logging.ONLINE_INIT_TIMEOUT = 3.0  # the default (15 s) would only make the test slower
started = time.perf_counter()
logger = logging.RunLogger(Path(sys.argv[1]), {"wandb": {"mode": "online", "project": "offrl-test"}})
seconds = time.perf_counter() - started
logger.log({"x": 1.0}, step=1)
logger.close()
print(json.dumps({"mode": logger.mode, "seconds": seconds}))
"""


def test_unreachable_server_falls_back_to_offline(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")}
    env.update(
        WANDB_API_KEY="0" * 40,  # a well-formed key the closed port never gets to check
        WANDB_BASE_URL="http://127.0.0.1:9",  # the discard port: nothing listens, connections are refused
        WANDB_MODE="online",
        WANDB_DISABLE_WEAVE="true",
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
    )
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-c", UNREACHABLE_RUN, str(run_dir)], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["mode"] == "offline"
    # wandb alone waits its 90 s init_timeout and then fails the run.
    assert out["seconds"] < 60, out
    notices = [line for line in result.stdout.splitlines() if line.startswith("W&B: cannot start an online run")]
    assert len(notices) == 1 and "--wandb.mode offline" in notices[0] and "wandb sync" in notices[0]
    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and list(offline_runs[0].glob("*.wandb"))
    assert (run_dir / "wandb_run_id").read_text() in offline_runs[0].name
    assert json.loads((run_dir / "metrics.jsonl").read_text()) == {"step": 1, "x": 1.0}


@pytest.mark.parametrize("mode", ["online", "offline", "disabled"])
def test_requested_mode_is_kept(mode):
    assert resolve_wandb_mode(mode) == (mode, None)
