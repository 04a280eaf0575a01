"""The dataset errors every loader raises: a leaf module, so the loaders and the registry
import them without going through the `offrl.data` package that imports them."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset exists but cannot be used; the message names the file or id and says what to do."""


class DatasetNotFoundError(DatasetError):
    """No dataset by that name or id; the message lists what is available and how to get more."""
