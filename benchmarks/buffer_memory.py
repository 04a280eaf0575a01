"""Device bytes of an offline replay buffer: observations stored once (`observation_table` plus
an index per row) against the plain columns (observations and next observations per row).

    python benchmarks/buffer_memory.py [--datasets offrl/maze2d/umaze-v0,offrl/pointmaze/umaze-v1] [--synthetic 17,6]

Each dataset is loaded (built locally if missing) and put in a `ReplayBuffer`; the baseline is
the bytes of the same rows as columns, `steps_to_end` included in both. `--synthetic OBS,ACT`
adds 1M rows of 1000-step chained episodes with those dimensions (HalfCheetah's by default).
Bytes are reported per million rows, as a GPU user sizes a dataset.
"""

from __future__ import annotations

import argparse

import numpy as np

from offrl.buffer import ReplayBuffer
from offrl.data import load_dataset
from offrl.transitions import Transitions, make_transitions


def chained_transitions(rows: int, obs_dim: int, action_dim: int, episode_length: int = 1000) -> Transitions:
    """Rows of simulator-like episodes: each row's next observation is the next row's observation."""
    rng = np.random.default_rng(0)
    episodes = rows // episode_length
    states = rng.normal(size=(episodes, episode_length + 1, obs_dim)).astype(np.float32)
    return make_transitions(
        observations=states[:, :-1].reshape(rows, obs_dim),
        actions=rng.uniform(-1, 1, size=(rows, action_dim)),
        rewards=rng.normal(size=rows),
        next_observations=states[:, 1:].reshape(rows, obs_dim),
        terminals=np.zeros(rows),
        episode_ends=(np.arange(rows) % episode_length) == episode_length - 1,
    )


def columnar_bytes(transitions: Transitions) -> int:
    steps_to_end = 4 * len(transitions)
    return sum(column.nbytes for column in transitions.as_dict().values()) + steps_to_end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="offrl/maze2d/umaze-v0,offrl/pointmaze/umaze-v1")
    parser.add_argument("--synthetic", default="17,6", help="OBS_DIM,ACTION_DIM of 1M synthetic rows; '' to skip")
    args = parser.parse_args()

    cases = [(name, load_dataset(name)[0]) for name in args.datasets.split(",") if name]
    if args.synthetic:
        obs_dim, action_dim = (int(value) for value in args.synthetic.split(","))
        cases.append((f"synthetic {obs_dim}-D obs, {action_dim}-D actions", chained_transitions(1_000_000, obs_dim, action_dim)))

    print("| dataset | rows | columns MB / 1M rows | shared observations MB / 1M rows | ratio |")
    print("|---|---|---|---|---|")
    for name, transitions in cases:
        rows = len(transitions)
        baseline = columnar_bytes(transitions) / rows
        shared = ReplayBuffer.from_transitions(transitions).nbytes / rows
        print(f"| {name} | {rows:,} | {baseline:.1f} | {shared:.1f} | {shared / baseline:.2f} |")


if __name__ == "__main__":
    main()
