"""`resolve_config`, the name `offrl.experiment.resolve` had before resolution became one call."""

from offrl.experiment import resolve as resolve_config

__all__ = ["resolve_config"]
