"""Old names: the runner is split into `offrl.experiment`, `offrl.runner`, `offrl.sources`, `offrl.members`."""

from offrl.experiment import Experiment, restore_run
from offrl.runner import NonFiniteLossError, run

__all__ = ["Experiment", "NonFiniteLossError", "restore_run", "run"]
