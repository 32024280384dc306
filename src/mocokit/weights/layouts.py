"""Foreign key names -> mocokit's MoCo state-dict names, one rule per layout (read from the official code).

mocokit's MoCo is `encoder` = Sequential(backbone, head), `momentum_encoder` (same), `predictor` (v3) and the
dictionary (`queue.keys` K×C, `queue.ptr`, `queue.ids` for v1/v2). Its ResNet uses torchvision's module names and
its heads come from one MLP builder whose layer indices are those of the official heads, so a rule only moves
prefixes:

- moco-v1v2 (facebookresearch/moco, main_moco.py; DistributedDataParallel's `module.` prefix removed first):
  `encoder_q.<torchvision resnet>` / `encoder_k.*` -> `encoder.backbone.*` / `momentum_encoder.backbone.*`; the head
  replaced the ResNet's `fc`: v1 `fc.weight`, `fc.bias` (Linear(D, 128)) -> `head.0.*`; v2 `fc.0.*`, `fc.2.*`
  (Linear(D, D), ReLU, Linear(D, 128)) -> `head.0.*`, `head.2.*`; `queue` C×K (columns are keys) -> `queue.keys`
  K×C, transposed; `queue_ptr` (1,) -> `queue.ptr` ().
- moco-v3 (facebookresearch/moco-v3, moco/builder.py): `base_encoder.*` / `momentum_encoder.*` -> `encoder.*` /
  `momentum_encoder.*`, the projector being the ResNet's `fc.N.*` or the timm ViT's `head.N.*` -> `head.N.*`
  (Linear(bias=False), BN, ReLU, ..., Linear, BN(affine=False): the indices of mocokit's MLP builder);
  `predictor.N.*` -> `predictor.N.*`.
- torchvision, timm: a ResNet's or ViT's own keys -> `encoder.backbone.*`; the classifier (`fc.*`, `head.*`) is
  dropped, said so.
- mocokit: MoCo names already.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mocokit.weights.errors import WeightsError
from mocokit.weights.formats import FORMATS

ENCODERS = ("encoder", "momentum_encoder")
_HEAD = re.compile(r"(fc|head)\.(\d+)\.(.+)")  # an MLP head's layer: fc.2.weight -> ("fc", "2", "weight")


@dataclass
class ForeignWeights:
    """A file's tensors under mocokit's MoCo names, and where each came from."""

    path: Path
    layout: str  # one of LAYOUTS
    tensors: dict[str, torch.Tensor]  # mocokit name -> tensor
    origin: dict[str, str]  # mocokit name -> the file's name, for messages
    sha256: str = ""  # "sha256:<hex>" of the file
    arch: str | None = None  # the file's `arch` entry (the official MoCo files name the torchvision model)
    ignored: list[str] = field(default_factory=list)  # what of the file is not used, each with the reason

    def has(self, prefix: str) -> bool:
        return any(name.startswith(prefix) for name in self.tensors)


def detect_layout(names: list[str]) -> str | None:
    """The layout whose key names these are (after the `module.` prefix is removed), or None."""
    def some(pattern: str) -> bool:
        return any(re.match(pattern, name) for name in names)

    if some(r"encoder_q\."):
        return "moco-v1v2"
    if some(r"base_encoder\."):
        return "moco-v3"
    if some(r"encoder\.backbone\."):
        return "mocokit"
    if some(r"layer4\.\d+\.conv1\.weight$") and "conv1.weight" in names:
        return "torchvision"  # a torchvision ResNet; timm's ResNets have the same names ("timm" reads them too)
    if some(r"blocks\.\d+\.attn\.qkv\.weight$") and "cls_token" in names:
        return "timm"  # a timm VisionTransformer
    return None


def map_layout(state: dict[str, torch.Tensor], fmt: str, path: Path, *, arch: str | None = None,
               ignored: list[str] | None = None, sha256: str = "") -> ForeignWeights:
    """`state` (the file's name -> tensor) under mocokit's names. fmt: a layout, or auto to recognise it.
    WeightsError naming the file and the first key that no rule of the layout covers."""
    if fmt not in FORMATS:
        raise WeightsError(f"unknown weights format {fmt!r}; choose one of {', '.join(FORMATS)}")
    state = _without_ddp_prefix(state)
    found = detect_layout(list(state))
    if fmt == "auto":
        if found is None:
            raise WeightsError(f"{path}: no known layout in its keys ({', '.join(list(state)[:4])}, ...); "
                               f"give --format, one of {', '.join(FORMATS[1:])}")
        fmt = found
    elif found is not None and found != fmt and {found, fmt} != {"torchvision", "timm"}:
        raise WeightsError(f"{path} has keys of the {found} layout ({next(iter(state))}, ...), not {fmt}: use "
                           f"--format {found} or auto")
    weights = ForeignWeights(Path(path), fmt, {}, {}, sha256=sha256, arch=arch, ignored=list(ignored or []))
    rule = _RULES[fmt]
    for name, tensor in state.items():
        target = rule(name, weights)
        if target is None:
            continue
        if target == "":
            raise WeightsError(f"{path}: key {name!r} has no place in a MoCo model ({fmt} layout)")
        if fmt == "moco-v1v2" and target == "queue.keys":
            tensor = tensor.t().contiguous()  # the official queue is C×K (columns are keys); mocokit's is K×C
        elif target == "queue.ptr":
            tensor = tensor.reshape(())
        weights.tensors[target], weights.origin[target] = tensor, name
    return weights


def _without_ddp_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(name.startswith("module.") for name in state):
        return {name[len("module."):]: tensor for name, tensor in state.items()}
    return state


def _encoder_part(rest: str) -> str:
    """A key inside one encoder of the official code (a torchvision ResNet or timm ViT whose classifier was
    replaced by the head) -> its name inside mocokit's Sequential(backbone, head)."""
    if rest in ("fc.weight", "fc.bias"):  # v1: the ResNet's fc itself, Linear(D, 128)
        return "head.0." + rest.split(".")[1]
    match = _HEAD.fullmatch(rest)
    if match:  # v2 MLP (fc.0, fc.2), v3 projector (fc.N for ResNets, head.N for ViTs)
        return f"head.{match.group(2)}.{match.group(3)}"
    return "backbone." + rest


def _moco_v1v2(name: str, weights: ForeignWeights) -> str | None:
    for prefix, encoder in (("encoder_q.", "encoder"), ("encoder_k.", "momentum_encoder")):
        if name.startswith(prefix):
            return f"{encoder}.{_encoder_part(name[len(prefix):])}"
    return {"queue": "queue.keys", "queue_ptr": "queue.ptr"}.get(name, "")


def _moco_v3(name: str, weights: ForeignWeights) -> str | None:
    for prefix, encoder in (("base_encoder.", "encoder"), ("momentum_encoder.", "momentum_encoder")):
        if name.startswith(prefix):
            return f"{encoder}.{_encoder_part(name[len(prefix):])}"
    if name.startswith("predictor."):
        return name
    return ""


def _backbone(name: str, weights: ForeignWeights) -> str | None:
    if name.split(".")[0] in ("fc", "head", "head_dist"):  # the classifier: pretraining has its own heads
        weights.ignored.append(f"{name!r} (the classifier of the {weights.layout} model)")
        return None
    return "encoder.backbone." + name


def _mocokit(name: str, weights: ForeignWeights) -> str | None:
    return name


_RULES = {"moco-v1v2": _moco_v1v2, "moco-v3": _moco_v3, "torchvision": _backbone, "timm": _backbone,
          "mocokit": _mocokit}
