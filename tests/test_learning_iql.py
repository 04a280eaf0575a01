"""Each IQL extraction learns to reach the goals on a small built-in goal-conditioned umaze
dataset (`offrl/pointmaze/umaze-v1` data, the default dataset's task; fixed seeds, CPU budget).

A uniform random policy reaches the goal in 0-7% of 30 evaluation episodes (5 evaluation seeds,
at most 2 of 30). Measured at this budget (128x128, 6k updates, 100k-step dataset, 30 episodes,
commit 3c82b99): success 1.00 for awr, ddpg and dawr (steps to the goal 118 / 108 / 103);
the 0.8 bound leaves room for other hardware's floating-point differences.
"""

from __future__ import annotations

import pytest

from offrl.experiment import resolve
from offrl.runner import run

RANDOM_SUCCESS_RATE = 0.07  # the highest of 5 evaluation seeds, 30 episodes each


@pytest.fixture(scope="module")
def umaze_v1_100k_id(isolated_environment) -> str:
    from offrl.data.pointmaze import ensure_maze_dataset, pointmaze_dataset_id

    dataset_id = pointmaze_dataset_id("umaze", steps=100_000)
    ensure_maze_dataset(dataset_id, progress=False)
    return dataset_id


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["iql-awr", "iql-ddpg", "iql-dawr"])
def test_iql_reaches_the_umaze_goals(agent, umaze_v1_100k_id, tmp_path):
    config = resolve(
        {
            "agent": agent,
            "dataset": umaze_v1_100k_id,
            "steps": 6000,
            "hidden_dims": [128, 128],
            "eval_episodes": 30,
            "eval_interval": 6000,
            "run_dir": str(tmp_path / agent),
            "wandb.mode": "disabled",
        }
    )
    summary = run(config, progress=False)
    assert summary["success_rate"] >= 0.8 > RANDOM_SUCCESS_RATE


@pytest.mark.slow
def test_iql_ddpg_beats_behaviour_cloning_on_maze2d_umaze(isolated_environment, tmp_path):
    """The default task, where imitation fails: the data's planner drives to random cells and never
    stays at the target, so bc scores about 0 (3 seeds at 20k updates: 0.7 +- 7.4, studies/iql_maze2d)
    while the maze2d IQL preset learns to reach and stay. 128-wide networks keep it to minutes."""
    from offrl.data.pointmaze import ensure_maze_dataset

    ensure_maze_dataset("offrl/maze2d/umaze-v0", progress=False)
    scores = {}
    for agent in ("bc", "iql-ddpg"):
        config = resolve({
            "agent": agent, "dataset": "offrl/maze2d/umaze-v0", "hidden_dims": [128, 128], "eval_episodes": 30,
            "eval_interval": 20000, "run_dir": str(tmp_path / agent), "wandb.mode": "disabled",
        })
        scores[agent] = run(config, progress=False)["normalized_score"]
    assert scores["bc"] < 15 and scores["iql-ddpg"] > scores["bc"] + 15, scores
