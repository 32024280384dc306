import json
import math

import numpy as np
import pytest
import torch

from mocokit.reporting.encoding import decode_record, encode_record


def _strict_loads(line: str):
    """json.loads that rejects the non-standard NaN / Infinity tokens, like jq or JavaScript would."""
    def reject(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(line, parse_constant=reject)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_strict_json_and_round_trip(value):
    record = {"kind": "step", "loss": value, "grad_norm": {"head": value}, "list": [1.0, value]}
    line = encode_record(record)
    assert "\n" not in line
    _strict_loads(line)  # raises if a bare NaN / Infinity token was written
    back = decode_record(line)
    for decoded in (back["loss"], back["grad_norm"]["head"], back["list"][1]):
        assert isinstance(decoded, float)
        assert (math.isnan(decoded) and math.isnan(value)) or decoded == value


def test_finite_values_are_unchanged():
    record = {"kind": "epoch", "epoch": 3, "loss": 0.1 + 0.2, "knn_top1": None, "note": "ok", "flag": True}
    assert decode_record(encode_record(record)) == record


def test_tensor_and_numpy_scalars_become_numbers():
    record = {"kind": "step", "loss": torch.tensor(1.5), "lr": np.float32(0.25), "steps": np.int64(7),
              "bad": torch.tensor(float("nan"))}
    back = decode_record(encode_record(record))
    assert back["loss"] == 1.5 and back["lr"] == 0.25 and back["steps"] == 7
    assert type(back["steps"]) is int and math.isnan(back["bad"])


def test_bare_nan_tokens_from_other_writers_are_accepted():
    assert math.isnan(decode_record('{"kind": "step", "loss": NaN}')["loss"])


@pytest.mark.parametrize("line", ['{"kind": "step", "loss": 1.', "[1, 2]", "not json"])
def test_non_object_or_truncated_lines_raise_value_error(line):
    with pytest.raises(ValueError):
        decode_record(line)
