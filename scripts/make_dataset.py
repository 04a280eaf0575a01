"""Build one of the built-in maze datasets into the local Minari store (docs/datasets.md).

A thin wrapper around `offrl.cli.make_dataset` (installed as `offrl-make-dataset`)."""

import sys

from offrl.cli.make_dataset import entry

if __name__ == "__main__":
    sys.exit(entry())
