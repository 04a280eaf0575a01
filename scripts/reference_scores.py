"""Measure the maze2d reference scores that `offrl/envs/scores.py` stores.

    python scripts/reference_scores.py [--maze umaze medium large] [--episodes N]

For each maze: the mean sparse and dense returns of a uniform random policy (ref_min_score)
and of the noiseless planner + PD controller heading for the target (ref_max_score), over
the evaluation env's episodes reset with seeds 10000, 10001, ... (see MAZE2D_REF_SEED).
Prints the dictionary entries to paste into MAZE2D_REF_SCORES and how far they are from
the stored ones.
"""

from __future__ import annotations

import argparse
import sys
import time

from offrl.data.pointmaze import measure_maze2d_ref_scores
from offrl.envs.pointmaze import MAZES
from offrl.envs.scores import MAZE2D_REF_EPISODES, MAZE2D_REF_SCORES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maze", nargs="+", choices=sorted(MAZES), default=list(MAZES))
    parser.add_argument("--episodes", type=int, default=MAZE2D_REF_EPISODES)
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    for maze in args.maze:
        start = time.perf_counter()
        scores = measure_maze2d_ref_scores(maze, episodes=args.episodes)
        for kind, (low, high) in scores.items():
            stored = MAZE2D_REF_SCORES.get((maze, kind))
            note = "" if stored is None else f"  # stored {stored[0]:.4f}, {stored[1]:.4f}"
            print(f'    ("{maze}", "{kind}"): ({low:.4f}, {high:.4f}),{note}')
        print(f"# {maze}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
