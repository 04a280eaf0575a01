"""Build one of the built-in pointmaze datasets into the local Minari store.

    python scripts/make_dataset.py offrl/pointmaze/umaze-v0 [--steps N] [--noise S] [--seed K]

`--steps` / `--noise` override what the id says and name the result by the canonical id
for those settings. The store is `MINARI_DATASETS_PATH` (default ~/.minari/datasets).
"""

from __future__ import annotations

import argparse
import sys
import time

from minari.storage.datasets_root_dir import get_dataset_path

from offrl.data.pointmaze import (
    build_pointmaze_dataset,
    pointmaze_dataset_exists,
    pointmaze_dataset_id,
    resolve_pointmaze_id,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset_id", help="e.g. offrl/pointmaze/umaze-v0, offrl/pointmaze/large-noise1p0-v0")
    parser.add_argument("--steps", type=int, default=None, help="number of transitions (default: the id's)")
    parser.add_argument("--noise", type=float, default=None, help="action-noise std (default: the id's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    try:
        settings = resolve_pointmaze_id(args.dataset_id)
        dataset_id = pointmaze_dataset_id(
            settings.maze,
            noise=settings.noise if args.noise is None else args.noise,
            steps=settings.steps if args.steps is None else args.steps,
        )
    except ValueError as error:
        parser.error(str(error))
    if dataset_id != args.dataset_id:
        print(f"settings name the dataset {dataset_id}")

    if pointmaze_dataset_exists(dataset_id):
        print(f"{dataset_id} is already present at {get_dataset_path(dataset_id)}")
        return 0
    start = time.perf_counter()
    dataset = build_pointmaze_dataset(dataset_id, seed=args.seed, progress=True)
    metadata = dataset.storage.metadata
    print(
        f"built {dataset_id}: {dataset.total_steps} steps, {dataset.total_episodes} episodes, "
        f"ref_min_score {metadata['ref_min_score']:.2f}, ref_max_score {metadata['ref_max_score']:.2f} "
        f"in {time.perf_counter() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
