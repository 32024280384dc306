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
- mmpretrain (open-mmlab/mmpretrain models/selfsup/moco.py, formerly mmselfsup; `{meta, state_dict}`): `backbone.*`
  (mmpretrain's ResNet, torchvision's names) -> `encoder.backbone.*`; the neck, MoCoV2Neck `neck.mlp.{0,2}.*` or v1's
  LinearNeck `neck.fc.*` -> `encoder.head.{0,2}.*` / `head.0.*`; the key encoder, an ExponentialMovingAverage of
  Sequential(backbone, neck): `encoder_k.module.0.*` / `encoder_k.module.1.*` -> `momentum_encoder.backbone.*` /
  `.head.*` (its step counter `encoder_k.steps` not used); `queue` C×K, `queue_ptr` as moco-v1v2.
- lightly (a LightningModule as in lightly's MoCo examples; a Lightning checkpoint's `state_dict`): `backbone.*`,
  either a torchvision ResNet's children in a Sequential (`backbone.0` conv1, `.1` bn1, `.4`..`.7` layer1..4) or a
  model with its own names -> `encoder.backbone.*`; `projection_head.layers.N.*` (MoCoProjectionHead) ->
  `encoder.head.N.*`; `backbone_momentum.*`, `projection_head_momentum.*` -> the momentum encoder's; the loss's
  memory bank (`criterion.memory_bank.*`, saved by older lightly) not used.
- solo-learn (vturrisi/solo-learn methods/mocov2plus.py, mocov3.py; a Lightning checkpoint's `state_dict`):
  `backbone.*` (a torchvision ResNet with fc = Identity, or a timm ViT) -> `encoder.backbone.*`; `projector.N.*` ->
  `encoder.head.N.*`; `momentum_backbone.*`, `momentum_projector.N.*` -> the momentum encoder's; `predictor.N.*` (v3)
  as is; not used: the online linear classifiers (`classifier.*`, `momentum_classifier.*`) and v2+'s two queues
  (`queue` 2×C×K, one per view of its symmetric loss). mocokit's single queue is then what a fresh model has: the
  checkpoint `mocokit import` writes holds K random unit keys (models/queue.py), and a run started from these
  weights (`model.init`) fills its queue with keys of its own training images before the first step
  (engine/dictionary_fill.py), as it does for every layout.
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
    if some(r"encoder_k\.module\.") or some(r"neck\.(mlp|fc)\."):
        return "mmpretrain"
    if some(r"backbone_momentum\.") or some(r"projection_head\."):
        return "lightly"
    if some(r"momentum_backbone\.") or some(r"projector\."):
        return "solo-learn"
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
        if fmt in ("moco-v1v2", "mmpretrain") and target == "queue.keys":
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


def _moved(name: str, prefixes: dict[str, str], rename=lambda rest, prefix: rest) -> str | None:
    """`name` under the target of the first of `prefixes` it starts with (its rest passed through `rename`)."""
    for prefix, target in prefixes.items():
        if name.startswith(prefix):
            return target + rename(name[len(prefix):], prefix)
    return None


_MMPRETRAIN = {"backbone.": "encoder.backbone.", "neck.": "encoder.head.",
               "encoder_k.module.0.": "momentum_encoder.backbone.", "encoder_k.module.1.": "momentum_encoder.head."}


def _mmpretrain_neck(rest: str, prefix: str) -> str:
    if not prefix.endswith(("neck.", "module.1.")):
        return rest
    match = re.fullmatch(r"mlp\.(\d+)\.(.+)", rest)  # MoCoV2Neck: Linear, ReLU, Linear
    if match:
        return f"{match.group(1)}.{match.group(2)}"
    return "0." + rest[len("fc."):] if rest.startswith("fc.") else rest  # v1's LinearNeck: fc; else: no place


def _mmpretrain(name: str, weights: ForeignWeights) -> str | None:
    if name == "encoder_k.steps":
        weights.ignored.append(f"{name!r} (the step counter of mmpretrain's moving average)")
        return None
    moved = _moved(name, _MMPRETRAIN, _mmpretrain_neck)
    return moved or {"queue": "queue.keys", "queue_ptr": "queue.ptr"}.get(name, "")


_LIGHTLY = {"backbone.": "encoder.backbone.", "backbone_momentum.": "momentum_encoder.backbone.",
            "projection_head.layers.": "encoder.head.", "projection_head_momentum.layers.": "momentum_encoder.head."}
# nn.Sequential(*list(resnet.children())[:-1]): the index of each torchvision ResNet child that holds tensors
_RESNET_CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def _lightly_backbone(rest: str, prefix: str) -> str:
    first, _, tail = rest.partition(".")
    if prefix.startswith("backbone") and first in _RESNET_CHILDREN:
        return f"{_RESNET_CHILDREN[first]}.{tail}"
    return rest  # a backbone under its own names (a timm model); a child index of no ResNet: no place


def _lightly(name: str, weights: ForeignWeights) -> str | None:
    if name.startswith("criterion."):
        weights.ignored.append(f"{name!r} (the memory bank of lightly's loss)")
        return None
    return _moved(name, _LIGHTLY, _lightly_backbone) or ""


_SOLO_LEARN = {"backbone.": "encoder.backbone.", "momentum_backbone.": "momentum_encoder.backbone.",
               "projector.": "encoder.head.", "momentum_projector.": "momentum_encoder.head.",
               "predictor.": "predictor."}


def _solo_learn(name: str, weights: ForeignWeights) -> str | None:
    if name.startswith(("classifier.", "momentum_classifier.")):
        weights.ignored.append(f"{name!r} (solo-learn's online linear classifier)")
        return None
    if name in ("queue", "queue_ptr"):
        weights.ignored.append(f"{name!r} (solo-learn's two queues, one per view; `mocokit import` writes random unit "
                               "keys, a run from model.init fills its queue from its own training images)")
        return None
    return _moved(name, _SOLO_LEARN) or ""


_RULES = {"moco-v1v2": _moco_v1v2, "moco-v3": _moco_v3, "torchvision": _backbone, "timm": _backbone,
          "mocokit": _mocokit, "mmpretrain": _mmpretrain, "lightly": _lightly, "solo-learn": _solo_learn}
