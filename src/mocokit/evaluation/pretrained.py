"""Load what a pretraining run produced: its config and its trained MoCo model (backbone, heads, key encoder)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mocokit.config.loader import apply_overrides, build_dataclass
from mocokit.data import DataConfig, get_recipe
from mocokit.data.per_image import eval_transform
from mocokit.errors import ConfigError
from mocokit.models import MoCo, build_model
from mocokit.training.checkpoint import LAST, CheckpointError, PretrainCheckpoint, load_checkpoint
from mocokit.training.run_config import Config
from mocokit.training.rundir import best_checkpoint, checkpoint_dir, newest_intact_checkpoint


@dataclass
class Pretrained:
    config: Config  # the run's config, with the caller's overrides applied (e.g. another data.path)
    model: MoCo  # in eval mode, on the CPU
    checkpoint: Path  # the file the weights came from
    step: int  # the training step of those weights

    @property
    def backbone(self) -> torch.nn.Module:
        return self.model.backbone


def read_run_checkpoint(run_or_checkpoint: str | Path,
                        say: Callable[[str], None] = print) -> tuple[Path, dict[str, Any]]:
    """The checkpoint an evaluation reads, and its payload. A run folder: its newest intact checkpoint, as
    resume=auto finds it (last.pt, else previous.pt, else the epoch copies), saying which file is used when
    last.pt is damaged; `RUN@best`: the run's best.pt (the best label-free score); a checkpoint file: that file.
    CheckpointError saying what is wrong and what to do."""
    path = best_checkpoint(run_or_checkpoint) or Path(run_or_checkpoint)
    if path.is_dir():
        used, payload, skipped = newest_intact_checkpoint(path)
        if used is None and not skipped:
            raise CheckpointError(f"{path} has no {checkpoint_dir(path).name}/{LAST}: is it a mocokit run folder "
                                  "that finished at least one epoch?")
        if used is None:
            raise CheckpointError(f"{path} holds checkpoints but none can be used: " + " | ".join(skipped)
                                  + " Evaluate a copy of the run that is intact, or pretrain again.")
        if skipped:
            say(f"using {used}, the newest intact checkpoint of {path}; skipped " + " | ".join(skipped))
        return used, payload
    if not path.exists():
        raise CheckpointError(f"{path}: no such run folder or checkpoint")
    try:
        return path, load_checkpoint(path)
    except CheckpointError as error:
        raise CheckpointError(f"{error} Evaluate another checkpoint of its run (previous.pt, epoch_NNNN.pt), or "
                              "give the run folder: its newest intact checkpoint is then used.") from None


def load_pretrained(run_or_checkpoint: str | Path, overrides: list[str] | None = None,
                    say: Callable[[str], None] = print) -> Pretrained:
    """The model of a run folder (its newest intact checkpoint: `read_run_checkpoint`) or checkpoint file, built
    from the config stored in the checkpoint.

    `overrides` (`section.key=value`) change the config for evaluation (data.path, data.num_workers, ...); overriding
    a `model.` key is refused, since the weights were trained for the stored model."""
    path, payload = read_run_checkpoint(run_or_checkpoint, say)
    saved = PretrainCheckpoint.from_payload(payload, path)
    overrides = list(overrides or [])
    model_keys = [o.split("=", 1)[0] for o in overrides if o.startswith("model.")]
    if model_keys:
        raise ConfigError(f"{', '.join(model_keys)}: the model is fixed by the checkpoint {path}; remove these")
    config = build_dataclass(Config, apply_overrides(saved.config, overrides))
    model = build_model(config)
    model.load_state_dict(saved.model)
    return Pretrained(config, model.eval(), path, saved.step)


@dataclass(frozen=True)
class Preprocessing:
    """What an encoder expects of an image, as its run saw it: brought to image_size × image_size (resize and centre
    crop), scaled to [0, 1], normalised with mean/std. Calling it on a PIL image gives that float tensor 3×S×S (the
    run's evaluation transform, also used by knn and linear)."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    transform: Callable  # PIL image -> float tensor 3×image_size×image_size

    @classmethod
    def of(cls, data: DataConfig) -> Preprocessing:
        recipe = get_recipe(data.recipe)
        return cls(data.image_size, tuple(recipe.mean), tuple(recipe.std), eval_transform(recipe, data.image_size))

    def __call__(self, image) -> torch.Tensor:
        return self.transform(image)


def load_run(run: str | Path, overrides: list[str] | None = None) -> Pretrained:
    """Everything a pretraining run produced, from a run folder (its newest intact checkpoint) or a checkpoint file:
    `.config`, `.model` (the MoCo model in eval mode, on the CPU), `.backbone`, `.checkpoint` (the file read) and
    `.step`. `overrides` as for `load_pretrained`."""
    return load_pretrained(run, overrides)


def load_encoder(run: str | Path) -> torch.nn.Module:
    """The pretrained backbone of a run folder or checkpoint file, in eval mode on the CPU: images N×3×S×S ->
    features N×`num_features`. Its `preprocess` attribute (a `Preprocessing`) holds the image size, mean and std
    of the run and turns a PIL image into the tensor the backbone expects:

        encoder = mocokit.load_encoder("runs/demo")
        features = encoder(encoder.preprocess(image)[None])  # 1×D
    """
    loaded = load_pretrained(run)
    encoder = loaded.backbone.eval()
    encoder.preprocess = Preprocessing.of(loaded.config.data)
    return encoder
