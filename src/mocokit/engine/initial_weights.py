"""`model.init`: a pretraining run that starts from weights in a file (continued pretraining on one's own images).

The query and key encoders (and the heads and predictor, when the file has them) are loaded strictly
(`mocokit.weights.load_weights`); the dictionary is not: a queue filled by another run on other images is stale.
Instead, before the first step, the run fills its queue (or memory bank) with keys of its own training images
computed by the loaded encoders (engine/dictionary_fill.py). The source is recorded: as given (a path, or a model
zoo name), the file it resolved to, its SHA-256 and what was loaded; printed, as a comment at the end of the run's
config.yaml, and as an "init" record in metrics.jsonl (with the fill), which the run's report.html shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from mocokit.engine.dictionary_fill import DictionaryFill
from mocokit.training.rundir import newest_intact_checkpoint
from mocokit.weights import WeightsError, load_weights, read_weights
from mocokit.weights.read import file_sha256
from mocokit.weights.zoo import ZOO, cache_dir, looks_like_zoo_name


@dataclass(frozen=True)
class InitSource:
    path: Path  # the file read: a run folder's newest intact checkpoint, a zoo name's cached file, or model.init
    sha256: str
    summary: str  # what was loaded and what was not
    given: str = ""  # model.init as written: a path, a run folder, or a model zoo name ("": as path)

    @property
    def source(self) -> str:
        """model.init and, when it named something else (a zoo name, a run folder), the file it resolved to."""
        given = self.given or str(self.path)
        return given if given == str(self.path) else f"{given} = {self.path}"

    def yaml_comment(self) -> str:
        return f"# model.init: {self.source} ({self.sha256}): {self.summary}\n"

    def record(self, fill: DictionaryFill | None) -> dict:
        """The metrics.jsonl record of a fresh start from these weights (shown by the run's report.html)."""
        return {"kind": "init", "step": 0, "given": self.given or str(self.path), "path": str(self.path),
                "sha256": self.sha256, "summary": self.summary, "fill": fill.record() if fill is not None else None}


def load_initial_weights(model: nn.Module, init: str) -> InitSource:
    """Load `init` (a mocokit run folder, or any file `read_weights` reads) into `model` before its first step.
    WeightsError naming the file and the first tensor that does not fit the run's model."""
    path, content = Path(init), None
    if path.is_dir():  # a run folder (e.g. written by `mocokit import`): its newest checkpoint, checksum verified
        used, content, skipped = newest_intact_checkpoint(path)
        if used is None:
            raise WeightsError(f"model.init={init}: no intact checkpoint in that folder" +
                               (f" ({' | '.join(skipped)})" if skipped else ""))
        path = used
    weights = read_weights(path, content=content)  # a zoo name: its cached file (weights.path), downloaded once
    report = load_weights(model, weights, dictionary=False)
    summary = f"{weights.layout} layout, {report.describe()}"
    return InitSource(Path(weights.path), weights.sha256, summary, given=init)


def recorded_source(init: str) -> InitSource:
    """The record of a resumed run's model.init, whose weights come from its own checkpoint."""
    path = Path(init)
    if looks_like_zoo_name(init) and init in ZOO:
        path = cache_dir() / ZOO[init].filename  # not downloaded again: only its record is wanted
    sha256 = file_sha256(path) if path.is_file() else "not re-read: the run resumed from its own checkpoint"
    return InitSource(path, sha256, "the run's first weights (it resumed from its own checkpoint since)", given=init)
