"""`auto` config values: a MoCo recipe derived from the user's images and this machine (docs/own-data.md).

Any config value written `auto` (in a YAML file, the `auto` preset, or an override such as `model.queue_size=auto`)
is replaced, before the config is validated, by a value derived from

- the dataset (`DatasetProfile`): its image count N (after `data.max_images`), the sizes and colour modes of an
  evenly spaced sample of images (headers only: nothing is decoded), whether it has labels;
- the machine (`MachineProfile`): the device, CPU cores, GPUs and their memory, the number of processes.

Each rule derives one key and says why in one line (`Choice.line`); the rules run in dependency order (the image
size decides the recipe and the stem, the batch decides the BatchNorm groups and the queue's lower bound, ...), and
a rule reads the values already resolved, the user's own values included. A value given explicitly is never
changed, so every choice is overridable with `key=value`. The resolved values are what `config.yaml` records.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from mocokit.config.loader import build_dataclass, merge_trees
from mocokit.data.config import DataConfig
from mocokit.data.sources import ArraySource, FileSource, open_source
from mocokit.errors import ConfigError

AUTO = "auto"
SAMPLED_HEADERS = 256  # images whose headers are read for the size and colour-mode statistics

# The crop sides that have an augmentation recipe (data/recipes.py): 32 (no blur), 64, 96 and 224 px.
RECIPE_SIZES = (32, 64, 96, 224)
CPU_MAX_SIZE = 96  # on a CPU a 224 px step costs (224/96)^2 = 5.4x a 96 px one: too slow to learn in hours
# The quarter-width recipe at 32 px trains 165-171 images/s of training time on 2 quiet cores with batched
# augmentation, 136 counting a 4-minute run's evaluations (benchmarks/own_data.py runs, seconds_spent): 150 between.
CPU_IMAGES_PER_SECOND = 150
CPU_DEFAULT_BUDGET = "20m"
CPU_IMAGES_SEEN = CPU_IMAGES_PER_SECOND * 20 * 60  # a CPU run without a budget: ~20 minutes of images
MIN_CPU_STEPS = 500  # the crop side on a CPU keeps at least this many steps of 128 in the run
MIN_GROUP = 8  # images per BatchNorm group: fewer make its batch statistics too noisy to train with
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


# ---------------------------------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class DatasetProfile:
    """What `auto` knows about the training images."""

    images: int  # N: the images pretraining will use (after data.max_images)
    short_side: int  # median over the sample of min(width, height), in pixels
    long_side: int  # median of max(width, height)
    non_square: float  # share of sampled images whose sides differ by more than 10%
    grayscale: float  # share of sampled images stored in a one-channel mode (L, I;16, ...)
    labelled: bool
    sampled: int  # images whose headers were read

    def summary(self) -> str:
        colour = "grayscale" if self.grayscale > 0.5 else ("mixed colour modes" if self.grayscale else "colour")
        shape = f"{self.non_square:.0%} non-square" if self.non_square else "square"
        side = f"{self.short_side} px" if self.short_side == self.long_side else \
            f"{self.short_side}x{self.long_side} px"
        return (f"{self.images:,} images, median {side}, {shape}, {colour}, "
                f"{'labelled' if self.labelled else 'unlabelled'} (from {self.sampled} sampled headers)")


@dataclass(frozen=True)
class MachineProfile:
    """What `auto` knows about the machine (of one process, under torchrun)."""

    device: str  # "cpu" or "cuda" (mps/xpu count as accelerators like cuda)
    cpu_cores: int  # cores this process may run on
    gpu_memory_gb: float  # of the process's GPU (0 on a CPU)
    processes: int  # WORLD_SIZE under torchrun, else 1

    @property
    def accelerator(self) -> bool:
        return self.device != "cpu"

    def summary(self) -> str:
        where = f"{self.device} ({self.gpu_memory_gb:.0f} GB)" if self.accelerator else \
            f"CPU, {self.cpu_cores} core{'s' if self.cpu_cores != 1 else ''}"
        return where + (f", {self.processes} processes" if self.processes > 1 else "")


def profile_machine(device: str = "auto") -> MachineProfile:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    kind = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                        ("cpu" if device == "auto" else device)).type
    memory = 0.0
    if kind == "cuda" and torch.cuda.is_available():
        memory = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 2**30
    return MachineProfile(kind, cores, memory, processes)


def profile_dataset(cfg: DataConfig) -> DatasetProfile:
    """N and the header statistics of up to SAMPLED_HEADERS evenly spaced training images."""
    split = "unlabeled" if cfg.path == "stl10" else "train"  # STL-10 pretrains on its unlabelled split
    source = open_source(cfg, split)
    n = len(source) if cfg.max_images is None else min(len(source), cfg.max_images)
    picks = np.unique(np.linspace(0, len(source) - 1, num=min(len(source), SAMPLED_HEADERS)).astype(int))
    sizes, gray = [], 0
    for index in picks:
        found = _size_and_mode(source, int(index))
        if found is None:
            continue  # unreadable: the data layer names it when it reads the images
        (width, height), mode = found
        sizes.append((min(width, height), max(width, height)))
        gray += mode in GRAY_MODES
    if not sizes:
        raise ConfigError(f"auto: none of the {len(picks)} sampled images of {cfg.path} could be read; check "
                          "data.path (auto needs readable images to choose the image size)")
    short, long = np.array(sizes).T
    return DatasetProfile(
        images=n, short_side=int(np.median(short)), long_side=int(np.median(long)),
        non_square=float(np.mean(long > 1.1 * short)), grayscale=gray / len(sizes),
        labelled=bool(source.classes), sampled=len(sizes),
    )


def _size_and_mode(source: FileSource | ArraySource, index: int) -> tuple[tuple[int, int], str] | None:
    if isinstance(source, ArraySource):
        height, width = source.read_array(index).shape[:2]
        return (width, height), "RGB"  # decoded sources hold RGB pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a decompression-bomb warning: the data layer decides about those
            with Image.open(io.BytesIO(source.read_bytes(index))) as image:  # the header only
                return image.size, image.mode
    except Exception:  # unreadable: skipped here, reported by the data layer
        return None


# ---------------------------------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Choice:
    key: str  # dotted, e.g. model.queue_size
    value: Any
    reason: str

    def line(self) -> str:
        return f"auto {self.key}={self.value}: {self.reason}"


class Resolved:
    """The config tree being resolved: values already chosen (or given), else the dataclass defaults."""

    def __init__(self, tree: dict[str, Any], defaults: dict[str, Any]) -> None:
        self.tree, self.defaults = tree, defaults

    def __getitem__(self, key: str) -> Any:
        for source in (self.tree, self.defaults):
            node: Any = source
            for part in key.split("."):
                node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
            if node is not _MISSING:
                return node
        raise KeyError(key)

    def set(self, key: str, value: Any) -> None:
        update: dict[str, Any] = {}
        node = update
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
        self.tree = merge_trees(self.tree, update)


_MISSING = object()


@dataclass(frozen=True)
class Rule:
    key: str
    derive: Callable[[Resolved, DatasetProfile, MachineProfile], tuple[Any, str]]


def _pow2_floor(x: float) -> int:
    return 1 << max(int(x), 1).bit_length() - 1


def _image_size(c: Resolved, data: DatasetProfile, machine: MachineProfile) -> tuple[int, str]:
    side = data.short_side
    fitting = [s for s in RECIPE_SIZES if s <= max(side * 1.5, RECIPE_SIZES[0])]  # upscale by at most 1.5x
    by_images = fitting[-1]
    if machine.accelerator:
        return by_images, (f"the largest crop side with a recipe ({', '.join(map(str, RECIPE_SIZES))} px) at most "
                           f"1.5x the images' median short side ({side} px)")
    # On a CPU the step's cost grows with the pixels: the side is the largest whose run still has MIN_CPU_STEPS
    # steps of 128 images in the time there is (measured: 28 steps at 96 px learned nothing in 4 minutes where
    # 240 steps at 32 px gained 5 points, benchmarks/own_data.json).
    seconds = _cpu_seconds(c)
    steps = {s: cpu_images_per_second(machine, s) * seconds / 128 for s in fitting}
    size = max((s for s in fitting if s <= CPU_MAX_SIZE and steps[s] >= MIN_CPU_STEPS), default=RECIPE_SIZES[0])
    if size == by_images:
        return size, (f"images of median short side {side} px: {size} px crops, ~{steps[size]:,.0f} steps of 128 in "
                      f"{seconds / 60:.0f} minutes on this CPU")
    which = f"the largest side with at least {MIN_CPU_STEPS} steps" if steps[size] >= MIN_CPU_STEPS else \
        f"the smallest side (fewer than {MIN_CPU_STEPS} steps even there)"
    return size, (f"images of median short side {side} px, but on {machine.cpu_cores} CPU cores "
                  f"{seconds / 60:.0f} minutes give ~{steps[by_images]:,.0f} steps of 128 at {by_images} px and "
                  f"~{steps[size]:,.0f} at {size} px: {size} px crops, {which} (a longer train.time_budget, or "
                  f"data.image_size={by_images}, for more detail)")


def cpu_images_per_second(machine: MachineProfile, side: int) -> float:
    """Training images per second of the quarter-width CPU recipe at `side` px: the rate measured at 32 px on 2
    cores, scaled by the cores and by the pixels (the convolutions' cost)."""
    return CPU_IMAGES_PER_SECOND * machine.cpu_cores / 2 * (32 / side) ** 2


def _cpu_seconds(c: Resolved) -> float:
    """The run's length on a CPU in seconds: its time budget, else the default budget's."""
    from mocokit.training.config import parse_duration

    budget = c["train.time_budget"]
    return parse_duration(budget if budget and budget != AUTO else CPU_DEFAULT_BUDGET)


def _recipe(c: Resolved, data: DatasetProfile, machine: MachineProfile) -> tuple[str, str]:
    version, size = c["model.version"], c["data.image_size"]
    if size <= 32:
        name, what = f"{version}-small", "no blur (a blur kernel is a third of a 32 px image), CIFAR statistics"
    elif size <= 64 and version != "v1":
        name, what = f"{version}-64", "blur kernel 7 px (10% of the side)"
    elif size <= 96 and version != "v1":
        name, what = f"{version}-96", "blur kernel 9 px (10% of the side)"
    else:
        name, what = version, "the paper's recipe"
    crop = "crop area 0.08-1" if version == "v3" else "crop area 0.2-1"
    gray = "; the images are grayscale: colour jitter acts as brightness/contrast only" if data.grayscale > 0.5 \
        else ""
    aspect = f"; {data.non_square:.0%} are non-square: crops are drawn from the whole image" \
        if data.non_square else ""
    return name, f"{size} px crops: {what}, {crop}{gray}{aspect}"


def _version(c: Resolved, data: DatasetProfile, machine: MachineProfile) -> tuple[str, str]:
    return "v2", ("MoCo v2: its queue supplies thousands of negatives at any batch size; v3 takes its negatives "
                  "from the batch and needs batches of 1,024-4,096 to match it")


def _backbone(c: Resolved, data: DatasetProfile, machine: MachineProfile) -> tuple[str, str]:
    if machine.accelerator and c["data.image_size"] >= 96 and data.images >= 100_000:
        return "resnet50", f"{data.images:,} images at {c['data.image_size']} px on a GPU: the papers' ResNet-50"
    return "resnet18", (f"{data.images:,} images" + ("" if machine.accelerator else " on a CPU")
                        + ": ResNet-18 (ResNet-50 pays from ~100,000 images at 96+ px on a GPU)")


def _cifar_stem(c: Resolved, data: DatasetProfile, machine: MachineProfile) -> tuple[bool, str]:
    size = c["data.image_size"]
    if size <= 96:
        return True, (f"{size} px crops: the 3x3 stride-1 stem without max-pool (the ImageNet stem would shrink "
                      f"them {4}x before the first block)")
    return False, f"{size} px crops: the ImageNet stem (7x7 stride 2, max-pool)"


def _width(c: Resolved, data: DatasetProfile, machine: MachineProfile) -> tuple[float, str]:
    if machine.accelerator:
        return 1.0, "the standard width on a GPU"
    if machine.cpu_cores <= 4:
        return 0.25, (f"{machine.cpu_cores} CPU cores: quarter width (16-32-64-128 channels, 16x fewer FLOPs), "
                      "which learns several times more epochs in the same time (docs/own-data.md)")
    if machine.cpu_cores <= 16:
        return 0.5, f"{machine.cpu_cores} CPU cores: half width (4x fewer FLOPs than the standard width)"
    return 1.0, f"{machine.cpu_cores} CPU cores: the standard width"


def _batch_size(c: Resolved, data: DatasetProfile, machine: MachineProfile) -> tuple[int, str]:
    wanted = 256 if machine.accelerator else 128
    why = "the papers' batch on a GPU" if machine.accelerator else \
        "on a CPU the measured CIFAR recipe's batch: more, smaller steps learn faster per minute than 256"
    cap = max(_pow2_floor(data.images / 8), 2)
    if cap < wanted:
        return max(cap, machine.processes), (f"{wanted} ({why}) capped at N/8 = {data.images / 8:.0f} (rounded down "
                                             "to a power of two) so that an epoch has at least 8 steps")
    return wanted, why


def _bn_splits(c: Resolved, data: DatasetProfile, machine: MachineProfile) -> tuple[int, str]:
    batch = c["train.batch_size"]
    if not c["model.shuffle_bn"] or c["model.version"] == "v3":
        return 1, "no shuffle BN (model.shuffle_bn off or MoCo v3): one BatchNorm group"
    if machine.processes > 1:
        return machine.processes, "one BatchNorm group per process: shuffle BN across processes, as the official code"
    groups = 8
    while groups > 1 and (batch % groups or batch // groups < MIN_GROUP):
        groups //= 2
    if groups == 1:
        return 1, (f"batch {batch}: too small for BatchNorm groups of {MIN_GROUP} images; shuffle BN cannot hide the "
                   f"batch statistics on one device with one group (raise train.batch_size to {2 * MIN_GROUP} or "
                   "more)")
    return groups, (f"{groups} groups of {batch // groups} images: on one device shuffle BN needs several BatchNorm "
                    "groups to hide the batch statistics (one group lets the encoder cheat: kNN 0.346 against 0.446, "
                    "calibration)")


def _queue_size(c: Resolved, data: DatasetProfile, machine: MachineProfile) -> tuple[int, str]:
    batch = c["train.batch_size"]
    staged = 2 * batch if c["model.symmetric"] else batch  # keys one step writes
    wanted = min(_pow2_floor(data.images / 8), 65536)
    if wanted < staged:
        return staged, (f"N/8 = {data.images / 8:.0f} is below the {staged} keys one step writes: K = {staged}, "
                        f"so a query meets an older key of its own image with probability ~K/N = "
                        f"{staged / data.images:.0%} (masked: model.mask_own_keys)")
    return wanted, (f"N/8 rounded down to a power of two: a query meets an older key of its own image with "
                    f"probability ~K/N = {wanted / data.images:.1%} (masked: model.mask_own_keys), and the keys "
                    f"are at most {wanted // staged} steps old (CIFAR-10's 50,000 images give the official demo's "
                    "4,096)")


def _lr(c: Resolved, data: DatasetProfile, machine: MachineProfile) -> tuple[float, str]:
    batch = c["train.batch_size"]
    base = 0.06 if c["model.symmetric"] else 0.03
    scaled = f"{base * batch / 256:.4g} at batch {batch}" if c["optim.scale_lr"] else "not scaled (optim.scale_lr)"
    loss = "the summed symmetric loss (the lightly CIFAR recipe)" if c["model.symmetric"] else "MoCo v2's value"
    return base, f"base lr {base} at batch 256 for {loss}, linear scaling rule (Goyal et al.): {scaled}"


def _epochs(c: Resolved, data: DatasetProfile, machine: MachineProfile) -> tuple[int, str]:
    budget = c["train.time_budget"]
    if budget:
        return 1000, f"the length comes from train.time_budget={budget}; 1000 epochs is only the upper bound"
    if machine.accelerator:
        epochs = int(min(max(round(10_000_000 / data.images / 50) * 50, 100), 800))
        return epochs, (f"about 10 million images seen ({epochs} epochs of {data.images:,}; the CIFAR demo's 200 "
                        "epochs of 50,000), between 100 and 800 epochs")
    epochs = max(round(CPU_IMAGES_SEEN / data.images), 1)
    return epochs, (f"about {CPU_IMAGES_SEEN:,} images seen ({epochs} epoch{'s' if epochs > 1 else ''} of "
                    f"{data.images:,}): ~20 minutes of the quarter-width recipe at 32 px on 2 CPU cores")


def _time_budget(c: Resolved, data: DatasetProfile, machine: MachineProfile) -> tuple[str | None, str]:
    if machine.accelerator:
        return None, "none on a GPU: the run's length is train.epochs"
    return CPU_DEFAULT_BUDGET, ("20 minutes on a CPU: the scale at which the CPU recipe's kNN rises clearly above "
                                "random init and raw pixels (docs/own-data.md); set train.time_budget=1h (or "
                                "train.epochs=N and train.time_budget=null) to change it")


def _momentum(c: Resolved, data: DatasetProfile, machine: MachineProfile) -> tuple[float, str]:
    epochs, budget = c["train.epochs"], c["train.time_budget"]
    steps = None if budget else epochs * max(data.images // c["train.batch_size"], 1)
    if steps is not None and steps >= 100_000:
        return 0.999, f"{steps:,} steps: the papers' 0.999 (the key encoder averages ~1,000 steps)"
    length = "a time-budgeted run" if steps is None else f"{steps:,} steps"
    return 0.99, (f"{length}: 0.99, the key encoder averaging ~100 steps (0.999's ~1,000 steps suit ImageNet-"
                  "length runs; CIFAR practice)")


def _num_workers(c: Resolved, data: DatasetProfile, machine: MachineProfile) -> tuple[int, str]:
    if not machine.accelerator and c["data.augment"] == "batched":
        return 0, ("batched augmentation on the CPU: the loader only stacks images, and worker processes would "
                   "take cores from the step")
    workers = max(min(machine.cpu_cores - 1, 8), 0)
    return workers, f"{workers} decoding processes ({machine.cpu_cores} cores, one left for the main process)"


# In dependency order: a rule may read the keys of the rules above it.
RULES: tuple[Rule, ...] = (
    Rule("model.version", _version),
    Rule("train.time_budget", _time_budget),
    Rule("data.image_size", _image_size),
    Rule("data.recipe", _recipe),
    Rule("model.backbone", _backbone),
    Rule("model.cifar_stem", _cifar_stem),
    Rule("model.width", _width),
    Rule("train.batch_size", _batch_size),
    Rule("model.bn_splits", _bn_splits),
    Rule("model.queue_size", _queue_size),
    Rule("optim.lr", _lr),
    Rule("train.epochs", _epochs),
    Rule("model.momentum", _momentum),
    Rule("data.num_workers", _num_workers),
)
AUTO_KEYS = tuple(rule.key for rule in RULES)


# ---------------------------------------------------------------------------------------------------- resolution


def auto_keys_in(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys whose value is `auto` in a config tree (keys such as train.compile, where auto is a legal
    value of its own, are not `auto` values here)."""
    found = []
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            found += auto_keys_in(value, dotted + ".")
        elif value == AUTO and dotted not in NATIVE_AUTO:
            found.append(dotted)
    return found


# keys whose own type has an `auto` value, resolved later by the code that uses them (not by a rule here), and the
# config's name (the `auto` preset is called auto)
NATIVE_AUTO = frozenset({"name", "train.device", "train.precision", "train.compile", "model.sync_bn", "data.labels",
                         "resume"})


@dataclass(frozen=True)
class Derivation:
    """What `auto` saw and chose: the lines printed at the start of a run and kept as comments in config.yaml."""

    data: DatasetProfile
    machine: MachineProfile
    choices: tuple[Choice, ...]  # in rule order

    def lines(self) -> list[str]:
        return ([f"auto: data {self.data.summary()}; machine {self.machine.summary()}"]
                + [choice.line() for choice in self.choices])


def resolve_auto(tree: dict[str, Any], defaults: dict[str, Any]) -> tuple[dict[str, Any], Derivation | None]:
    """Replace every `auto` value of `tree` by its rule's choice; `defaults` is the default config as a tree.
    Returns the resolved tree and what was chosen (None: no `auto` value). A key without a rule is a ConfigError."""
    wanted = auto_keys_in(tree)
    unknown = [key for key in wanted if key not in AUTO_KEYS]
    if unknown:
        raise ConfigError(f"{unknown[0]}=auto: this key has no automatic choice; keys that do: "
                          f"{', '.join(AUTO_KEYS)}")
    if not wanted:
        return tree, None
    resolved = Resolved(tree, defaults)
    if resolved["data.path"] in ("", None, AUTO):
        raise ConfigError("auto values need the images: set data.path=DIR (a folder, a .tar archive or cifar10)")
    data_tree = {k: v for k, v in resolved.tree.get("data", {}).items() if v != AUTO}
    data = profile_dataset(build_dataclass(DataConfig, data_tree, "data"))
    machine = profile_machine(str(resolved["train.device"]))
    return apply_rules(tree, defaults, data, machine)


def apply_rules(tree: dict[str, Any], defaults: dict[str, Any], data: DatasetProfile,
                machine: MachineProfile) -> tuple[dict[str, Any], Derivation]:
    """The rules for the `auto` values of `tree`, given what is known of the data and the machine."""
    wanted, resolved, choices = auto_keys_in(tree), Resolved(tree, defaults), []
    for rule in RULES:
        if rule.key in wanted:
            value, reason = rule.derive(resolved, data, machine)
            resolved.set(rule.key, value)
            choices.append(Choice(rule.key, value, reason))
    return resolved.tree, Derivation(data, machine, tuple(choices))
