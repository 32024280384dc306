"""The run folder's `metrics.jsonl`: appending records while training, and reading them back for reports.

One JSON object per line, each with a "kind" ("step", "epoch", "baseline", "final"; other kinds are kept too).
Non-finite floats are written as the strings "NaN" / "Infinity" / "-Infinity" (see `encoding`) and read back
as floats. A resumed run appends to the same file and re-logs the steps after its checkpoint; `read_metrics`
resolves that so callers see one consistent history.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

from mocokit.reporting.encoding import decode_record, encode_record
from mocokit.reporting.tensorboard_sink import TENSORBOARD_DIR, TensorBoardSink

METRICS_FILE = "metrics.jsonl"
KINDS = ("step", "epoch", "baseline", "final")  # always present in `read_metrics`' result, possibly empty

Metrics = dict[str, list[dict[str, Any]]]


class MetricsWriter:
    """Appends records to `run_dir/metrics.jsonl` (created with its folder if needed) and mirrors their
    numeric scalars to TensorBoard event files in `run_dir/tensorboard/`.

    Each `log` writes one whole line and flushes it, so a killed process loses at most the line being written.
    If the file already ends in a partial line (a previous process was killed mid-write), a newline is written
    first so that the partial line stays on its own and the reader skips it. Create it on the main process
    only.
    """

    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / METRICS_FILE
        ends_mid_line = (self.path.is_file() and self.path.stat().st_size > 0
                         and not _ends_with_newline(self.path))
        self.file = self.path.open("a", encoding="utf-8")
        if ends_mid_line:
            self.file.write("\n")
            self.file.flush()
        self.tensorboard = TensorBoardSink(run_dir / TENSORBOARD_DIR) if tensorboard else None

    def log(self, record: dict[str, Any]) -> None:
        """Append `record` as one line of strictly valid JSON, flush it, then write its scalars to TensorBoard
        (tags `<kind>/<key>` and `<dict name>/<key>`, global step record["step"])."""
        if "kind" not in record:
            raise ValueError(f"a metrics record needs a 'kind' (step, epoch, baseline, final): {record!r}")
        if self.file.closed:
            raise ValueError(f"MetricsWriter for {self.path} is closed")
        self.file.write(encode_record(record) + "\n")
        self.file.flush()
        if self.tensorboard is not None:
            self.tensorboard.write(record)

    def close(self) -> None:
        """Flush and close the file and the event writer; closing twice is harmless."""
        if not self.file.closed:
            self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as file:
        file.seek(-1, 2)
        return file.read(1) == b"\n"


def empty_metrics() -> Metrics:
    """The result of reading a file with no records: each standard kind with an empty list."""
    return {kind: [] for kind in KINDS}


def _finite_number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _key(record: dict[str, Any]) -> float | None:
    """What identifies a record within its kind: the epoch number for epoch records, else the global step.
    Records without one (None) share a key, so only the last of them is kept."""
    return _finite_number(record.get("epoch" if record["kind"] == "epoch" else "step"))


def _sort_key(record: dict[str, Any]) -> tuple[float, float]:
    step = _finite_number(record.get("step"))
    epoch = _finite_number(record.get("epoch"))
    return (-math.inf if step is None else step, -math.inf if epoch is None else epoch)


def read_metrics(path: Path, missing_ok: bool = False) -> Metrics:
    """The records of a metrics file grouped by kind: {"step": [...], "epoch": [...], "baseline": [...],
    "final": [...], <other kinds>: [...]}, each list sorted by step (epoch records by step, then epoch).

    Promises:
    - Duplicates: for each (kind, step) — (kind, epoch) for epoch records — only the last record in the file
      is kept.
    - Resumes: when a step record's step is lower than an earlier step record's, a resumed run is re-running
      from its checkpoint; every earlier record (any kind) at that step or later belongs to the abandoned
      attempt and is dropped, even if the new attempt has not re-logged it yet. Records without a step (e.g.
      baseline) are kept.
    - Damage: a line that is not a JSON object with a "kind" (typically the last line, cut short by a kill) is
      skipped; blank lines are ignored. Only damage before the last line is warned about.
    - Non-finite floats written as "NaN" / "Infinity" / "-Infinity" (or bare NaN tokens) come back as floats.
    - A missing file raises FileNotFoundError, or gives `empty_metrics()` when `missing_ok`.
    """
    path = Path(path)
    if missing_ok and not path.exists():
        return empty_metrics()
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    kept: dict[str, dict[float | None, dict[str, Any]]] = {}
    last_step = -math.inf  # highest step among step records seen so far
    damaged: list[int] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = decode_record(line)
        except ValueError:  # json.JSONDecodeError is a ValueError
            record = None
        if record is None or not isinstance(record.get("kind"), str):
            if number < len(lines):
                damaged.append(number)
            continue
        step = _finite_number(record.get("step"))
        if record["kind"] == "step" and step is not None:
            if step < last_step:  # a resume: drop the abandoned attempt's records from this step on
                for records in kept.values():
                    abandoned = [key for key, earlier in records.items()
                                 if (s := _finite_number(earlier.get("step"))) is not None and s >= step]
                    for key in abandoned:
                        del records[key]
            last_step = step
        kept.setdefault(record["kind"], {})[_key(record)] = record
    if damaged:
        where = ", ".join(map(str, damaged[:5])) + (", ..." if len(damaged) > 5 else "")
        warnings.warn(f"{path}: skipped {len(damaged)} unreadable line(s) (line {where})", stacklevel=2)
    metrics = empty_metrics()
    for kind, records in kept.items():
        metrics[kind] = sorted(records.values(), key=_sort_key)
    return metrics
