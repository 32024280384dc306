"""`auto` values (training/auto.py): the dataset profile against hand counts, each rule against the values worked
out by hand from its documented formula, explicit values kept, and the CLI showing the choices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mocokit.config.loader import to_tree
from mocokit.data.config import DataConfig
from mocokit.errors import ConfigError
from mocokit.training.auto import (
    AUTO_KEYS,
    DatasetProfile,
    MachineProfile,
    apply_rules,
    auto_keys_in,
    profile_dataset,
    resolve_auto,
)
from mocokit.training.run_config import Config, load_config

CPU2 = MachineProfile("cpu", cpu_cores=2, gpu_memory_gb=0.0, processes=1)
GPU = MachineProfile("cuda", cpu_cores=16, gpu_memory_gb=80.0, processes=1)
EVERY_KEY_AUTO = [f"{key}=auto" for key in AUTO_KEYS]


def profile(images: int, side: int = 32, long_side: int | None = None, grayscale: float = 0.0) -> DatasetProfile:
    return DatasetProfile(images, side, long_side or side, 0.0 if long_side in (None, side) else 1.0, grayscale,
                          labelled=False, sampled=min(images, 256))


def derive(data: DatasetProfile, machine: MachineProfile = CPU2, overrides: tuple[str, ...] = ()) -> dict:
    from mocokit.config.loader import apply_overrides

    tree = apply_overrides({"name": "t", "data": {"path": "x"}}, EVERY_KEY_AUTO + list(overrides))
    tree, derivation = apply_rules(tree, to_tree(Config()), data, machine)
    return {"tree": tree, "lines": derivation.lines(),
            **{key: _get(tree, key) for key in AUTO_KEYS}}


def _get(tree: dict, key: str):
    for part in key.split("."):
        tree = tree[part]
    return tree


def write_images(root: Path, sizes: list[tuple[int, int]], mode: str = "RGB") -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i, (width, height) in enumerate(sizes):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(root / f"{mode}-{i}.png")
    return root


def test_the_profile_counts_sizes_shapes_and_colour_modes(tmp_path):
    # 6 colour images 48x32 (non-square, short side 32) and 3 grayscale 40x40: short sides sorted
    # 32,32,32,32,32,32,40,40,40 -> median 32; long sides 40,40,40,48x6 -> median 48; 6/9 non-square; 3/9 gray
    root = write_images(tmp_path / "imgs", [(48, 32)] * 6)
    write_images(root, [(40, 40)] * 3, mode="L")
    data = profile_dataset(DataConfig(path=str(root), labels="none"))
    assert (data.images, data.short_side, data.long_side, data.sampled) == (9, 32, 48, 9)
    assert data.non_square == pytest.approx(6 / 9) and data.grayscale == pytest.approx(3 / 9)
    assert not data.labelled
    assert profile_dataset(DataConfig(path=str(root), labels="none", max_images=4)).images == 4


def test_cifar_sized_data_on_two_cpu_cores_gets_the_measured_cpu_recipe():
    chosen = derive(profile(10_000))
    assert chosen["model.version"] == "v2" and chosen["model.backbone"] == "resnet18"
    assert (chosen["data.image_size"], chosen["data.recipe"], chosen["model.cifar_stem"]) == (32, "v2-small", True)
    assert chosen["model.width"] == 0.25
    assert chosen["train.batch_size"] == 128
    assert chosen["model.bn_splits"] == 8  # 8 groups of 16
    assert chosen["model.queue_size"] == 1024  # 10,000 / 8 = 1,250 -> 1,024
    assert chosen["optim.lr"] == 0.03  # the asymmetric loss (the default): MoCo v2's base lr
    assert derive(profile(10_000), overrides=("model.symmetric=true",))["optim.lr"] == 0.06  # summed loss
    assert chosen["train.time_budget"] == "20m" and chosen["model.momentum"] == 0.99
    assert chosen["data.num_workers"] == 1  # per-image augmentation: cores - 1 decoding processes
    assert derive(profile(10_000), overrides=("data.augment=batched",))["data.num_workers"] == 0


def test_the_queue_is_an_eighth_of_the_data_and_never_below_what_a_step_writes():
    assert derive(profile(50_000))["model.queue_size"] == 4096  # the official CIFAR demo's K
    assert derive(profile(2_000))["model.queue_size"] == 128 * 1  # 2,000/8 = 250 -> 128 ...
    symmetric = derive(profile(2_000), overrides=("model.symmetric=true",))
    assert symmetric["model.queue_size"] == 256  # ... but a symmetric step writes 2 x 128 keys
    assert derive(profile(10_000_000))["model.queue_size"] == 65536  # capped at the ImageNet queue


def test_small_datasets_get_a_batch_of_at_most_an_eighth_and_fewer_batchnorm_groups():
    chosen = derive(profile(500))
    assert chosen["train.batch_size"] == 32  # 500 / 8 = 62.5 -> 32
    assert chosen["model.bn_splits"] == 4  # at most 8 groups, of at least 8 images
    assert chosen["model.queue_size"] == 32  # 500 / 8 -> 32, the 32 keys of one (asymmetric) step
    assert any("at least 8 steps" in line for line in chosen["lines"])


def test_image_size_follows_the_images_and_the_device():
    # on a CPU: ~150 images/s at 32 px on 2 cores, scaled by cores and (32 / side)^2; a side needs >= 500 steps of 128
    # 20 minutes (the default) on 2 cores: 32 px 1,406 steps, 64 px 352, 96 px 156 -> 32 px
    default = derive(profile(5_000, side=96))
    assert default["data.image_size"] == 32 and default["data.recipe"] == "v2-small"
    assert any("~156 steps of 128 at 96 px" in line and "the largest side with at least 500 steps" in line
               for line in default["lines"])
    short = derive(profile(5_000, side=96), overrides=("train.time_budget=4m",))  # 32 px: 281 steps
    assert short["data.image_size"] == 32
    assert any("the smallest side (fewer than 500" in line for line in short["lines"])
    two_hours = derive(profile(5_000, side=96), overrides=("train.time_budget=2h",))  # 96 px: 938 steps
    assert (two_hours["data.image_size"], two_hours["data.recipe"]) == (96, "v2-96")
    assert derive(profile(5_000, side=96), overrides=("train.time_budget=1h",))["data.image_size"] == 64  # 469 < 500
    assert derive(profile(5_000, side=50), overrides=("train.time_budget=2h",))["data.image_size"] == 64  # 1.5 x 50
    assert derive(profile(5_000, side=40), overrides=("train.time_budget=2h",))["data.image_size"] == 32
    big = profile(200_000, side=500, long_side=375 * 2)
    sixteen_cores = MachineProfile("cpu", cpu_cores=16, gpu_memory_gb=0.0, processes=1)
    assert derive(big, sixteen_cores)["data.image_size"] == 96  # 1,250 steps at 96 px; a CPU stops at 96 px
    on_gpu = derive(big, GPU)
    assert (on_gpu["data.image_size"], on_gpu["data.recipe"], on_gpu["model.cifar_stem"]) == (224, "v2", False)
    assert (on_gpu["model.backbone"], on_gpu["model.width"], on_gpu["train.batch_size"]) == ("resnet50", 1.0, 256)
    assert on_gpu["train.time_budget"] is None
    assert on_gpu["train.epochs"] == 100  # 10 million images / 200,000 = 50 epochs, at least 100
    assert derive(profile(50_000), GPU)["train.epochs"] == 200  # the CIFAR demo's length


def test_momentum_follows_the_length_of_the_run():
    long_run = derive(profile(1_000_000), GPU, overrides=("train.epochs=200",))
    assert long_run["model.momentum"] == 0.999  # 200 x (1,000,000 // 256) = 781,200 steps
    assert derive(profile(50_000), GPU)["model.momentum"] == 0.99  # 200 x 195 = 39,000 steps


def test_explicit_values_are_kept_and_the_rules_below_use_them():
    chosen = derive(profile(10_000), overrides=("train.batch_size=64", "data.image_size=64"))
    assert chosen["train.batch_size"] == 64 and chosen["data.image_size"] == 64
    assert chosen["data.recipe"] == "v2-64"  # follows the given size
    assert chosen["model.bn_splits"] == 8  # 64 / 8
    assert not any(line.startswith("auto train.batch_size=") for line in chosen["lines"])


def test_every_choice_gives_a_reason_line():
    lines = derive(profile(10_000))["lines"]
    assert lines[0].startswith("auto: data 10,000 images") and "machine CPU, 2 cores" in lines[0]
    assert {line.split("=")[0].removeprefix("auto ") for line in lines[1:]} == set(AUTO_KEYS)
    assert all(": " in line and len(line.split(": ", 1)[1]) > 10 for line in lines[1:])


def test_native_auto_values_are_not_rules_and_unknown_auto_keys_are_refused():
    tree = {"train": {"compile": "auto", "device": "auto", "precision": "auto"}, "model": {"sync_bn": "auto"}}
    assert auto_keys_in(tree) == []
    with pytest.raises(ConfigError, match="model.dim=auto: this key has no automatic choice"):
        resolve_auto({"model": {"dim": "auto"}}, to_tree(Config()))
    with pytest.raises(ConfigError, match="set data.path"):
        resolve_auto({"model": {"queue_size": "auto"}}, to_tree(Config()))


def test_the_auto_preset_resolves_on_a_folder_and_records_why(tmp_path):
    root = write_images(tmp_path / "imgs", [(32, 32)] * 40)
    cfg = load_config("auto", [f"data.path={root}", "data.labels=none"])
    # 40 / 8 = 5 -> batch 4; one BatchNorm group (groups need 8 images); K: 40 / 8 -> 4, below the 2 x 4 keys a
    # symmetric step writes -> 8
    assert (cfg.train.batch_size, cfg.model.bn_splits, cfg.model.queue_size) == (4, 1, 8)
    assert cfg.derivation is not None and cfg.derivation.data.images == 40
    from mocokit.training.run_config import config_to_yaml

    text = config_to_yaml(cfg)
    assert "# auto model.queue_size=" in text and load_config(str(_write(tmp_path / "c.yaml", text))) == cfg


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_without_a_budget_the_length_is_a_number_of_images_seen():
    assert derive(profile(10_000), overrides=("train.time_budget=null",))["train.epochs"] == 18  # 180,000 / 10,000
    assert derive(profile(500_000), overrides=("train.time_budget=null",))["train.epochs"] == 1
    assert derive(profile(10_000))["train.epochs"] == 1000  # a budget: epochs are only the upper bound
