"""The package version, on its own so that any module (and `mocokit --version`) can read it without importing more."""

__version__ = "0.1.0"
