"""The export formats, on their own so that `mocokit export --help` can list them without importing torch."""

# torchvision, timm: the backbone as safetensors; moco: the whole model as safetensors; detectron2: a ResNet backbone
# pickled as the official MoCo converter writes it; onnx: the backbone for inference (the `export` extra)
FORMATS = ("torchvision", "timm", "moco", "detectron2", "onnx")
