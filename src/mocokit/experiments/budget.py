"""What an experiment costs on the 2-core CPU machine, estimated before running it: images processed (pretraining
epochs × images × variants × seeds, plus the kNN evaluations and an experiment's own fine-tuning) divided by the
measured speed of each network, plus a fixed cost per run. The medium scale is designed to stay within
`MEDIUM_BUDGET_MINUTES`; tests/experiments checks every experiment against it.

The rates are estimates from earlier measurements on this machine, not measured here:
- ResNet-18 ×0.25 (the `demo` network) at 32 px, batch 128: 150 images/s including data (`training/auto.py`'s CPU
  rate: 165-171 images/s of training time, 136 with a short run's evaluations; calibration.md);
- ViT-tiny at 32 px: 15 images/s with patch 4 (64 tokens; README Performance: 15.1 for the step) and 45 with
  patch 8 (16 tokens; the small `transfer` run pretrained 20,480 images in 7.3 minutes, 47/s with its kNN), each
  scaled by 12 / depth for fewer blocks; other ResNet widths by (0.25 / width)² (the FLOPs).
"""

from __future__ import annotations

from dataclasses import dataclass

from mocokit.training.run_config import Config, load_config

MEDIUM_BUDGET_MINUTES = 60.0  # all variants and seeds of one experiment at the medium scale, on 2 CPU cores
RESNET_QUARTER_IMAGES_PER_S = 150.0
VIT_TINY_IMAGES_PER_S = {4: 15.0, 8: 45.0}  # by patch side, 12 blocks, 32 px
# A forward pass of one image (kNN bank and queries, test images) against one pretraining image (two views forward
# and backward through the query encoder, two forward through the key encoder): about a quarter (calibration.md:
# 704 forward against 247 forward+backward images/s for one view).
FORWARD_COST = 0.25
SUPERVISED_COST = 0.4  # one view forward and backward (fine-tuning, a from-scratch network) against a MoCo image
END_TO_END_COST = 1.5  # end-to-end: the key side is back-propagated too (4 instead of 2 backward passes per image)
# Per run: start, decoding the images into memory, the raw-pixel kNN baseline, checkpoints. The small dictionary
# runs took 2.1-2.4 minutes where their images and kNN at the rates above give 1.75: about 30 s more each.
RUN_OVERHEAD_SECONDS = 30.0
CIFAR10_TRAIN_PER_CLASS, CIFAR10_TEST_PER_CLASS, CIFAR10_CLASSES = 5000, 1000, 10


def images_per_second(cfg: Config) -> float:
    """The estimated pretraining speed of `cfg`'s network on this machine (see the module's docstring)."""
    model = cfg.model
    if model.is_vit:
        if model.backbone != "vit_tiny" or model.patch_size not in VIT_TINY_IMAGES_PER_S:
            raise ValueError(f"no speed estimate for {model.backbone} with patch {model.patch_size}")
        return VIT_TINY_IMAGES_PER_S[model.patch_size] * 12 / model.backbone_args.get("depth", 12)
    if model.backbone != "resnet18":
        raise ValueError(f"no speed estimate for {model.backbone}")
    return RESNET_QUARTER_IMAGES_PER_S * (0.25 / model.width) ** 2


def _classes(cfg: Config) -> int:
    return len(cfg.data.classes) if cfg.data.classes else CIFAR10_CLASSES


def train_images(cfg: Config) -> int:
    """The images a pretraining epoch of `cfg` visits on CIFAR-10 (data.classes and data.max_images applied)."""
    split = _classes(cfg) * CIFAR10_TRAIN_PER_CLASS
    return min(split, cfg.data.max_images or split)


def knn_images(cfg: Config) -> int:
    """The images one kNN evaluation of the monitor passes through the network: its bank (from the whole labelled
    training split) and its queries (test images)."""
    train, test = _classes(cfg) * CIFAR10_TRAIN_PER_CLASS, _classes(cfg) * CIFAR10_TEST_PER_CLASS
    return min(cfg.monitor.knn_bank_size or train, train) + min(cfg.monitor.knn_query_size or test, test)


def pretraining_cost(cfg: Config) -> float:
    """Pretraining `cfg` in images of pretraining cost: epochs × images (end-to-end dearer), plus each kNN
    evaluation (every monitor.knn_every_epochs, after the last epoch and once at random initialisation)."""
    images = cfg.train.epochs * train_images(cfg) * (END_TO_END_COST if cfg.model.dictionary == "end_to_end" else 1)
    every = cfg.monitor.knn_every_epochs
    if not every:
        return images
    evaluations = cfg.train.epochs // every + (cfg.train.epochs % every > 0) + cfg.monitor.knn_baseline
    return images + evaluations * knn_images(cfg) * FORWARD_COST


@dataclass(frozen=True)
class RunEstimate:
    label: str
    seed: int | None
    images: float  # in images of pretraining cost: pretraining, its kNN and the experiment's own evaluation
    images_per_second: float

    @property
    def minutes(self) -> float:
        return (self.images / self.images_per_second + RUN_OVERHEAD_SECONDS) / 60


def estimate(experiment, mode: str = "medium", overrides: tuple[str, ...] = ()) -> list[RunEstimate]:
    """Every run of `experiment` in `mode` (each variant, once per seed) with its estimated cost on CIFAR-10."""
    runs = []
    for variant in experiment.variants_for(mode):
        for seed in experiment.seeds_for(mode) or (None,):
            cfg = load_config(*experiment.config_for(variant, mode, overrides, seed))
            images = pretraining_cost(cfg)
            if experiment.evaluate_cost is not None:
                images += experiment.evaluate_cost(cfg, mode)
            runs.append(RunEstimate(variant.label, seed, images, images_per_second(cfg)))
    return runs


def estimated_minutes(experiment, mode: str = "medium") -> float:
    """The estimated minutes of all of `experiment`'s runs in `mode` on this machine."""
    return sum(run.minutes for run in estimate(experiment, mode))
