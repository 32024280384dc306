"""Metric records as TensorBoard scalars: which tags a record becomes, and the optional event-file writer."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

TENSORBOARD_DIR = "tensorboard"
NOT_SCALARS = ("kind", "step", "time")  # bookkeeping: the global step and wall time are passed separately


def scalar_tags(record: dict[str, Any]) -> dict[str, float]:
    """The numeric scalars of `record` as {tag: value}. Top-level numbers are tagged `<kind>/<key>`
    (`step/loss`, `epoch/knn_top1`); a nested dict is its own group, `<key>/<subkey>`
    (`grad_norm/blocks.0.attn`), flattened to any depth with `/`. Booleans, strings, None and lists are not
    scalars and are left out; NaN and infinity are kept (TensorBoard shows them)."""
    kind = str(record.get("kind", "record"))
    tags: dict[str, float] = {}

    def visit(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                visit(f"{prefix}/{key}", item)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            tags[prefix] = float(value)

    for key, value in record.items():
        if key in NOT_SCALARS:
            continue
        visit(str(key) if isinstance(value, dict) else f"{kind}/{key}", value)
    return tags


class TensorBoardSink:
    """Writes records' scalars into event files under `log_dir`. When TensorBoard cannot be imported it warns
    once (at construction) and every call is a no-op, so training never fails for want of TensorBoard."""

    def __init__(self, log_dir: Path, flush_secs: int = 30) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception as error:  # ImportError when missing; a broken install (protobuf mismatch) raises others
            warnings.warn(f"TensorBoard logging is off ({error}); metrics.jsonl is still written",
                          stacklevel=3)
            self.writer = None
        else:
            self.writer = SummaryWriter(log_dir=str(log_dir), flush_secs=flush_secs)

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def write(self, record: dict[str, Any]) -> None:
        """Each scalar of `record` at global step record["step"] (0 when absent), wall time record["time"]."""
        if self.writer is None:
            return
        step = record.get("step")
        step = int(step) if isinstance(step, (int, float)) and math.isfinite(step) else 0
        walltime = record.get("time")
        walltime = float(walltime) if isinstance(walltime, (int, float)) else None
        for tag, value in scalar_tags(record).items():
            self.writer.add_scalar(tag, value, global_step=step, walltime=walltime)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
