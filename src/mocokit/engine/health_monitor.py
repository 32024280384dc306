"""The label-free health monitor: is the encoder learning or collapsing, on data without labels?

On a fixed, seeded sample of training images (the same images and the same two augmented views at every
measurement, so that measurements differ only by the weights), with the model in eval mode and without gradients:
- `rank`: RankMe effective rank of the backbone features of the first views (`mocokit.health.effective_rank`);
- `alignment`: between the normalised head outputs of the two views (`alignment`, α = 2);
- `uniformity`: of the normalised head outputs, the mean over both views (`uniformity`, t = 2);
- `dimension_std`: mean per-dimension std of the normalised head outputs of both views (`mean_dimension_std`).
The predictor (v3) is left out: these describe the encoder's embedding, the one the dictionary's keys live in.
Nothing here draws from the global random generators, so a resumed run trains exactly as one that was not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from mocokit.data.subset import seeded_subset
from mocokit.health import alignment, effective_rank, mean_dimension_std, uniformity
from mocokit.models import MoCo
from mocokit.training.sampling import SeededSamples

COLLAPSE_FACTOR = 0.5  # a warning when the rank or the std falls below this fraction of its previous measurement
COLLAPSE_CAUSES = ("learning rate too high (optim.lr), no shuffle BN or a single BatchNorm group "
                   "(model.shuffle_bn, model.bn_splits), a queue too large for the dataset (model.queue_size), "
                   "momentum 0 (model.momentum)")
# Measured (README, "The run folder"): one sample image (two views, eval-mode forwards) costs about 0.22 of a training
# image, so a sample of at most a fifth of the training set keeps the monitor under ~5% of an epoch; not below 64.
SAMPLE_FRACTION, MIN_SAMPLE = 5, 64
SAMPLE_SEED_OFFSET = 7919  # the health sample is drawn apart from the kNN monitor's (train.seed, train.seed + 1)


class HealthMonitor:
    """Health metrics of a MoCo model on `size` images of `dataset` (a pretraining dataset: items (views, label,
    index); views are two float tensors, or one uint8 image that `batch_augment(images, generator)` turns into two)."""

    def __init__(self, dataset: Dataset, size: int, seed: int, device: torch.device,
                 batch_augment: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None,
                 batch_size: int = 256, channels_last: bool = False, autocast=nullcontext) -> None:
        sample = seeded_subset(dataset, size, seed + SAMPLE_SEED_OFFSET)
        self.size = len(sample)
        self.seed, self.device, self.batch_augment = seed, device, batch_augment
        self.channels_last, self.autocast = channels_last, autocast
        # epoch key 0 for every image at every measurement: the same augmented views each time
        self.loader = DataLoader(SeededSamples(sample, seed + SAMPLE_SEED_OFFSET),
                                 sampler=[(0, i) for i in range(self.size)], batch_size=batch_size,
                                 generator=torch.Generator())  # keeps the loader off the global RNG
        self.previous: dict[str, float] | None = None

    @torch.no_grad()
    def measure(self, model: MoCo, warn: Callable[[str], None] = print, remember: bool = True) -> dict[str, Any]:
        """{"rank", "alignment", "uniformity", "dimension_std", "health_seconds"} for the model's current weights;
        `warn` gets one line when the rank or the std fell below COLLAPSE_FACTOR × its previous value. With
        remember=False (a time budget timing one measurement) the next measurement is not compared with this one."""
        started = time.perf_counter()
        encoder = model.encoder
        was_training = encoder.training
        encoder.eval()  # BatchNorm's running statistics: the measurement changes nothing in the model
        generator = (torch.Generator(self.device).manual_seed(self.seed) if self.batch_augment is not None
                     else None)
        features, z1, z2 = [], [], []
        try:
            for views, *_ in self.loader:
                view1, view2 = self._views(views, generator)
                with self.autocast():
                    f1 = encoder.backbone(view1)  # B×D
                    features.append(f1.float())
                    z1.append(encoder.head(f1).float())  # B×C
                    z2.append(encoder(view2).float())  # B×C
        finally:
            encoder.train(was_training)
        f, q1, q2 = torch.cat(features), torch.cat(z1), torch.cat(z2)  # N×D, N×C, N×C
        record = {
            "rank": effective_rank(f).item(),
            "alignment": alignment(q1, q2).item(),
            "uniformity": ((uniformity(q1) + uniformity(q2)) / 2).item(),
            "dimension_std": mean_dimension_std(torch.cat([q1, q2])).item(),
        }
        if remember:
            message = collapse_warning(self.previous, record)
            if message:
                warn(message)
            self.previous = record
        return {**record, "health_seconds": time.perf_counter() - started}

    def _views(self, views: Any, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        # batched backend: uint8 B×C×R×R items (data/datasets.py BatchItem): C = 4 where a fourth channel marks each
        # image's extent in its square (non-square images), C = 3 for datasets known square. Augmented on the device.
        if self.batch_augment is not None:
            view1, view2 = self.batch_augment(views.to(self.device), generator=generator)
        else:
            view1, view2 = (v.to(self.device) for v in views)
        if self.channels_last:
            view1 = view1.contiguous(memory_format=torch.channels_last)
            view2 = view2.contiguous(memory_format=torch.channels_last)
        return view1, view2


def collapse_warning(previous: dict[str, float] | None, current: dict[str, float],
                     factor: float = COLLAPSE_FACTOR) -> str | None:
    """One line naming what fell and the likely causes, when the rank or the dimension std of `current` is below
    `factor` × its value in `previous`; None otherwise (and at the first measurement)."""
    if previous is None:
        return None
    fallen = [f"{name} {previous[key]:.3g} -> {current[key]:.3g}"
              for key, name in (("rank", "effective rank"), ("dimension_std", "per-dimension std"))
              if previous[key] > 0 and current[key] < factor * previous[key]]
    if not fallen:
        return None
    return (f"warning: the representation may be collapsing ({', '.join(fallen)} since the last measurement); "
            f"likely causes: {COLLAPSE_CAUSES}")


def build_health_monitor(cfg, dataset: Dataset, device: torch.device, batch_augment, autocast,
                         say: Callable[[str], None]) -> HealthMonitor | None:
    """The health monitor of a run's config on its training dataset: `monitor.health_images` images (0: None), but
    at most a fifth of the dataset (at least 64), so that it costs under ~5% of an epoch."""
    if not cfg.monitor.health_images:
        return None
    size = min(cfg.monitor.health_images, max(MIN_SAMPLE, len(dataset) // SAMPLE_FRACTION))
    monitor = HealthMonitor(dataset, size, cfg.train.seed, device, batch_augment,
                            batch_size=min(cfg.train.batch_size, 256), channels_last=cfg.train.channels_last,
                            autocast=autocast)
    say(f"health monitor: {monitor.size} training images, two views each, every "
        f"{cfg.monitor.health_every_epochs} epoch(s): effective rank, alignment, uniformity, per-dimension std")
    return monitor
