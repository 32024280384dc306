"""JSON encoding of metric records that survives NaN and infinity.

Standard JSON has no NaN or infinity, and Python's `json.dumps` writes them as the bare tokens
`NaN`/`Infinity`, which strict parsers (jq, JavaScript, pandas with some engines) reject. A diverging run is
exactly when a NaN loss matters, so dropping it (null) would hide the event. We therefore write a non-finite
float as one of the strings "NaN", "Infinity", "-Infinity" (the spellings `float()` and JavaScript's
`Number()` both parse), and turn those exact strings back into floats when reading. The bare tokens are also
accepted when reading.
"""

from __future__ import annotations

import json
import math
from typing import Any

NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _encode_float(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def to_json_value(value: Any) -> Any:
    """A copy of `value` that `json.dumps(..., allow_nan=False)` accepts: non-finite floats become the strings
    above, 0-dim tensors and numpy scalars (anything with `.item()`) become Python numbers, tuples become
    lists, mapping keys become strings, and anything else unknown becomes its `str()`."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return _encode_float(value)
    if isinstance(value, dict):
        return {str(key): to_json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(item) for item in value]
    if hasattr(value, "item"):  # torch / numpy scalar
        return to_json_value(value.item())
    return str(value)


def from_json_value(value: Any) -> Any:
    """Inverse of `to_json_value` for non-finite floats: the strings "NaN", "Infinity", "-Infinity" (anywhere
    in nested dicts and lists) become floats; everything else is returned unchanged."""
    if isinstance(value, str):
        return NON_FINITE.get(value, value)
    if isinstance(value, dict):
        return {key: from_json_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_json_value(item) for item in value]
    return value


def encode_record(record: dict[str, Any]) -> str:
    """One line of strictly valid JSON (no newline), whatever floats `record` holds."""
    return json.dumps(to_json_value(record), allow_nan=False, separators=(", ", ": "))


def decode_record(line: str) -> dict[str, Any]:
    """The record on one line, non-finite floats restored. Raises ValueError when the line is not a JSON
    object (for example a line cut short by a kill)."""
    value = json.loads(line)  # also accepts the bare NaN / Infinity tokens other writers produce
    if not isinstance(value, dict):
        # ValueError, not TypeError: callers treat every unreadable line alike (json's errors are ValueErrors)
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")  # noqa: TRY004
    return from_json_value(value)
