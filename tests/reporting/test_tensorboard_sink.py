import math

from mocokit.reporting.tensorboard_sink import scalar_tags


def test_tags_are_grouped_by_kind_and_nested_dicts_flatten():
    tags = scalar_tags({"kind": "step", "step": 10, "time": 1.0, "loss": 2.5, "lr": 0.1, "note": "text",
                        "flag": True, "knn_top1": None,
                        "grad_norm": {"blocks.0.attn": 1.0, "head": {"weight": 3.0}}})
    assert tags == {"step/loss": 2.5, "step/lr": 0.1, "grad_norm/blocks.0.attn": 1.0,
                    "grad_norm/head/weight": 3.0}


def test_epoch_and_non_finite_values_are_kept():
    tags = scalar_tags({"kind": "epoch", "epoch": 2, "step": 40, "knn_top1": 0.5, "loss": math.nan})
    assert tags["epoch/knn_top1"] == 0.5 and tags["epoch/epoch"] == 2.0 and math.isnan(tags["epoch/loss"])
