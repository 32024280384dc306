"""The evaluation config: protocol presets, overrides routed to the run or the evaluation, clear errors."""

import pytest

from mocokit.errors import ConfigError
from mocokit.evaluation.config import (
    default_finetune_protocol,
    default_linear_protocol,
    load_eval_config,
    protocol_names,
    split_overrides,
)


def test_overrides_go_to_the_config_that_owns_their_section():
    run, evaluation = split_overrides(["data.path=x.tar", "linear.epochs=3", "train.device=cpu", "knn.k=20",
                                       "eval.test_images=100", "finetune.optim.lr=0.01"])
    assert run == ["data.path=x.tar", "train.device=cpu"]
    assert evaluation == ["linear.epochs=3", "knn.k=20", "eval.test_images=100", "finetune.optim.lr=0.01"]


@pytest.mark.parametrize("override,message", [
    ("lineer.epochs=3", "unknown config section 'lineer' in 'lineer.epochs=3'. Did you mean linear?"),
    ("knn=3", "knn must be a mapping"),
])
def test_a_key_of_neither_config_is_a_clear_error(override, message):
    with pytest.raises(ConfigError, match=message):
        load_eval_config([], split_overrides([override])[1])


def test_unknown_keys_and_bad_values_name_the_key():
    with pytest.raises(ConfigError, match="unknown config key 'linear.epoch'. Did you mean linear.epochs"):
        load_eval_config(["linear-fast"], ["linear.epoch=3"])
    with pytest.raises(ConfigError, match="linear.mode must be 'auto' or 'fast' or 'full'"):
        load_eval_config([], ["linear.mode=slow"])
    with pytest.raises(ConfigError, match="finetune.layer_decay must be in"):
        load_eval_config([], ["finetune.layer_decay=1.5"])
    with pytest.raises(ConfigError, match="unknown evaluation protocol 'linear-v1'. Did you mean"):
        load_eval_config(["linear-v1"])


def test_official_protocols_hold_the_paper_values():
    v1v2 = load_eval_config(["linear-v1v2"]).linear
    assert (v1v2.optim.lr, v1v2.optim.scale_lr, v1v2.optim.momentum, v1v2.optim.weight_decay) == (30.0, False, 0.9, 0)
    assert (v1v2.batch_size, v1v2.epochs, v1v2.optim.milestones, v1v2.init_std) == (256, 100, [60, 80], 0.01)
    resnet, vit = load_eval_config(["linear-v3-resnet"]).linear, load_eval_config(["linear-v3-vit"]).linear
    assert (resnet.optim.lr, resnet.batch_size, resnet.epochs, resnet.optim.schedule) == (0.1, 1024, 90, "cosine")
    assert vit.optim.lr * vit.batch_size / 256 == 12.0 and vit.optim.scale_lr  # 3 × B/256 = 12 at 1024
    fast = load_eval_config(["linear-fast"]).linear
    assert (fast.mode, fast.feature_norm, fast.optim.lr, fast.batch_size) == ("fast", "batchnorm", 0.1, 256)
    assert load_eval_config(["linear-fast"], ["linear.epochs=10"]).linear.epochs == 10  # overrides come last


def test_every_protocol_loads_and_the_defaults_follow_the_run():
    assert set(protocol_names()) >= {"linear-v1v2", "linear-v3-resnet", "linear-v3-vit", "linear-fast",
                                     "finetune-resnet", "finetune-vit"}
    for name in protocol_names():
        load_eval_config([name])
    assert default_linear_protocol("v2", vit=False, on_gpu=True) == "linear-v1v2"
    assert default_linear_protocol("v3", vit=True, on_gpu=True) == "linear-v3-vit"
    assert default_linear_protocol("v3", vit=False, on_gpu=True) == "linear-v3-resnet"
    assert default_linear_protocol("v2", vit=False, on_gpu=False) == "linear-fast"
    assert default_finetune_protocol(vit=True) == "finetune-vit"
