"""The study's tables from raw/<arm>.json (benchmarks/fb_zero_shot.py's results.json of each arm).

Mean ± sample std (ddof 1) over the seeds, recomputed from the per-seed values.

    python studies/fb_pointmaze/collect.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

RAW = Path(__file__).resolve().parent / "raw"


def spread(values: list[float]) -> str:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    if len(finite) < 2:
        return f"{np.mean(finite):.2f}" if finite else "n/a"
    return f"{np.mean(finite):.2f} ± {np.std(finite, ddof=1):.2f}"


def main() -> None:
    print("| arm | FB five tasks | FB every cell | FB longest band | IQL five tasks | IQL every cell | ratio tasks | ratio cells |")
    print("|---|---|---|---|---|---|---|---|")
    for path in sorted(RAW.glob("*.json")):
        result = json.loads(path.read_text())
        fb, iql = result["agents"]["fb"], result["agents"]["iql"]
        bands = [key for key in fb if key.startswith("band_")]
        longest = spread(fb[bands[-1]]["seeds"]) + f" ({bands[-1][5:]} moves)" if bands else "n/a"
        tasks = np.mean(fb["tasks_success"]["seeds"]) / np.mean(iql["tasks_success"]["seeds"])
        cells = np.mean(fb["cells_success"]["seeds"]) / np.mean(iql["cells_success"]["seeds"])
        print(f"| {path.stem} | {spread(fb['tasks_success']['seeds'])} | {spread(fb['cells_success']['seeds'])} | {longest} "
              f"| {spread(iql['tasks_success']['seeds'])} | {spread(iql['cells_success']['seeds'])} | {tasks:.2f} | {cells:.2f} |")


if __name__ == "__main__":
    main()
