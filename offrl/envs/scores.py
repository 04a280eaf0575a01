"""D4RL reference returns, kept as data so scores are comparable with published tables.

The numbers are copied from D4RL's `d4rl/infos.py` (REF_MIN_SCORE / REF_MAX_SCORE):
for Gym-MuJoCo v2 datasets D4RL reuses the `<env>-random-v0` entries, min being a random
policy's average return and max an expert's. Normalized score =
100 * (R - min) / (max - min), so 0 is random and 100 is expert.
"""

from __future__ import annotations

import re

import numpy as np

_LOCOMOTION_REF = {
    # env: (ref_min_score, ref_max_score)
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
}
_LOCOMOTION_DATASETS = ("random", "medium", "medium-replay", "medium-expert", "expert")
_ANTMAZE_DATASETS = ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse")
_MAZE2D_REF = {
    "maze2d-umaze-v1": (23.85, 161.86),
    "maze2d-medium-v1": (13.13, 277.39),
    "maze2d-large-v1": (6.7, 273.99),
}

D4RL_REF_SCORES: dict[str, tuple[float, float]] = {
    **{
        f"{env}-{dataset}-v2": scores
        for env, scores in _LOCOMOTION_REF.items()
        for dataset in _LOCOMOTION_DATASETS
    },
    **{f"antmaze-{dataset}-{version}": (0.0, 1.0) for dataset in _ANTMAZE_DATASETS for version in ("v0", "v2")},
    **_MAZE2D_REF,
}


# offrl's built-in maze2d datasets (`offrl.data.pointmaze`, `docs/datasets.md`): the mean return
# of a uniform random policy (min) and of the noiseless planner + PD controller heading for the
# target (max) over MAZE2D_REF_EPISODES evaluation episodes, reset with seeds
# MAZE2D_REF_SEED, MAZE2D_REF_SEED + 1, ... (a run with seed k evaluates from the resets
# 10_000 + k + j, so these are its start states). Recompute them with
# `python scripts/reference_scores.py` (`offrl.data.pointmaze.measure_maze2d_ref_scores`).
MAZE2D_REF_EPISODES = 200
MAZE2D_REF_SEED = 10_000
MAZE2D_REF_SCORES: dict[tuple[str, str], tuple[float, float]] = {
    # (maze, "sparse" | "dense"): (ref_min_score, ref_max_score); deterministic, so the script reproduces them exactly
    ("umaze", "sparse"): (16.9300, 215.8350),
    ("umaze", "dense"): (56.6501, 229.2348),
    ("medium", "sparse"): (8.6550, 412.7150),
    ("medium", "dense"): (36.4440, 429.2418),
    ("large", "sparse"): (5.0650, 553.6550),
    ("large", "dense"): (31.0506, 577.3072),
}


def d4rl_maze2d_ref_scores(dataset_name: str) -> tuple[float, float] | None:
    """D4RL's maze2d-<maze>-v1 reference returns for an offrl sparse maze2d dataset id
    (`offrl/maze2d/umaze-v0`, `offrl/maze2d/large-noise1p0-v0`), None for any other dataset.

    offrl's maze2d episodes have D4RL's lengths (300 / 600 / 800 steps) and D4RL's sparse reward
    (1 within reach of the target at every step), so a return normalized with these is on the
    scale of published D4RL maze2d tables. Two differences remain: the data comes from offrl's own
    generator, not D4RL's file, and the reward radius is gymnasium-robotics' 0.45, not D4RL's 0.5, so
    the same path earns a little less here (the score is, if anything, conservative). Dense
    datasets have no such reference here."""
    match = re.fullmatch(r"offrl/maze2d/(umaze|medium|large)(-noise[0-9p]+)?-v\d+", dataset_name)
    return None if match is None else _MAZE2D_REF[f"maze2d-{match.group(1)}-v1"]


def maze2d_ref_scores(maze: str, dense: bool) -> tuple[float, float]:
    """(ref_min_score, ref_max_score) of an offrl maze2d dataset."""
    key = (maze, "dense" if dense else "sparse")
    if key not in MAZE2D_REF_SCORES:
        raise ValueError(f"no maze2d reference scores for maze {maze!r}; valid mazes: {sorted({m for m, _ in MAZE2D_REF_SCORES})}")
    return MAZE2D_REF_SCORES[key]


def d4rl_dataset_name(name: str) -> str:
    """The D4RL id for a dataset name or file stem (`hopper_medium_replay-v2` -> `hopper-medium-replay-v2`).

    D4RL's v2 files are named with underscores while its ids use dashes; accepting both lets a
    downloaded file be recognised by its stem alone.
    """
    return name.strip().lower().replace("_", "-")


def d4rl_ref_scores(name: str) -> tuple[float, float] | None:
    """(ref_min_score, ref_max_score) for a D4RL dataset name or file stem, None if not in the table."""
    return D4RL_REF_SCORES.get(d4rl_dataset_name(name))


def normalized_score(returns: np.ndarray | float, ref_min: float, ref_max: float) -> np.ndarray:
    """100 * (R - min) / (max - min), elementwise, in float64."""
    if ref_max == ref_min:
        raise ValueError(f"reference scores must differ to normalize, got min = max = {ref_min}")
    return 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)
