import math

import pytest

from mocokit.reporting import METRICS_FILE, read_metrics, summarize
from mocokit.reporting.metrics import empty_metrics


def test_finished_run_numbers(finished_run):
    summary = summarize(read_metrics(finished_run / METRICS_FILE))
    assert summary.steps == 60 and summary.epochs == 3
    assert summary.knn_top1 == pytest.approx(0.6) and summary.knn_epoch == 3
    assert summary.knn_top5 == pytest.approx(0.8)  # from the last epoch record: the final record has no top-5
    assert summary.baseline_top1 == 0.2 and summary.knn_gain == pytest.approx(0.4)
    assert summary.minutes == 1.5  # the final record's, not the span of the timestamps
    assert summary.mean_images_per_s == 500.0
    assert summary.last_loss == pytest.approx(8.0 * math.exp(-60 / 50) + 2.0)
    assert summary.first_nonfinite_loss_step is None


def test_run_killed_early_has_no_epochs_and_uses_the_time_span(step_record):
    metrics = empty_metrics()
    metrics["step"] = [step_record(2), step_record(4, loss=math.nan), step_record(6, loss=math.nan)]
    summary = summarize(metrics)
    assert (summary.epochs, summary.steps) == (0, 6)
    assert summary.knn_top1 is None and summary.knn_gain is None
    assert summary.minutes == pytest.approx(4 / 60)
    assert math.isnan(summary.last_loss) and summary.first_nonfinite_loss_step == 4


def test_empty_metrics():
    summary = summarize(empty_metrics())
    assert (summary.epochs, summary.steps, summary.last_loss, summary.minutes, summary.started) == (
        0, 0, None, None, None)


def test_knn_comes_from_the_last_epoch_that_measured_it(epoch_record):
    metrics = empty_metrics()
    metrics["epoch"] = [epoch_record(1, 0.4), epoch_record(2, 0.5), epoch_record(3, None)]
    summary = summarize(metrics)
    assert (summary.knn_top1, summary.knn_epoch, summary.epochs) == (0.5, 2, 3)
