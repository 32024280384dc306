"""The papers' experiments: every variant is a valid config at every scale, the medium scale fits its time budget,
seeded runs get their own folders and are aggregated, the table and figure are written, and each experiment runs
end to end in its smoke mode on a tiny image folder (the real runs are in docs/experiments.md)."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from mocokit.cli import main
from mocokit.experiments import EXPERIMENTS, Experiment, Variant, VariantResult, budget, plots, run_experiment
from mocokit.experiments.definitions import SMOKE
from mocokit.experiments.runner import markdown_table, slug
from mocokit.experiments.seeds import run_name, summarise
from mocokit.training.run_config import load_config

from ..engine.conftest import write_image_folder

MODES = ["small", "medium", "smoke", "paper"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("experiment-images"), classes=3, per_class=16)


def test_the_issues_experiments_exist_with_distinct_run_folders_at_every_scale():
    assert set(EXPERIMENTS) == {"dictionary", "momentum", "shuffle-bn", "vit-stability", "v1-v2-v3", "transfer",
                                "false-negatives", "four-models"}
    for experiment in EXPERIMENTS.values():
        for mode in MODES:
            folders = [run_name(slug(v.label), seed) for v in experiment.variants_for(mode)
                       for seed in experiment.seeds_for(mode) or (None,)]
            assert len(set(folders)) == len(folders) > 1, (experiment.name, mode)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
@pytest.mark.parametrize("mode", MODES)
def test_every_variant_is_a_valid_config_that_varies_what_the_experiment_says(name, mode):
    experiment = EXPERIMENTS[name]
    variants = experiment.variants_for(mode)
    configs = [load_config(*experiment.config_for(v, mode)) for v in variants]
    if mode == "paper":  # ImageNet-sized: the papers' networks and schedules
        assert all(c.model.backbone in ("resnet50", "vit_small", "vit_base") for c in configs)
        assert all(c.train.epochs >= 100 for c in configs)
    if mode != "smoke":  # (the tiny mode may shrink variants alike, e.g. every end-to-end batch to 16)
        assert len({repr(c) for c in configs}) == len(configs)  # no two variants train the same thing
    if name == "momentum":
        assert [c.model.momentum for c in configs] == [v.x for v in variants]
    if name == "vit-stability":
        assert [c.model.freeze_patch_embed for c in configs] == [False, True] * (len(configs) // 2)
        assert all(c.model.backbone == ("vit_base" if mode == "paper" else "vit_tiny") for c in configs)
        if mode == "medium":  # the lr swept upward, each lr trainable and frozen; a diverging step is skipped
            assert all(c.train.on_nonfinite == "skip" for c in configs)
            lrs = [c.optim.lr for c in configs]
            assert lrs[::2] == lrs[1::2] and lrs[::2] == sorted(set(lrs)) and len(set(lrs)) == 3
    if name == "false-negatives" and mode != "medium":  # the headline pair differs in the mask only
        assert [c.model.mask_own_keys for c in configs[:2]] == [False, True]
        assert repr(configs[0]).replace("mask_own_keys=False", "") == repr(configs[1]).replace("mask_own_keys=True", "")
    if name == "false-negatives":
        assert {c.model.false_negatives for c in configs} == {"none", "eliminate", "attract"}
        assert "debiased" in {c.model.loss for c in configs}
    if name == "shuffle-bn" and mode == "medium":  # none / a shuffle inside one BN group / shuffle BN
        assert [(c.model.shuffle_bn, c.model.bn_splits) for c in configs] == [(False, 1), (True, 1), (True, 8)]
    if name == "dictionary" and mode == "medium":  # K well below the 25,000 images
        assert {c.model.dictionary for c in configs} == {"queue", "memory_bank", "end_to_end"}
        assert all(c.data.max_images == 25000 and c.model.queue_size <= 8192 for c in configs)
    if name == "four-models":
        assert [c.model.is_vit for c in configs] == [False, True]
        assert [c.model.version for c in configs] == ["v2", "v3"]
        if mode in ("small", "medium"):
            assert all(c.data.classes == ["airplane", "automobile", "bird", "cat"] for c in configs)
    if name == "v1-v2-v3":
        assert [c.model.version for c in configs] == ["v1", "v2", "v3"]
        budget = {(c.train.epochs, c.train.batch_size, c.data.max_images) for c in configs}
        assert len(budget if mode != "paper" else {c.train.epochs for c in configs}) == 1  # the same budget


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_the_medium_scale_fits_its_time_budget_and_is_larger_than_the_small_one(name):
    experiment = EXPERIMENTS[name]
    assert experiment.medium, "every experiment has a medium scale"
    runs = budget.estimate(experiment, "medium")
    assert len(runs) == len(experiment.variants_for("medium")) * max(1, len(experiment.seeds_for("medium")))
    assert budget.estimated_minutes(experiment, "medium") <= budget.MEDIUM_BUDGET_MINUTES
    assert budget.estimated_minutes(experiment, "medium") > budget.estimated_minutes(experiment, "small")
    for variant in experiment.variants_for("medium"):  # the measured ResNet rate; a ViT is slower
        cfg = load_config(*experiment.config_for(variant, "medium"))
        rate = budget.images_per_second(cfg)
        assert rate < 150.0 if cfg.model.is_vit else rate == 150.0


def test_the_estimate_is_epochs_times_images_at_the_stated_rates():
    # shuffle-bn, medium: 12 epochs of 10,000 images and 13 kNN passes (12 epochs and random init) of 5,000 bank
    # and 2,000 test images at a quarter of a training image each, at 150 images/s, plus the fixed cost of a run
    experiment = EXPERIMENTS["shuffle-bn"]
    cfg = load_config(*experiment.config_for(experiment.variants_for("medium")[0], "medium"))
    assert budget.pretraining_cost(cfg) == 12 * 10_000 + 13 * 7_000 * 0.25
    run = budget.estimate(experiment, "medium")[0]
    seconds = (12 * 10_000 + 13 * 7_000 * 0.25) / 150 + budget.RUN_OVERHEAD_SECONDS
    assert run.minutes == pytest.approx(seconds / 60)
    vit = budget.estimate(EXPERIMENTS["vit-stability"], "medium")[0]  # ViT-tiny, patch 8: 45 images/s
    assert vit.images_per_second == 45.0
    four = {r.label: r.images_per_second for r in budget.estimate(EXPERIMENTS["four-models"], "medium")}
    assert sorted(four.values()) == [90.0, 150.0]  # the 6-block ViT-tiny: twice the 12-block rate


def result(label: str, seed: int | None, knn: float, minutes: float = 1.0, **extra) -> VariantResult:
    return VariantResult(Variant(label, (), "series", 0.5), Path(run_name(slug(label), seed)), knn_top1=knn,
                         knn_top5=None, random_init_top1=0.25, inst_disc_accuracy=None, final_loss=2.0,
                         minutes=minutes, knn_curve=[], extra=dict(extra), seed=seed)


def test_seeded_runs_are_aggregated_per_variant_with_mean_and_range():
    results = [result("m = 0.99", 1, 0.40, 2.0, spikes=[3]), result("m = 0.9", 0, 0.30),
               result("m = 0.99", 0, 0.36, 4.0, spikes=[]), result("m = 0.9", 1, 0.30)]
    summaries = summarise(results)
    assert [s.variant.label for s in summaries] == ["m = 0.99", "m = 0.9"]  # first appearance
    first = summaries[0]
    assert first.seeds == [0, 1] and [r.run_dir.name for r in first.runs] == ["m-0.99-seed-0", "m-0.99-seed-1"]
    knn = first.values["knn_top1"]
    assert (knn.mean, knn.low, knn.high, knn.n) == (pytest.approx(0.38), 0.36, 0.40, 2)
    assert knn.width == pytest.approx(0.04) and first.values["minutes"].mean == 3.0
    assert "spikes" not in first.values and "seed" not in first.values  # only numbers, never the seed itself
    assert summaries[1].values["knn_top1"].width == 0.0
    record = first.record()
    assert record["seeds"] == [0, 1] and record["knn_top1"]["spread"] == pytest.approx(0.04)
    experiment = EXPERIMENTS["momentum"]
    table = markdown_table(experiment, results).splitlines()
    assert table[0] == "| variant | seeds | knn_top1 | inst_disc_accuracy | final_loss | minutes |"
    assert table[2].startswith("| m = 0.99 | 0, 1 | 38.0% (36.0%–40.0%) | – | 2.00 (2.00–2.00) | 3.00 (2.00–4.00)")
    assert len(table) == 4  # one row per variant
    summaries_of_one = summarise([result("a", None, 0.5)])
    assert summaries_of_one[0].seeds == [None] and summaries_of_one[0].values["knn_top1"].n == 1


def test_the_seeded_plots_draw_means_with_ranges(tmp_path):
    results = [result("m = 0.9", 0, 0.30), result("m = 0.9", 1, 0.34), result("m = 0.99", 0, 0.38)]
    for draw in (plots.bars, EXPERIMENTS["momentum"].plot):
        path = draw(EXPERIMENTS["momentum"], results, tmp_path / "figure.png")
        assert path.stat().st_size > 1000


def test_a_seeded_scale_runs_each_variant_once_per_seed_in_its_own_folder_seed_by_seed(images, tmp_path):
    tiny = Experiment(name="seeded", title="seeded", paper="", preset="demo", scale=SMOKE, smoke=SMOKE,
                      variants=(Variant("m = 0.99", ("model.momentum=0.99",), x=0.99),
                                Variant("m = 0.9", ("model.momentum=0.9",), x=0.9)),
                      plot=plots.bars, medium=SMOKE, medium_seeds=(0, 3))
    outcome = run_experiment(tiny, tmp_path / "seeded", [f"data.path={images}"], mode="medium",
                             echo=lambda _m: None)
    # every variant's first seed before any second one: a run cut short still compares all the variants
    assert [r.run_dir.name for r in outcome.variants] == ["m-0.99-seed-0", "m-0.9-seed-0",
                                                          "m-0.99-seed-3", "m-0.9-seed-3"]
    assert [load_config(r.run_dir / "config.yaml").train.seed for r in outcome.variants] == [0, 0, 3, 3]
    assert [load_config(r.run_dir / "config.yaml").model.momentum for r in outcome.variants] == [0.99, 0.9] * 2
    saved = json.loads(outcome.results.read_text())
    assert [v["seed"] for v in saved["variants"]] == [0, 0, 3, 3]
    summary = saved["summary"][0]
    knn = [r.knn_top1 for r in outcome.variants if r.variant.label == "m = 0.99"]
    assert summary["label"] == "m = 0.99" and summary["runs"] == ["m-0.99-seed-0", "m-0.99-seed-3"]
    assert summary["seeds"] == [0, 3] and summary["knn_top1"]["mean"] == pytest.approx(sum(knn) / 2)
    assert summary["knn_top1"]["min"] == min(knn) and summary["knn_top1"]["max"] == max(knn)
    assert "| m = 0.99 | 0, 3 |" in outcome.table.read_text()


def test_an_experiments_evaluation_is_kept_in_the_run_folder_and_read_back_by_a_rerun(images, tmp_path):
    calls = []

    def evaluate(experiment, result, overrides, mode):
        calls.append((result.run_dir.name, tuple(overrides), mode))
        return {"finetune_gain": 0.125, "pretrained_curve": {"epochs": [1, 2], "test_top1": [0.5, 0.75]}}

    tiny = Experiment(name="evaluated", title="evaluated", paper="", preset="demo", scale=SMOKE, smoke=SMOKE,
                      variants=(Variant("base", ()),), plot=plots.bars, evaluate=evaluate)
    said = []
    first = run_experiment(tiny, tmp_path / "evaluated", [f"data.path={images}"], mode="smoke", echo=said.append)
    assert calls == [("base", (f"data.path={images}",), "smoke")]
    assert any("evaluated in" in line and "finetune_gain 12.5%" in line for line in said)
    again = run_experiment(tiny, tmp_path / "evaluated", [f"data.path={images}"], mode="smoke", echo=said.append)
    assert len(calls) == 1 and again.variants[0].extra == first.variants[0].extra
    assert any("evaluation read back" in line for line in said)
    # made with other overrides, it is not the same evaluation: made again
    run_experiment(tiny, tmp_path / "evaluated", [f"data.path={images}", "train.seed=0"], mode="smoke",
                   echo=said.append)
    assert len(calls) == 2 and calls[-1][1][-1] == "train.seed=0"


def test_the_command_selects_the_scale(monkeypatch, tmp_path, capsys):
    import mocokit.experiments

    calls = []

    def fake_run(experiment, folder, overrides, mode):
        calls.append((experiment.name, folder.name, mode))
        table = tmp_path / "table.md"
        table.write_text("| table |\n")
        return SimpleNamespace(interrupted=False, table=table, results=table, figure=table, minutes=0.0, variants=[])

    monkeypatch.setattr(mocokit.experiments, "run_experiment", fake_run)
    out = ["--out", str(tmp_path)]
    assert main(["experiment", "momentum", "--scale", "medium", *out]) == 0
    assert main(["experiment", "momentum", "data.path=x", "--scale", "small", *out]) == 0
    assert main(["experiment", "momentum", *out]) == 0
    assert main(["experiment", "momentum", "--smoke", *out]) == 0
    assert main(["experiment", "momentum", "--paper-scale", *out]) == 0
    assert calls == [("momentum", "momentum-medium", "medium"), ("momentum", "momentum", "small"),
                     ("momentum", "momentum", "small"), ("momentum", "momentum-smoke", "smoke"),
                     ("momentum", "momentum-paper", "paper")]
    assert main(["experiment", "momentum", "--scale", "medium", "--smoke", *out]) == 2
    assert "not several" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["experiment", "momentum", "--scale", "large", *out])
    assert len(calls) == 5


def test_slugs_and_table_cells():
    assert slug("m = 0.99") == "m-0.99" and slug("queue K=256") == "queue-k-256"
    experiment = EXPERIMENTS["momentum"]
    assert markdown_table(experiment, []).splitlines()[0] == "| variant | knn_top1 | inst_disc_accuracy | final_loss " \
                                                              "| minutes |"


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_each_experiment_runs_end_to_end_in_its_smoke_mode(name, images, tmp_path):
    # false-negatives: a second epoch, in which every image comes back to meet its first epoch's keys;
    # four-models: two of the three classes of the tiny folder (data.classes)
    extra = {"false-negatives": ["train.epochs=2"], "four-models": ["data.classes=[class0, class2]"]}.get(name, [])
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
                   and v["skipped_steps"] == 0 for v in saved["variants"])
    if name == "four-models":  # 32 images of two classes, half of them labelled; 4 test images per class
        for variant in saved["variants"]:
            assert variant["labelled_images"] == 16 and variant["test_images"] == 8
            assert variant["pretrained_curve"]["epochs"] == variant["random_init_curve"]["epochs"] == [1, 2]
            assert len(variant["pretrained_curve"]["train_top1"]) == 2
            assert all(0 <= variant[k] <= 1 for k in ("knn_labelled_top1", "linear_top1", "random_init_oscillation",
                                                      "pretrained_oscillation"))
        assert "pretrained_oscillation" in table
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
