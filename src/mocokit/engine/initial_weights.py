"""`model.init`: a pretraining run that starts from weights in a file (continued pretraining on one's own images).

The query and key encoders (and the heads and predictor, when the file has them) are loaded strictly
(`mocokit.weights.load_weights`); the dictionary is not: a queue filled by another run on other images is stale, so
it starts as random unit keys, as in any run, and is refreshed by the first K/B steps. The source is recorded by
its path and SHA-256 (printed, and as a comment at the end of the run's config.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from mocokit.training.rundir import newest_intact_checkpoint
from mocokit.weights import WeightsError, load_weights, read_weights
from mocokit.weights.read import file_sha256


@dataclass(frozen=True)
class InitSource:
    path: Path  # the file the weights were read from (a run folder's newest intact checkpoint)
    sha256: str
    summary: str  # what was loaded and what was not

    def yaml_comment(self) -> str:
        return f"# model.init: {self.path} ({self.sha256}): {self.summary}\n"


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
    weights = read_weights(path, content=content)
    report = load_weights(model, weights, dictionary=False)
    summary = f"{weights.layout} layout, {report.describe()}; queue: random unit keys"
    return InitSource(path, weights.sha256, summary)


def recorded_source(init: str) -> InitSource:
    """The record of a resumed run's model.init, whose weights come from its own checkpoint."""
    path = Path(init)
    sha256 = file_sha256(path) if path.is_file() else "not re-read: the run resumed from its own checkpoint"
    return InitSource(path, sha256, "the run's first weights (it resumed from its own checkpoint since)")
