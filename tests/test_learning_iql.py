"""Each IQL extraction learns on a small built-in maze2d umaze dataset (fixed seeds, CPU budget).

Measured on the retired pointmaze-v0 data at this budget (128x128, 6k updates, 100k-step dataset, 30 episodes):
awr success 1.00 / normalized 36, dawr 1.00 / 33, ddpg 0.83 / 19; a uniform random policy
reaches the goal in 16% of episodes and scores 0 by definition of the normalization.
"""

from __future__ import annotations

import pytest

from offrl.train import resolve_config, run

RANDOM_SUCCESS_RATE = 0.16


@pytest.fixture(scope="module")
def umaze_100k_id(isolated_environment) -> str:
    from offrl.data.pointmaze import ensure_maze_dataset, maze2d_dataset_id

    dataset_id = maze2d_dataset_id("umaze", steps=100_000)
    ensure_maze_dataset(dataset_id, progress=False)
    return dataset_id


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["iql-awr", "iql-ddpg", "iql-dawr"])
def test_iql_reaches_the_umaze_goal(agent, umaze_100k_id, tmp_path):
    config = resolve_config(
        {
            "agent": agent,
            "dataset": umaze_100k_id,
            "steps": 6000,
            "hidden_dims": [128, 128],
            "eval_episodes": 30,
            "eval_interval": 6000,
            "run_dir": str(tmp_path / agent),
            "wandb.mode": "disabled",
        }
    )
    summary = run(config, progress=False)
    assert summary["success_rate"] >= 0.5 > RANDOM_SUCCESS_RATE
    assert summary["normalized_score"] >= 10.0
