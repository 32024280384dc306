"""`mocokit pretrain auto data.path=DIR`: the choices are printed with their reasons, config.yaml holds the resolved
values (the reasons as comments), and that file reruns the same config."""

from __future__ import annotations

import numpy as np
import yaml
from PIL import Image

from mocokit.cli import main
from mocokit.training.run_config import load_config


def test_pretrain_auto_prints_its_choices_and_records_them(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(48):  # 48 unlabelled 40x30 images: median short side 30 -> 32 px crops
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(images / f"{i}.png")
    run_dir = tmp_path / "run"
    overrides = [f"data.path={images}", "train.time_budget=null", f"run.dir={run_dir}", "train.stop_at_step=2",
                 "monitor.health_images=0", "run.tensorboard=false", "train.threads=1"]
    code = main(["pretrain", "auto", *overrides])
    out = capsys.readouterr().out
    assert code == 0
    assert "auto: data 48 images, median 30x40 px, 100% non-square, colour, unlabelled" in out
    # 48 / 8 = 6 -> batch 4; K = max(48 / 8 -> 4, the 2 x 4 keys of a symmetric step) = 8; 180,000 / 48 epochs
    for line in ("auto train.batch_size=4:", "auto model.queue_size=8:", "auto data.image_size=32:",
                 "auto train.epochs=3750:"):
        assert line in out
    text = (run_dir / "config.yaml").read_text()
    saved = yaml.safe_load(text)
    assert (saved["train"]["batch_size"], saved["model"]["queue_size"], saved["data"]["recipe"]) == (4, 8, "v2-small")
    assert "# auto model.queue_size=8: " in text
    rerun = load_config(str(run_dir / "config.yaml"))
    assert rerun.derivation is None and rerun == load_config("auto", overrides)
    assert (run_dir / "checkpoints" / "last.pt").is_file()
