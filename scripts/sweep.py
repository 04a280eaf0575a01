"""Run a W&B sweep file locally, without a W&B server:

A thin wrapper around `offrl.cli.sweep` (installed as `offrl-sweep`)."""

import sys

from offrl.cli.sweep import entry

if __name__ == "__main__":
    sys.exit(entry())
