"""Export a run's policy: python scripts/export.py RUN_DIR [--best] [--out DIR] [--platforms cpu,cuda]

A thin wrapper around `offrl.cli.export` (installed as `offrl-export`)."""

import sys

from offrl.cli.export import entry

if __name__ == "__main__":
    sys.exit(entry())
