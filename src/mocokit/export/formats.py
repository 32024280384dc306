"""The export formats, on their own so that `mocokit export --help` can list them without importing torch."""

FORMATS = ("torchvision", "timm", "moco")
