"""The error of a weights file that cannot be used."""

from __future__ import annotations

from mocokit.errors import ConfigError


class WeightsError(ConfigError):
    """A weights file that cannot be read safely, whose layout is not recognised, or whose tensors do not fit the
    model: the message names the file and the first key that does not fit. A ConfigError (exit status 2)."""
