"""State dicts made safe for safetensors, and the load check run before anything is written."""

import pytest
import torch
from torch import nn

from mocokit.export import ExportError
from mocokit.export.tensors import check_loadable, standalone_tensors


def test_tensors_are_contiguous_copies_that_own_their_storage():
    module = nn.Linear(4, 3)
    module.register_buffer("strided", torch.arange(12.0).view(3, 4).t())  # a non-contiguous view
    tensors = standalone_tensors(module)
    assert all(t.is_contiguous() for t in tensors.values())
    assert tensors["weight"].data_ptr() != module.weight.data_ptr()
    tensors["weight"].zero_()
    assert module.weight.abs().sum() > 0  # the module is untouched
    assert torch.equal(tensors["strided"], module.strided)


def test_a_mismatch_names_missing_unexpected_and_misshaped_tensors():
    tensors = standalone_tensors(nn.Linear(4, 3))
    tensors["extra"] = torch.zeros(1)
    tensors["weight"] = torch.zeros(2, 4)
    del tensors["bias"]
    with pytest.raises(ExportError, match=r"missing: bias; unexpected: extra; wrong shape: weight"):
        check_loadable(tensors, nn.Linear(4, 3))
    check_loadable(standalone_tensors(nn.Linear(4, 3)), nn.Linear(4, 3, device="meta"))  # no error
