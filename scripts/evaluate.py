"""Evaluate a saved checkpoint: python scripts/evaluate.py RUN_DIR_OR_CHECKPOINT [--episodes N]

A thin wrapper around `offrl.cli.evaluate` (installed as `offrl-evaluate`)."""

import sys

from offrl.cli.evaluate import entry

if __name__ == "__main__":
    sys.exit(entry())
