import json
import math
import re

import pytest
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


def _few_steps(step_record, count: int) -> dict:
    return {"step": [step_record(step) for step in range(1, count + 1)]}


def test_a_short_run_plots_its_few_steps_as_points_and_says_spikes_cannot_be_judged(step_record):
    from mocokit.reporting.plots import grad_norms_figure, lr_momentum_figure

    for count in (1, 2, 3):
        metrics = _few_steps(step_record, count)
        lr_ax, momentum_ax = lr_momentum_figure(metrics).axes[:2]
        for ax, key in ((lr_ax, "lr"), (momentum_ax, "momentum")):
            (line,) = ax.get_lines()
            assert line.get_marker() == "o"  # a lone point is visible, not a zero-length line
            assert list(line.get_xdata()) == list(range(1, count + 1))
            expected = [record[key] for record in metrics["step"]]
            power = re.search(r"×1e(-?\d+)", ax.get_ylabel())  # the lr axis carries its power of ten in its label
            scale = 10.0 ** int(power.group(1)) if power else 1.0
            assert [float(y) * scale for y in line.get_ydata()] == pytest.approx(expected)
        (ax,) = grad_norms_figure(metrics).axes[:1]
        lines = ax.get_lines()
        assert [line.get_label() for line in lines] == ["patch_embed.proj", "head.fc"]
        assert all(line.get_marker() == "o" and len(line.get_xdata()) == count for line in lines)
        assert "too few steps to judge spikes" in ax.get_title() and "no spikes" not in ax.get_title()


def test_a_long_run_draws_lines_and_judges_spikes(step_record):
    from mocokit.reporting.plots import FEW_POINTS, grad_norms_figure

    ax = grad_norms_figure(_few_steps(step_record, FEW_POINTS + 5)).axes[0]
    assert "(no spikes)" in ax.get_title()
    assert all(line.get_marker() in ("None", None, "") for line in ax.get_lines())


def test_no_logged_step_gives_no_figure_and_the_report_says_not_enough_steps(tmp_path):
    from mocokit.reporting import write_report
    from mocokit.reporting.plots import grad_norms_figure, lr_momentum_figure

    assert lr_momentum_figure({}) is None and grad_norms_figure({"step": []}) is None
    with MetricsWriter(tmp_path, tensorboard=False) as writer:  # an epoch record, but no step logged
        writer.log({"kind": "epoch", "epoch": 1, "step": 1, "loss": 3.0, "accuracy": 0.5})
    page = write_report(tmp_path).read_text()
    assert page.count("Not enough steps") >= 2


def _health_run(epoch_record, measured_epochs=(1, 2, 3, 4)) -> dict:
    """Epoch records of 4 epochs; those in `measured_epochs` carry health metrics (a collapse from epoch 3)."""
    health = {1: (20.0, 0.15, 1.2, -3.1), 2: (24.0, 0.16, 0.9, -3.3), 3: (3.0, 0.02, 0.1, -0.4),
              4: (1.5, 0.01, 0.05, -0.1)}
    records = []
    for epoch in range(1, 5):
        record = {**epoch_record(epoch, None), "accuracy": 0.2 * epoch}
        if epoch in measured_epochs:
            record.update(zip(("rank", "dimension_std", "alignment", "uniformity"), health[epoch], strict=True))
        records.append(record)
    return {"epoch": records}


def test_the_health_plot_draws_each_metric_per_epoch_with_markers(epoch_record):
    from mocokit.reporting.plots import HEALTH_PANELS, health_figure

    for measured in ((1, 2, 3, 4), (2, 4)):  # every epoch, and monitor.health_every_epochs=2
        metrics = _health_run(epoch_record, measured)
        axes = health_figure(metrics).axes[:len(HEALTH_PANELS)]
        for ax, (key, _title, _label, scale) in zip(axes, HEALTH_PANELS, strict=True):
            (line,) = ax.get_lines()
            records = [r for r in metrics["epoch"] if key in r]
            assert list(line.get_xdata()) == [r["epoch"] for r in records]
            assert [float(y) for y in line.get_ydata()] == pytest.approx([r[key] * scale for r in records])
            assert line.get_marker() == "o"  # few epochs: points
        assert len(axes[-1].get_lines()[0].get_xdata()) == 4  # the pretext accuracy of every epoch


def test_the_health_plot_is_drawn_only_when_measured_and_the_report_shows_it(tmp_path, epoch_record, write_run):
    from mocokit.reporting import write_report
    from mocokit.reporting.plots import health_figure

    assert health_figure({"epoch": [epoch_record(1, 0.5)]}) is None  # monitor.health_images=0
    run = write_run(tmp_path / "run", epochs=1)
    page = write_report(run).read_text()
    assert "Label-free health" in page and "No health metrics measured yet" in page
    with MetricsWriter(run, tensorboard=False) as writer:
        for record in _health_run(epoch_record)["epoch"]:
            writer.log(record)
    drawn = [p.name for p in write_plots(run)]
    assert drawn[-1] == "health.png"  # after loss, lr_momentum, (kNN,) grad_norms
    _assert_valid_png(run / "plots" / "health.png")
    page = write_report(run).read_text()
    assert "No health metrics measured yet" not in page
    assert len(re.findall(r'src="data:image/png;base64,', page)) == len(drawn)


def test_the_knn_baseline_is_named_after_the_weights_it_was_measured_on(epoch_record):
    from mocokit.reporting.plots import knn_figure

    run = {"baseline": [{"kind": "baseline", "step": 0, "knn_top1": 0.2, "knn_top5": 0.5}],
           "epoch": [epoch_record(epoch, 0.3 + 0.1 * epoch) for epoch in (1, 2)]}
    init = {"kind": "init", "step": 0, "given": "moco-v2-800ep-r50", "path": "/cache/moco_v2.pth.tar"}
    for metrics, start in ((run, "random init"), ({**run, "init": [init]}, "the initial weights")):
        ax = knn_figure(metrics).axes[0]
        labels = [line.get_label() for line in ax.get_lines()]
        assert f"top-1 at {start} (20.0%)" in labels, labels
        assert ax.get_title().endswith(f"+30.0 pts over {start})"), ax.get_title()
        other = "the initial weights" if start == "random init" else "random init"
        assert other not in ax.get_title() and not any(other in label for label in labels)
    assert knn_figure({"epoch": [epoch_record(1, None)]}) is None  # no epoch measured kNN
