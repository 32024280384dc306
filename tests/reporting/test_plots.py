import json
import math

from PIL import Image

from mocokit.reporting import METRICS_FILE, MetricsWriter, write_plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL_PLOTS = ["loss.png", "lr_momentum.png", "knn.png", "grad_norms.png"]


def _assert_valid_png(path, min_width=600):
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        assert width >= min_width and height >= 300
        assert len(image.convert("L").getcolors(256)) > 10  # something was drawn, not a blank canvas


def test_finished_run_gets_every_plot_as_a_valid_png(finished_run):
    paths = write_plots(finished_run)
    assert [p.name for p in paths] == ALL_PLOTS
    assert all(p.parent == finished_run / "plots" for p in paths)
    for path in paths:
        _assert_valid_png(path)


def test_run_without_knn_or_grad_norms_skips_those_plots_and_removes_stale_ones(tmp_path, write_run):
    run = write_run(tmp_path / "run", epochs=1, knn=False)
    (run / "plots").mkdir()
    (run / "plots" / "knn.png").write_bytes(b"stale")
    (run / "plots" / "grad_norms.png").write_bytes(b"stale")
    records = [json.loads(line) for line in (run / METRICS_FILE).read_text().splitlines()]
    without_norms = [{k: v for k, v in r.items() if k != "grad_norm"} for r in records]
    (run / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in without_norms))
    assert [p.name for p in write_plots(run)] == ["loss.png", "lr_momentum.png"]
    assert not (run / "plots" / "knn.png").exists() and not (run / "plots" / "grad_norms.png").exists()


def test_run_killed_early_with_a_diverged_loss_still_plots(tmp_path, step_record):
    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        writer.log(step_record(1))
        writer.log(step_record(2, loss=math.nan))
        norms = {"patch_embed.proj": math.inf, "head.fc": 0.0}
        writer.log({**step_record(3, loss=math.inf), "grad_norm": norms})
    paths = write_plots(tmp_path)
    assert [p.name for p in paths] == ["loss.png", "lr_momentum.png", "grad_norms.png"]
    for path in paths:
        _assert_valid_png(path)


def test_empty_or_missing_metrics_draw_nothing(tmp_path):
    assert write_plots(tmp_path) == []
    (tmp_path / METRICS_FILE).write_text("")
    assert write_plots(tmp_path) == []
