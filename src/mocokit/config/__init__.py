"""The generic config loader (`mocokit.config.loader`): YAML presets with `base:` inheritance, `key=value`
overrides, typed dataclass sections validated when loaded.

The loader knows no section: each package owns its own (`models.config`, `data.config`, `training.config`), and
`mocokit.training.run_config` composes them into the run's `Config` (`mocokit.load_config`). This package sits on
the bottom floor, so it imports nothing of mocokit's (see tests/test_layers.py).
"""
