import json
import math
import sys
import warnings

import pytest

from mocokit.reporting import METRICS_FILE, MetricsWriter, read_metrics


def _write_lines(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


def test_each_log_is_one_flushed_line_before_close(tmp_path, step_record):
    writer = MetricsWriter(tmp_path, tensorboard=False)
    writer.log(step_record(1))
    writer.log(step_record(2))
    lines = (tmp_path / METRICS_FILE).read_text().splitlines()  # read while the writer is still open
    assert [json.loads(line)["step"] for line in lines] == [1, 2]
    writer.close()
    writer.close()  # closing twice is harmless


def test_context_manager_closes_and_log_after_close_fails(tmp_path, step_record):
    with MetricsWriter(tmp_path / "new" / "run", tensorboard=False) as writer:
        writer.log(step_record(1))
    assert writer.file.closed
    with pytest.raises(ValueError, match="closed"):
        writer.log(step_record(2))


def test_record_without_kind_is_refused(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=False) as writer, pytest.raises(ValueError, match="kind"):
        writer.log({"step": 1, "loss": 1.0})


def test_nan_loss_round_trips_through_the_file(tmp_path, step_record):
    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        writer.log(step_record(1, loss=math.nan))
        writer.log(step_record(2, loss=math.inf))
    for line in (tmp_path / METRICS_FILE).read_text().splitlines():
        json.loads(line, parse_constant=lambda token: pytest.fail(f"bare {token} written"))
    steps = read_metrics(tmp_path / METRICS_FILE)["step"]
    assert math.isnan(steps[0]["loss"]) and steps[1]["loss"] == math.inf


def test_resume_keeps_the_last_record_for_each_step_and_sorts_by_step(tmp_path, step_record, epoch_record):
    path = tmp_path / METRICS_FILE
    first = [step_record(s, loss=1.0) for s in (2, 4, 6)]
    resumed = [step_record(s, loss=2.0) for s in (4, 6, 8)]  # checkpoint at step 3: steps 4, 6 re-run
    _write_lines(path, [*first, epoch_record(1, 0.4), *resumed, epoch_record(1, 0.5)])
    metrics = read_metrics(path)
    assert [r["step"] for r in metrics["step"]] == [2, 4, 6, 8]
    assert [r["loss"] for r in metrics["step"]] == [1.0, 2.0, 2.0, 2.0]
    assert [r["knn_top1"] for r in metrics["epoch"]] == [0.5]


def test_resume_drops_records_of_the_abandoned_attempt_not_yet_rerun(tmp_path, step_record, epoch_record):
    path = tmp_path / METRICS_FILE
    # attempt 1 logged up to step 30 (with epoch 1 ending at step 20) but its last checkpoint was at step 12;
    # attempt 2 re-runs from step 13 and is killed at step 16.
    first = [step_record(s, loss=1.0) for s in range(2, 31, 2)]
    baseline = {"kind": "baseline", "step": 0, "knn_top1": 0.1}
    second = [step_record(s, loss=2.0) for s in (14, 16)]
    _write_lines(path, [baseline, *first[:10], epoch_record(1, 0.4), *first[10:], baseline, *second])
    metrics = read_metrics(path)
    assert [r["step"] for r in metrics["step"]] == [2, 4, 6, 8, 10, 12, 14, 16]
    assert [r["loss"] for r in metrics["step"]][-3:] == [1.0, 2.0, 2.0]
    assert metrics["epoch"] == []  # epoch 1 ended at step 20, in the abandoned part
    assert len(metrics["baseline"]) == 1


def test_truncated_last_line_is_skipped_without_warning(tmp_path, step_record):
    path = tmp_path / METRICS_FILE
    _write_lines(path, [step_record(1), step_record(2)])
    with path.open("a") as file:
        file.write(json.dumps(step_record(3))[:25])  # killed mid-write
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = read_metrics(path)
    assert [r["step"] for r in metrics["step"]] == [1, 2]


def test_writer_after_a_kill_starts_a_new_line_and_damage_is_warned(tmp_path, step_record):
    path = tmp_path / METRICS_FILE
    _write_lines(path, [step_record(1)])
    with path.open("a") as file:
        file.write('{"kind": "step", "st')  # killed mid-write
    with MetricsWriter(tmp_path, tensorboard=False) as writer:  # the resumed run
        writer.log(step_record(2))
    with pytest.warns(UserWarning, match="skipped 1 unreadable line"):
        metrics = read_metrics(path)
    assert [r["step"] for r in metrics["step"]] == [1, 2]


def test_records_without_kind_and_blank_lines_are_skipped_and_extra_keys_kept(tmp_path, step_record):
    path = tmp_path / METRICS_FILE
    extra = {**step_record(2), "new_metric": 3.0}
    lines = [json.dumps(step_record(1)), "", json.dumps({"step": 5}), json.dumps(extra)]
    path.write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning):
        metrics = read_metrics(path)
    assert [r["step"] for r in metrics["step"]] == [1, 2]
    assert metrics["step"][1]["new_metric"] == 3.0


def test_groups_by_kind_including_unknown_kinds(tmp_path, step_record):
    path = tmp_path / METRICS_FILE
    _write_lines(path, [step_record(1), {"kind": "probe", "step": 1, "top1": 0.7}])
    metrics = read_metrics(path)
    assert set(metrics) == {"step", "epoch", "baseline", "final", "probe"}
    assert metrics["epoch"] == [] and metrics["probe"][0]["top1"] == 0.7


def test_missing_file_raises_unless_missing_ok(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_metrics(tmp_path / METRICS_FILE)
    assert read_metrics(tmp_path / METRICS_FILE, missing_ok=True) == {
        "step": [], "epoch": [], "baseline": [], "final": []}


def test_tensorboard_event_file_holds_the_logged_scalars(tmp_path, step_record, epoch_record):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with MetricsWriter(tmp_path) as writer:
        writer.log(step_record(10, loss=4.25))
        writer.log(epoch_record(1, 0.625))
    accumulator = EventAccumulator(str(tmp_path / "tensorboard"))
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    assert {"step/loss", "step/lr", "epoch/knn_top1", "grad_norm/patch_embed.proj"} <= set(tags)
    (loss,) = accumulator.Scalars("step/loss")
    assert (loss.step, loss.value) == (10, 4.25)
    (knn,) = accumulator.Scalars("epoch/knn_top1")
    assert (knn.step, knn.value) == (20, 0.625)


def test_without_tensorboard_it_warns_and_still_writes_jsonl(tmp_path, monkeypatch, step_record):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import raise ImportError
    with pytest.warns(UserWarning, match="TensorBoard logging is off"):
        writer = MetricsWriter(tmp_path)
    with writer:
        writer.log(step_record(1))
    assert read_metrics(tmp_path / METRICS_FILE)["step"][0]["step"] == 1
    assert not (tmp_path / "tensorboard").exists()
