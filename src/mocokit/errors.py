"""Errors raised on more than one floor of the package, defined on the bottom one so that any module can raise or
catch them without importing the module that happens to raise them most (see tests/test_layers.py)."""


class ConfigError(ValueError):
    """A configuration problem the user must fix; the message says what and how."""


class NonFiniteLoss(RuntimeError):
    """The loss or the gradients became NaN or infinite; the message names the first bad step."""
