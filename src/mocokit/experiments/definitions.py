"""The MoCo papers' experiments, at a scale a 2-core machine runs in about 20 minutes each (`scale`), in a few
steps for CI (`smoke`), and at the papers' scale on GPUs (`paper_preset`, `paper_scale`: `--paper-scale`).

Small scale: CIFAR-10 (pass data.path), 4,096 training images, a quarter-width CIFAR ResNet-18 (or ViT-tiny),
global batch 128, a few epochs, kNN on 5,000 bank and 2,000 test images. The small scale cannot reach the papers'
accuracies; what it can show is the direction of each effect, and docs/experiments.md says where it does not.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from mocokit.experiments import plots
from mocokit.experiments.spec import Experiment, Variant, VariantResult
from mocokit.reporting import find_dips, find_spikes, read_metrics

SMALL = (
    "data.max_images=4096", "data.in_memory=true", "data.augment=batched", "data.num_workers=0",
    "model.width=0.25", "train.batch_size=128", "monitor.knn_bank_size=5000", "monitor.knn_query_size=2000",
    "run.tensorboard=false", "run.progress=false",
)
SMOKE = (
    "data.max_images=48", "data.num_workers=0", "model.width=0.125", "train.batch_size=16", "train.epochs=1",
    "monitor.knn_every_epochs=1", "monitor.knn_bank_size=48", "monitor.knn_query_size=24", "monitor.knn_k=5",
    "run.tensorboard=false", "run.progress=false", "train.threads=1", "model.queue_size=32", "model.hidden_dim=64",
)
V2_SMALL = (*SMALL, "model.queue_size=1024", "optim.lr=0.12", "train.epochs=5", "monitor.knn_every_epochs=5")
TINY_VIT = ("model.backbone=vit_tiny",)
SMOKE_VIT = ("model.backbone_args={depth: 1}", "model.image_size=16", "model.patch_size=8", "data.image_size=16")


def dictionary_variants(sizes: tuple[int, ...], batch_sizes: tuple[int, ...]) -> tuple[Variant, ...]:
    variants = [Variant(f"queue K={k}", ("model.dictionary=queue", f"model.queue_size={k}"), "MoCo (queue)", k)
                for k in sizes]
    variants += [Variant(f"memory bank K={k}", ("model.dictionary=memory_bank", f"model.queue_size={k}"),
                         "memory bank", k) for k in sizes]
    # end-to-end: the negatives are the rest of the batch, so K = batch - 1 and the batch grows with K
    variants += [Variant(f"end-to-end K={b - 1}", ("model.dictionary=end_to_end", f"train.batch_size={b}"),
                         "end-to-end", b - 1, smoke=("train.batch_size=16",)) for b in batch_sizes]
    return tuple(variants)


DICTIONARY = Experiment(
    name="dictionary",
    title="Dictionary mechanisms: kNN top-1 against the number of negatives K",
    paper="MoCo (He et al. 2020), figure 3: with the same encoder and loss, MoCo's queue is best at every K and "
          "keeps improving to K=65536; end-to-end is as good for small K but limited by the batch size (GPU memory); "
          "the memory bank is about 2.6 points below MoCo because its keys are inconsistent.",
    preset="demo",
    scale=(*V2_SMALL, "train.epochs=3", "monitor.knn_every_epochs=3"),
    smoke=SMOKE,
    variants=dictionary_variants((256, 1024, 4096), (128, 256, 512)),
    plot=partial(plots.knn_against_x, x_label="negatives K", log_x=True),
    columns=("x", "knn_top1", "inst_disc_accuracy", "minutes"),
    paper_preset="v1-imagenet",
)

MOMENTUM = Experiment(
    name="momentum",
    title="Momentum of the key encoder",
    paper="MoCo (He et al. 2020), table in section 4.1: m = 0.99: 74.4%, 0.999: 75.0%, 0.9999: 74.3% (ImageNet "
          "linear probe, K=4096); m = 0 fails to train (the loss oscillates): a rapidly changing key encoder makes "
          "the queue's keys inconsistent.",
    preset="demo",
    scale=(*V2_SMALL, "train.epochs=6", "monitor.knn_every_epochs=6"),
    smoke=SMOKE,
    variants=tuple(Variant(f"m = {m}", (f"model.momentum={m}",), "MoCo v2", m) for m in (0.0, 0.9, 0.99, 0.999)),
    plot=partial(plots.knn_against_x, x_label="momentum m", categorical=True),
    columns=("knn_top1", "inst_disc_accuracy", "final_loss", "minutes"),
    paper_preset="v1-imagenet",
)

SHUFFLE_BN = Experiment(
    name="shuffle-bn",
    title="Shuffle BN against the batch-statistics shortcut",
    paper="MoCo (He et al. 2020), section 3.3 and figure A.1: without shuffle BN the pretext accuracy quickly "
          "climbs high (the model 'cheats' through BatchNorm statistics) while the validation accuracy stays low.",
    preset="demo",
    scale=(*V2_SMALL, "train.epochs=5", "monitor.knn_every_epochs=1"),
    smoke=SMOKE,
    variants=(
        Variant("shuffle BN, 8 BN groups", ("model.shuffle_bn=true", "model.bn_splits=8")),
        Variant("no shuffle, 8 BN groups", ("model.shuffle_bn=false", "model.bn_splits=8")),
        Variant("no shuffle, 1 BN group", ("model.shuffle_bn=false", "model.bn_splits=1")),
    ),
    plot=plots.bars,
    columns=("knn_top1", "inst_disc_accuracy", "minutes"),
    paper_preset="v1-imagenet",
)


def stability_events(experiment: Experiment, result: VariantResult, overrides: list[str],
                     mode: str) -> dict[str, Any]:
    """The events the figure marks, for the table: steps where the first watched layer's gradient norm spikes and
    epochs where the kNN curve dips (`mocokit.reporting.find_spikes`, `find_dips`, as `plots.stability`)."""
    norms = [r for r in read_metrics(result.run_dir / "metrics.jsonl")["step"] if isinstance(r.get("grad_norm"), dict)]
    first = next(iter(norms[0]["grad_norm"]), None) if norms else None
    spikes = [norms[i]["step"] for i in find_spikes([r["grad_norm"].get(first) for r in norms])]
    dips = [result.knn_curve[i][0] for i in find_dips([value for _, value in result.knn_curve])]
    return {"first_layer": first, "first_layer_spikes": spikes, "knn_dips": dips}


VIT_STABILITY = Experiment(
    name="vit-stability",
    title="MoCo v3 ViT at a high learning rate: trainable against frozen patch projection",
    paper="MoCo v3 (Chen, Xie, He 2021), section 4.1 and figures 4-5: at a high lr the kNN curve dips and the "
          "gradient norm of the first layer spikes a few iterations earlier; freezing the random patch projection "
          "removes the dips and improves accuracy (e.g. ViT-B, lr 1.5e-4 x 4: 71.7% vs 73.x% with frozen patches).",
    preset="v3-vit-cifar10",
    # a ViT-tiny step costs 11x the small ResNet's FLOPs: half the images and a smaller kNN set keep it in minutes
    scale=(*SMALL, *TINY_VIT, "data.max_images=2048", "train.epochs=6", "optim.lr=1.5e-3", "optim.warmup_epochs=1",
           "monitor.knn_every_epochs=1", "monitor.knn_bank_size=2000", "monitor.knn_query_size=1000",
           "run.log_every_steps=2"),
    smoke=(*SMOKE, *TINY_VIT, *SMOKE_VIT, "optim.warmup_epochs=0", "run.log_every_steps=1"),
    variants=(
        Variant("trainable patch projection", ("model.freeze_patch_embed=false",)),
        Variant("frozen patch projection", ("model.freeze_patch_embed=true",)),
    ),
    plot=plots.stability,
    columns=("knn_top1", "first_layer", "first_layer_spikes", "knn_dips", "minutes"),
    evaluate=stability_events,
    paper_preset="v3-vit-base-imagenet",
    paper_scale=("optim.lr=6.0e-4", "monitor.knn_every_epochs=1", "run.log_every_steps=20"),  # 4x the base lr
)

VERSIONS = Experiment(
    name="v1-v2-v3",
    title="MoCo v1, v2 and v3 on the same data and budget",
    paper="MoCo v2 (Chen et al. 2020): 60.6% (v1) -> 67.5% (v2, MLP head + blur + cosine) linear top-1 on ImageNet "
          "at 200 epochs; MoCo v3 (Chen, Xie, He 2021): ResNet-50 71.1% at 100 epochs, 73.8% at 800.",
    preset="demo",
    scale=(*V2_SMALL, "train.epochs=5", "monitor.knn_every_epochs=5"),
    smoke=SMOKE,
    variants=(
        Variant("MoCo v1", (), preset="v1-cifar10", paper_preset="v1-imagenet"),
        Variant("MoCo v2", (), preset="v2-cifar10", paper_preset="v2-imagenet"),
        Variant("MoCo v3", (), preset="v3-cifar10", small=("optim.lr=0.3", "optim.warmup_epochs=1"),
                paper_preset="v3-resnet50-imagenet"),
    ),
    plot=plots.bars,
    columns=("knn_top1", "inst_disc_accuracy", "minutes"),
    paper_preset="v2-imagenet",
    paper_scale=("train.epochs=200",),  # each version's own recipe (v3: batch 4096, LARS), for the same epochs
)


def fine_tune_both_ways(experiment: Experiment, result: VariantResult, overrides: list[str],
                        mode: str) -> dict[str, Any]:
    """The transfer study of one pretrained variant: fine-tune from its weights and from random initialisation on
    10% of the labels (the run's data), same recipe; returns both accuracies and learning curves."""
    from mocokit.evaluation.session import open_session
    from mocokit.evaluation.transfer import transfer

    vit = "vit" in result.variant.label.lower()
    protocol = "finetune-vit" if vit else "finetune-resnet"
    settings = {"smoke": ["finetune.epochs=1", "eval.test_images=24"],
                "small": ["finetune.epochs=8", "eval.test_images=2000"],
                "paper": []}[mode]  # the paper scale keeps the protocol's own epochs and the whole test set
    settings = ["data.label_fraction=0.1", *settings]
    if vit and mode != "paper":
        settings.append("finetune.optim.warmup_epochs=0" if mode == "smoke" else "finetune.optim.warmup_epochs=1")
    data = [item for item in overrides if item.startswith(("data.path=", "data.root=", "train."))]
    session = open_session(result.run_dir, [*data, *settings], protocol=protocol, echo=lambda _m: None)
    outcome = transfer(session, plot_name=f"transfer-{result.run_dir.name}.png")
    return {"finetune_pretrained_top1": outcome.pretrained.top1, "finetune_scratch_top1": outcome.random_init.top1,
            "finetune_gain": outcome.gain, "pretrained_curve": outcome.pretrained.record()["curve"],
            "random_init_curve": outcome.random_init.record()["curve"]}


TRANSFER = Experiment(
    name="transfer",
    title="Fine-tuning with few labels: from scratch against from MoCo pretraining",
    paper="MoCo (He et al. 2020), section 4.2, and MoCo v3 (Chen, Xie, He 2021), table 6: MoCo-pretrained "
          "networks fine-tune better than from scratch, most visibly with few labels and short schedules; ViTs "
          "from scratch need far more data and epochs than ResNets.",
    preset="demo",
    scale=(*V2_SMALL, "train.epochs=5", "monitor.knn_every_epochs=5"),
    smoke=SMOKE,
    variants=(
        Variant("ResNet-18 (MoCo v2)", ()),
        # patch 8 at 32 px (16 tokens): a quarter of patch 4's cost, so that pretraining and both fine-tunings fit
        Variant("ViT (MoCo v3)", (), preset="v3-vit-cifar10", small=(*TINY_VIT, "model.patch_size=8",
                                                                      "optim.lr=1.5e-4", "optim.warmup_epochs=1"),
                smoke=SMOKE_VIT, paper_preset="v3-vit-small-imagenet"),
    ),
    plot=plots.learning_curves,
    columns=("knn_top1", "finetune_scratch_top1", "finetune_pretrained_top1", "finetune_gain", "minutes"),
    evaluate=fine_tune_both_ways,
    paper_preset="v2-imagenet",
)

def own_key_rate_by_epochs(queue_size: int, keys_per_step: int, steps_per_epoch: int) -> float:
    """The chance that a query meets a key of its own image in a queue of `queue_size` keys, when every epoch visits
    the images in a fresh random order (as the samplers of MoCo implementations do). The queue holds the keys of the
    last L = K / keys_per_step steps; an image seen at step p of one epoch and p' of the next comes back after
    g = S − p + p' steps (S steps per epoch), and its old key is still there iff g ≤ L. With p, p' independent and
    uniform, g = 1..2S−1 occurs in min(g, 2S−g) of the S² pairs: for L ≤ S the rate is L(L+1)/(2S²), far below the
    K/N of sampling with replacement (He et al.'s estimate)."""
    span = queue_size // keys_per_step  # L
    pairs = sum(min(g, 2 * steps_per_epoch - g) for g in range(1, min(span, 2 * steps_per_epoch - 1) + 1))
    return pairs / steps_per_epoch**2


def own_key_statistics(experiment: Experiment, result: VariantResult, overrides: list[str],
                       mode: str) -> dict[str, Any]:
    """How often a query met a stale key of its own image in the last epoch (the logged own_key_rate), beside the
    closed form for epoch-wise sampling (`own_key_rate_by_epochs`) and the estimate for sampling with replacement,
    min(1, K/(kN)) with k keys per image and step (2 with the symmetric loss)."""
    from mocokit.training.run_config import load_config

    epochs = read_metrics(result.run_dir / "metrics.jsonl")["epoch"]
    measured = epochs[-1].get("own_key_rate") if epochs else None
    cfg = load_config(result.run_dir / "config.yaml")
    keys_per_image = 2 if cfg.model.symmetric else 1
    images, batch = cfg.data.max_images or 0, cfg.train.batch_size
    if not images:
        return {"own_key_rate": measured, "expected_own_key_rate": None, "with_replacement_estimate": None}
    return {"own_key_rate": measured,
            "expected_own_key_rate": own_key_rate_by_epochs(cfg.model.queue_size, keys_per_image * batch,
                                                            images // batch),
            "with_replacement_estimate": min(1.0, cfg.model.queue_size / (keys_per_image * images))}


FN_SCALE = (*SMALL, "data.max_images=2048", "model.queue_size=1024", "optim.lr=0.12", "train.epochs=6",
            "monitor.knn_every_epochs=3")
CANCEL = ("model.false_negative_top_k=5", "model.false_negative_start_step=32")  # from the third epoch (16 steps each)

FALSE_NEGATIVES = Experiment(
    name="false-negatives",
    title="The queue's false negatives: own stale keys masked, false negatives cancelled, debiased loss",
    paper="MoCo (He et al. 2020) treats every queued key as a negative. With K a sizeable fraction of the dataset N "
          "a query meets stale keys of its own image (probability about K/N); other images of its class are false "
          "negatives. Huynh et al. (WACV 2022) report +2-3 points (ImageNet linear, SimCLR/MoCo) from eliminating or "
          "attracting the most similar negatives; Chuang et al. (NeurIPS 2020) +1-4 points (CIFAR-10, STL-10) "
          "from the debiased loss.",
    preset="demo",
    scale=FN_SCALE,
    smoke=(*SMOKE, "model.false_negative_top_k=2"),
    variants=(
        Variant("papers' loss, seed 0", ("model.mask_own_keys=false",), "K/N = 0.5"),
        Variant("own keys masked, seed 0", ("model.mask_own_keys=true",), "K/N = 0.5"),
        Variant("masked + eliminate top-5", ("model.mask_own_keys=true", "model.false_negatives=eliminate", *CANCEL),
                "K/N = 0.5"),
        Variant("masked + attract top-5", ("model.mask_own_keys=true", "model.false_negatives=attract", *CANCEL),
                "K/N = 0.5"),
        Variant("masked + debiased (tau+ 0.1)", ("model.mask_own_keys=true", "model.loss=debiased",
                                                 "model.tau_plus=0.1"), "K/N = 0.5"),
        Variant("papers' loss, seed 1", ("model.mask_own_keys=false", "train.seed=1"), "K/N = 0.5"),
        Variant("own keys masked, seed 1", ("model.mask_own_keys=true", "train.seed=1"), "K/N = 0.5"),
        Variant("papers' loss, K = N", ("model.mask_own_keys=false", "model.queue_size=2048"), "K/N = 1"),
        Variant("own keys masked, K = N", ("model.mask_own_keys=true", "model.queue_size=2048"), "K/N = 1"),
    ),
    plot=plots.bars,
    columns=("knn_top1", "own_key_rate", "expected_own_key_rate", "with_replacement_estimate", "inst_disc_accuracy",
             "minutes"),
    evaluate=own_key_statistics,
    paper_preset="v2-imagenet",
)

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (DICTIONARY, MOMENTUM, SHUFFLE_BN, VIT_STABILITY,
                                                         VERSIONS, TRANSFER, FALSE_NEGATIVES)}
