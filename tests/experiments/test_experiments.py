"""The papers' experiments: every variant is a valid config, the table and figure are written, and each experiment
runs end to end in its smoke mode on a tiny image folder (the real runs are in docs/experiments.md)."""

import json

import pytest

from mocokit.cli import main
from mocokit.experiments import EXPERIMENTS, run_experiment
from mocokit.experiments.runner import markdown_table, slug
from mocokit.training.run_config import load_config

from ..engine.conftest import write_image_folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("experiment-images"), classes=3, per_class=16)


def test_the_issues_experiments_exist_with_distinct_variant_folders():
    assert set(EXPERIMENTS) == {"dictionary", "momentum", "shuffle-bn", "vit-stability", "v1-v2-v3", "transfer",
                                "false-negatives"}
    for experiment in EXPERIMENTS.values():
        folders = [slug(v.label) for v in experiment.variants]
        assert len(set(folders)) == len(folders) > 1, experiment.name


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
@pytest.mark.parametrize("mode", ["small", "smoke", "paper"])
def test_every_variant_is_a_valid_config_that_varies_what_the_experiment_says(name, mode):
    experiment = EXPERIMENTS[name]
    configs = [load_config(*experiment.config_for(v, mode)) for v in experiment.variants]
    if mode == "paper":  # ImageNet-sized: the papers' networks and schedules
        assert all(c.model.backbone in ("resnet50", "vit_small", "vit_base") for c in configs)
        assert all(c.train.epochs >= 100 for c in configs)
    if mode != "smoke":  # (the tiny mode may shrink variants alike, e.g. every end-to-end batch to 16)
        assert len({repr(c) for c in configs}) == len(configs)  # no two variants train the same thing
    if name == "momentum":
        assert [c.model.momentum for c in configs] == [v.x for v in experiment.variants]
    if name == "vit-stability":
        assert [c.model.freeze_patch_embed for c in configs] == [False, True]
        assert all(c.model.backbone == ("vit_base" if mode == "paper" else "vit_tiny") for c in configs)
    if name == "false-negatives":  # the headline pair differs in the mask only, the K/N = 1 pair too
        assert [c.model.mask_own_keys for c in configs[:2]] == [False, True]
        assert repr(configs[0]).replace("mask_own_keys=False", "") == repr(configs[1]).replace("mask_own_keys=True", "")
        assert {c.model.false_negatives for c in configs} == {"none", "eliminate", "attract"}
    if name == "v1-v2-v3":
        assert [c.model.version for c in configs] == ["v1", "v2", "v3"]
        budget = {(c.train.epochs, c.train.batch_size, c.data.max_images) for c in configs}
        assert len(budget if mode != "paper" else {c.train.epochs for c in configs}) == 1  # the same budget


def test_slugs_and_table_cells():
    assert slug("m = 0.99") == "m-0.99" and slug("queue K=256") == "queue-k-256"
    experiment = EXPERIMENTS["momentum"]
    assert markdown_table(experiment, []).splitlines()[0] == "| variant | knn_top1 | inst_disc_accuracy | final_loss " \
                                                              "| minutes |"


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_each_experiment_runs_end_to_end_in_its_smoke_mode(name, images, tmp_path):
    # false-negatives: a second epoch, in which every image comes back to meet its first epoch's keys
    extra = ["train.epochs=2"] if name == "false-negatives" else []
    result = run_experiment(EXPERIMENTS[name], tmp_path / name, [f"data.path={images}", *extra], mode="smoke",
                            echo=lambda _m: None)
    assert not result.interrupted and len(result.variants) == 2
    assert result.figure.suffix == ".png" and result.figure.stat().st_size > 1000
    saved = json.loads(result.results.read_text())
    assert saved["complete"] and [v["label"] for v in saved["variants"]] == [r.variant.label for r in
                                                                             result.variants]
    assert all(v["knn_top1"] is not None and 0 <= v["knn_top1"] <= 1 for v in saved["variants"])
    table = result.table.read_text()
    assert all(r.variant.label in table for r in result.variants)
    if name == "transfer":
        assert all("finetune_gain" in v and v["pretrained_curve"]["test_top1"] for v in saved["variants"])
    if name == "vit-stability":  # the paper's first layer is the patch projection; frozen, the first block's
        assert [v["first_layer"] for v in saved["variants"]] == ["backbone.patch_embed.proj.weight",
                                                                 "backbone.blocks.0.attn.qkv.weight"]
        assert all(isinstance(v["first_layer_spikes"], list) and isinstance(v["knn_dips"], list)
                   for v in saved["variants"])
    if name == "false-negatives":  # K = 2048 > 2N = 96 keys: in epoch 2 every query meets its own epoch-1 keys
        last = saved["variants"][-1]
        assert last["expected_own_key_rate"] == 1.0 and last["own_key_rate"] == 1.0
    again = run_experiment(EXPERIMENTS[name], tmp_path / name, [f"data.path={images}", *extra], mode="smoke",
                           echo=lambda _m: None)  # finished variants are read back, not retrained
    assert [r.knn_top1 for r in again.variants] == [r.knn_top1 for r in result.variants]


def test_the_command_lists_the_experiments_and_refuses_an_unknown_one(capsys):
    assert main(["experiment", "list"]) == 0
    assert "vit-stability" in capsys.readouterr().out
    assert main(["experiment", "no-such-thing"]) == 2


def slow_own_key_rate(queue_size, keys_per_step, steps_per_epoch):
    """Every pair of positions (p in one epoch, p' in the next) enumerated: is the old key still in the queue?"""
    span = queue_size // keys_per_step
    hits = sum(1 for p in range(1, steps_per_epoch + 1) for q in range(1, steps_per_epoch + 1)
               if steps_per_epoch - p + q <= span)
    return hits / steps_per_epoch**2


@pytest.mark.parametrize("queue_size,keys_per_step,steps", [(1024, 256, 16), (2048, 256, 16), (4096, 256, 16),
                                                            (8192, 256, 16), (100, 10, 7), (2048, 32, 3)])
def test_the_own_key_rate_of_epoch_sampling_against_an_enumeration(queue_size, keys_per_step, steps):
    from mocokit.experiments.definitions import own_key_rate_by_epochs

    assert own_key_rate_by_epochs(queue_size, keys_per_step, steps) == pytest.approx(
        slow_own_key_rate(queue_size, keys_per_step, steps))
    span = queue_size // keys_per_step
    if span <= steps:  # the closed form of the docstring
        assert own_key_rate_by_epochs(queue_size, keys_per_step, steps) == pytest.approx(
            span * (span + 1) / (2 * steps**2))
