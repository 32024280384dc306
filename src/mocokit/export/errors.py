"""The error of an export that cannot be made."""

from __future__ import annotations

from mocokit.errors import ConfigError


class ExportError(ConfigError):
    """The run's model has no export in the requested format (e.g. a ViT as torchvision), or the weights would not
    load into the target model. A ConfigError, since the stored `model:` section decides it; the message names the
    formats that do work."""
