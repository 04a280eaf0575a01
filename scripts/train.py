"""Train an agent: python scripts/train.py --agent iql-ddpg [--dataset ID_OR_FILE] [--key value ...]

A thin wrapper around `offrl.cli.train` (installed as `offrl-train`)."""

import sys

from offrl.cli.train import entry

if __name__ == "__main__":
    sys.exit(entry())
