"""Build one of the built-in maze datasets into the local Minari store (docs/datasets.md).

    python scripts/make_dataset.py offrl/maze2d/umaze-v0 [--steps N] [--noise S] [--seed K]
    python scripts/make_dataset.py offrl/pointmaze/umaze-v1
    python scripts/make_dataset.py offrl/pointmaze/umaze-v1 --force   # replace a damaged one

`--steps` / `--noise` override what the id says and name the result by the canonical id
for those settings. A present dataset is kept unless `--force` rebuilds it. The store is `MINARI_DATASETS_PATH` (default ~/.minari/datasets).
Several processes may build the same id at once: one builds, the others wait for it.
"""

from __future__ import annotations

import argparse
import sys
import time

from minari.storage.datasets_root_dir import get_dataset_path

from offrl.data.pointmaze import ensure_maze_dataset, maze_dataset_exists, maze_dataset_id, resolve_maze_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset_id", help="e.g. offrl/maze2d/umaze-v0, offrl/maze2d/large-dense-v0, offrl/pointmaze/medium-v1")
    parser.add_argument("--steps", type=int, default=None, help="number of transitions (default: the id's)")
    parser.add_argument("--noise", type=float, default=None, help="action-noise std (default: the id's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild it even if present (e.g. a truncated or corrupted file)")
    args = parser.parse_args(argv)

    try:
        settings = resolve_maze_id(args.dataset_id)
        dataset_id = maze_dataset_id(
            settings.family,
            settings.maze,
            noise=settings.noise if args.noise is None else args.noise,
            steps=settings.steps if args.steps is None else args.steps,
            dense=settings.dense,
        )
    except ValueError as error:
        parser.error(str(error))
    if dataset_id != args.dataset_id:
        print(f"settings name the dataset {dataset_id}")

    if maze_dataset_exists(dataset_id) and not args.force:
        print(f"{dataset_id} is already present at {get_dataset_path(dataset_id)} (--force rebuilds it)")
        return 0
    start = time.perf_counter()
    dataset = ensure_maze_dataset(dataset_id, seed=args.seed, progress=True, rebuild=args.force)
    metadata = dataset.storage.metadata
    print(
        f"{dataset_id}: {dataset.total_steps} steps, {dataset.total_episodes} episodes, "
        f"ref_min_score {metadata['ref_min_score']:.2f}, ref_max_score {metadata['ref_max_score']:.2f} "
        f"({time.perf_counter() - start:.0f} s)"
    )
    return 0


def entry() -> int:
    """The `offrl-make-dataset` console script."""
    return main()


if __name__ == "__main__":  # python -m offrl.cli.make_dataset (the sweep runner's fallback)
    sys.exit(entry())
