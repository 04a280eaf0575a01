"""Measure the maze2d reference scores that `offrl/envs/scores.py` stores.

    python scripts/reference_scores.py [--maze umaze medium large] [--episodes N] [--discounted-value]

For each maze: the mean sparse and dense returns of a uniform random policy (ref_min_score)
and of the noiseless planner + PD controller heading for the target (ref_max_score), over
the evaluation env's episodes reset with seeds 10000, 10001, ... (see MAZE2D_REF_SEED).
Prints the dictionary entries to paste into MAZE2D_REF_SCORES and how far they are from
the stored ones. With --discounted-value it prints instead the value of reaching the target and
staying (the controller's discounted return over 1000 steps, gamma 0.99), the number a maze2d
critic's mean Q is read against.
"""

from __future__ import annotations

import argparse
import sys
import time

from offrl.data.pointmaze import controller_discounted_value, measure_maze2d_ref_scores
from offrl.envs.pointmaze import MAZES
from offrl.envs.scores import MAZE2D_REF_EPISODES, MAZE2D_REF_SCORES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maze", nargs="+", choices=sorted(MAZES), default=list(MAZES))
    parser.add_argument("--episodes", type=int, default=MAZE2D_REF_EPISODES)
    parser.add_argument("--discounted-value", action="store_true", help="the controller's discounted value instead")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    for maze in args.maze:
        if args.discounted_value:
            values = controller_discounted_value(maze, episodes=args.episodes)
            print(f"{maze}: value of reaching and staying {values.mean():.2f} (std {values.std(ddof=1):.2f}, min {values.min():.2f}, "
                  f"max {values.max():.2f}) over {args.episodes} start states, gamma 0.99")
            continue
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
