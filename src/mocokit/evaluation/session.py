"""The context every evaluation command shares: the encoder, the evaluation config, the device, and features of a
labelled split through the cache. Commands only parse arguments and call `open_session`, then one evaluation."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from mocokit.config.loader import to_tree
from mocokit.data import DataConfig
from mocokit.data.sources import ArraySource, FileSource
from mocokit.evaluation.cache import FeatureCache, cache_key, checkpoint_identity
from mocokit.evaluation.config import EvalConfig, load_eval_config, split_overrides
from mocokit.evaluation.datasets import LabelledSplit, labelled_source, test_split, train_split
from mocokit.evaluation.encoders import Encoder, pretrained_encoder, random_encoder, run_folder
from mocokit.features import extract_features
from mocokit.files import write_text_atomically
from mocokit.training.run_config import load_config
from mocokit.training.runtime import autocast_factory, resolve_device, resolve_precision

CACHE_DIR = "cache"
OUTPUT_DIR = "eval"  # RUN/eval/<command>.json, which the run's report lists (reporting/report.py: EVAL_DIR)
# The data settings that choose and decode the images (and so the features); the others (workers, memory) do not.
FEATURE_DATA_KEYS = ("path", "recipe", "image_size", "labels", "classes")  # subsets: by their indices


@dataclass
class EvalSession:
    encoder: Encoder
    config: EvalConfig
    device: torch.device
    cache: FeatureCache | None  # None: no caching (random initialisation, or eval.cache=false)
    output_dir: Path  # RUN/eval/: results files and plots
    echo: Callable[[str], None] = print
    protocols: list[str] = field(default_factory=list)  # the evaluation presets/files the config started from
    cache_hits: list[bool] = field(default_factory=list)  # one entry per `features` call: True when read back
    sources: dict[str, FileSource | ArraySource] = field(default_factory=dict)  # opened split indexes, by data+split

    def open_split(self, data: DataConfig, split: str) -> FileSource | ArraySource:
        """`labelled_source`, remembered for this session: every evaluation here reads the same splits."""
        key = json.dumps([to_tree(data), split], sort_keys=True, default=str)
        if key not in self.sources:
            self.sources[key] = labelled_source(data, split)
        return self.sources[key]

    def train_split(self, augment: bool = False, max_images: int | None = None) -> LabelledSplit:
        """The encoder's labelled training split (see `datasets.train_split`), seeded by eval.seed."""
        return train_split(self.encoder.config.data, self.config.eval.seed, augment, max_images, self.open_split)

    def test_split(self) -> LabelledSplit:
        """The encoder's held-out split, at most eval.test_images images."""
        return test_split(self.encoder.config.data, self.config.eval.seed, self.config.eval.test_images,
                          self.open_split)

    def describe(self) -> dict:
        """What was evaluated, for results files and JSON: the checkpoint, its step, the model, the data."""
        cfg = self.encoder.config
        return {"checkpoint": str(self.encoder.checkpoint), "step": self.encoder.step,
                "model": f"MoCo {cfg.model.version} {cfg.model.backbone}", "data": cfg.data.path,
                "label_fraction": cfg.data.label_fraction, "protocols": self.protocols}

    def save_result(self, name: str, record: dict) -> Path:
        """Write `record` as RUN/eval/<name>.json (replacing an earlier result of the same name, atomically: a reader
        sees the old file or the new one, never a part); returns the path."""
        path = write_text_atomically(self.output_dir / f"{name}.json", json.dumps(record, indent=2, default=str) + "\n")
        from mocokit.reporting.report import REPORT_FILE, write_report  # matplotlib: only when there is a report

        run_dir = self.output_dir.parent
        if (run_dir / REPORT_FILE).exists():  # the run's report lists its evaluations: draw it again
            write_report(run_dir)
        return path

    def loader(self, split: LabelledSplit, batch_size: int, shuffle: bool = False) -> DataLoader:
        """Batches (images, labels) of a split; a shuffled loader draws from its own generator seeded by eval.seed."""
        workers = self.encoder.config.data.num_workers
        return DataLoader(split.dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                          pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
                          generator=torch.Generator().manual_seed(self.config.eval.seed), drop_last=False)

    def features(self, split: LabelledSplit) -> tuple[torch.Tensor, torch.Tensor]:
        """Features N×D (float32, CPU) and labels N of `split` through the frozen backbone in eval mode, read from
        the cache when an entry for this checkpoint, data, subset and transform exists (and written otherwise)."""
        key = self._key(split) if self.cache is not None else None
        cached = self.cache.load(key) if self.cache is not None and key is not None else None
        self.cache_hits.append(cached is not None)
        if cached is not None:
            return cached
        cfg = self.encoder.config
        autocast = autocast_factory(self.device, resolve_precision(cfg.train.precision, self.device))
        backbone = self.encoder.backbone.to(self.device)
        features, labels = extract_features(backbone, self.loader(split, self.config.eval.batch_size), self.device,
                                            autocast=autocast)
        features, labels = features.cpu(), labels.cpu()
        if self.cache is not None and key is not None:
            self.cache.save(key, features, labels)
        return features, labels

    def _key(self, split: LabelledSplit) -> str:
        assert self.encoder.checkpoint is not None
        data = to_tree(self.encoder.config.data)
        return cache_key({
            "checkpoint": checkpoint_identity(self.encoder.checkpoint),
            "data": {name: data[name] for name in FEATURE_DATA_KEYS},
            "split": split.name,
            "indices": split.indices,
            "transform": repr(split.transform),
            "precision": self.encoder.config.train.precision,
        })


def open_session(run_or_checkpoint: str | Path, overrides: Sequence[str],
                 default_protocols: Callable[[Encoder], list[str]] = lambda _encoder: [],
                 protocol: str | None = None, echo: Callable[[str], None] = print) -> EvalSession:
    """Load the run's encoder with the run-config overrides, and the evaluation config: `protocol` (a preset name or
    YAML file; when None, `default_protocols(encoder)`) then the evaluation overrides. Both kinds of override come
    in one list; a key of neither config is a ConfigError."""
    run_overrides, eval_overrides = split_overrides(overrides)
    encoder = pretrained_encoder(run_or_checkpoint, run_overrides, echo)
    protocols = [protocol] if protocol else default_protocols(encoder)
    config = load_eval_config(protocols, eval_overrides)
    cfg = encoder.config
    assert encoder.checkpoint is not None
    root = run_folder(encoder.checkpoint)
    cache = FeatureCache(root / CACHE_DIR) if config.eval.cache else None
    return EvalSession(encoder, config, resolve_device(cfg.train.device), cache, root / OUTPUT_DIR, echo,
                       protocols=protocols)


def random_init_session(session: EvalSession, config_source: str | Path) -> EvalSession:
    """The same evaluation at random initialisation of the network of `config_source` (a preset or YAML file): its
    `model` section, with everything else (data, overrides included, train.seed, precision) from the run's config,
    initialised as a pretraining run of that config starts (`random_encoder`). With the run's own config this is
    the network pretraining started from, the one its kNN baseline measured. Its features are not cached.
    ConfigError for a config that cannot be loaded, before anything is computed."""
    model = load_config(config_source).model
    if to_tree(model) != to_tree(session.encoder.config.model):
        session.echo(f"note: --random-init {config_source} builds another model than the run's; the comparison is "
                     "not of the same network")
    encoder = random_encoder(replace(session.encoder.config, model=model))
    return EvalSession(encoder, session.config, session.device, None, session.output_dir, session.echo,
                       protocols=session.protocols, sources=session.sources)
