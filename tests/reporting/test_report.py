import base64
import html
import re

from mocokit.reporting import METRICS_FILE, MetricsWriter, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _external_references(page: str) -> list[str]:
    """Every src / href / url(...) in the page that is not a data URI or an in-page anchor."""
    links = re.findall(r'(?:src|href)\s*=\s*["\']?([^"\'\s>]+)', page, flags=re.IGNORECASE)
    links += re.findall(r"url\(\s*['\"]?([^'\")]+)", page, flags=re.IGNORECASE)
    return [link for link in links if not link.startswith(("data:", "#"))]


def test_report_is_self_contained_with_embedded_pngs(finished_run):
    path = write_report(finished_run)
    assert path == finished_run / "report.html"
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert 'src="http' not in page and "<script" not in page.lower() and "<link" not in page.lower()
    assert _external_references(page) == []
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4  # loss, lr/momentum, kNN, gradient norms
    assert all(base64.b64decode(image)[:8] == PNG_MAGIC for image in images)


def test_report_shows_final_numbers_and_escaped_config(finished_run):
    page = write_report(finished_run).read_text()
    assert "finished-run" in page and "completed" in page
    for number in ("60.00%", "+40.00 pts", "20.00%", "500 images/s", "1.5"):
        assert number in page
    assert html.escape("<b>data & more</b>") in page and "<b>data" not in page
    assert "vit_small" in page and "[0.9, 0.95]" in page


def test_run_killed_early_without_epochs_or_config(tmp_path, step_record):
    run = tmp_path / "killed"
    with MetricsWriter(run, tensorboard=False) as writer:
        writer.log(step_record(1))
        writer.log(step_record(2))
    with (run / METRICS_FILE).open("a") as file:
        file.write('{"kind": "step", "step": 3, "lo')  # killed mid-write
    page = write_report(run).read_text()
    assert "not finished" in page
    assert "No kNN accuracy measured yet" in page
    assert "config.yaml not found" in page
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 3  # loss, lr/momentum, gradient norms


def test_empty_metrics_file_says_no_metrics_yet(tmp_path):
    (tmp_path / METRICS_FILE).write_text("")
    (tmp_path / "config.yaml").write_text("model: [unclosed\n<tag>")  # not valid YAML: shown raw, escaped
    page = write_report(tmp_path).read_text()
    assert "No metrics yet" in page and "<img" not in page
    assert "&lt;tag&gt;" in page and "<tag>" not in page


def test_diverged_run_is_flagged(tmp_path, step_record):
    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        writer.log(step_record(1))
        writer.log(step_record(2, loss=float("nan")))
    page = write_report(tmp_path).read_text()
    assert "diverged at step 2" in page and "NaN" in page


def test_report_lists_the_run_s_command_versions_warnings_and_evaluations(tmp_path, step_record):
    run = tmp_path / "described"
    with MetricsWriter(run, tensorboard=False) as writer:
        writer.log({"kind": "run", "step": 0, "command": "mocokit pretrain demo data.path=<x>", "mocokit": "0.1.0",
                    "torch": "2.14.1", "python": "3.11.7", "device": "cpu"})
        writer.log(step_record(1))
        writer.log({"kind": "warnings", "step": 1,
                    "messages": ["model.queue_size=4096 is not smaller than the dataset"]})
    (run / "eval").mkdir()
    (run / "eval" / "knn.json").write_text('{"command": "knn", "top1": 0.4321, "top5": 0.9}')
    (run / "eval" / "broken.json").write_text("{not json")
    page = write_report(run).read_text()
    assert html.escape("mocokit pretrain demo data.path=<x>") in page and "2.14.1" in page
    assert "model.queue_size=4096 is not smaller than the dataset" in page
    assert "43.21%" in page and "90.00%" in page and "broken" in page and "unreadable" in page


def test_a_report_without_those_records_says_so(tmp_path, step_record):
    run = tmp_path / "older"
    with MetricsWriter(run, tensorboard=False) as writer:
        writer.log(step_record(1))
    page = write_report(run).read_text()
    assert "Not recorded" in page and "None yet" in page


def test_the_time_table_shows_planned_against_spent(tmp_path, step_record):
    from mocokit.reporting.metrics import read_metrics
    from mocokit.reporting.summary import summarize

    plan = {"budget_s": 1200.0, "total_steps": 2650, "steps_per_epoch": 320, "seconds_per_step": 0.41,
            "measured_from": 2, "measured_to": 21, "setup_s": 12.25, "elapsed_s": 21.0, "training_s": 1078.0,
            "evaluation_s": 60.5, "checkpoints_s": 2.0}
    spent = {"setup": 4.0, "baselines": 8.5, "training": 1090.25, "evaluations": 63.0, "checkpoints": 2.5}
    budgeted, plain = tmp_path / "budgeted", tmp_path / "plain"
    for run, final in ((budgeted, {"budget": plan}), (plain, {})):
        with MetricsWriter(run, tensorboard=False) as writer:
            writer.log(step_record(1))
            if final:
                writer.log({"kind": "budget", "step": 21, **plan})
            writer.log({"kind": "final", "step": 2650, "epoch": 9, "seconds_spent": spent, **final})
    summary = summarize(read_metrics(budgeted / METRICS_FILE))
    assert summary.budget["total_steps"] == 2650 and summary.seconds_spent == spent
    page = write_report(budgeted).read_text()
    table = page[page.index("<h2>Time</h2>"):page.index("<h2>Evaluations</h2>")]
    # planned: 12.25 setup, 8.75 measuring + 1078 training, 60.5 evaluations, 2 checkpoints = 1161.5 of 1200
    for text in ("12.2 s", "12.5 s", "1,086.8 s", "1,090.2 s", "60.5 s", "63.0 s", "1,161.5 s", "1,168.2 s",
                 "1,200.0 s", "8.28 epochs", "steps 2–21"):
        assert text in table, text
    plain_page = write_report(plain).read_text()
    table = plain_page[plain_page.index("<h2>Time</h2>"):plain_page.index("<h2>Evaluations</h2>")]
    assert "1,168.2 s" in table and "planned" not in table and "budget" not in table


def test_a_run_started_from_weights_shows_their_source_and_the_filled_queue(tmp_path, step_record):
    run = tmp_path / "continued"
    path = "/cache/moco_v2_800ep_pretrain.pth.tar"
    with MetricsWriter(run, tensorboard=False) as writer:
        writer.log({"kind": "run", "step": 0, "command": "mocokit pretrain v2-imagenet model.init=moco-v2-800ep-r50",
                    "mocokit": "0.1.0", "torch": "2.14.1", "python": "3.11.7", "device": "cpu"})
        writer.log({"kind": "init", "step": 0, "given": "moco-v2-800ep-r50", "path": path,
                    "sha256": "sha256:" + "ab" * 32, "summary": "moco-v1v2 layout, <encoder & head>",
                    "fill": {"dictionary": "queue", "entries": 65536, "batches": 256, "images": 65536,
                             "encoder": "key encoder", "seconds": 41.25}})
        writer.log({"kind": "baseline", "step": 0, "knn_top1": 0.61, "knn_top5": 0.85})
        writer.log(step_record(1))
    page = write_report(run).read_text()
    section = page[page.index("<h3>Initial weights (model.init)</h3>"):page.index("<h2>Resolved config</h2>")]
    for text in ("moco-v2-800ep-r50", path, "sha256:" + "ab" * 32, html.escape("moco-v1v2 layout, <encoder & head>"),
                 "filled with 65,536 keys of 256 batches of training images by the initial key encoder, 41.2 s"):
        assert text in section, text
    assert "<encoder" not in page  # escaped
    assert "kNN top-1 at the initial weights" in page and "61.00%" in page and "at random init" not in page


def test_a_run_from_random_weights_has_no_initial_weights_section(finished_run):
    page = write_report(finished_run).read_text()
    assert "Initial weights" not in page and "kNN top-1 at random init" in page
