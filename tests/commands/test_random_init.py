"""The random-init baseline: one definition (the network a pretraining run of the config starts from, on the run's
data), whether pretraining prints it or `knn --random-init` measures it; and the README's command as written."""

import json
from pathlib import Path

import pytest


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_readme_knn_with_random_init_runs_as_written(demo_run, mocokit_cli, capsys):
    # the README: `mocokit knn runs/demo --random-init demo --json`; the preset's data.path (cifar10) is not used
    assert mocokit_cli("knn", demo_run, "--random-init", "demo", "--json") == 0
    result = last_json(capsys)
    assert 0.0 <= result["random_init_top1"] <= result["random_init_top5"] <= 1.0
    assert json.loads((demo_run / "eval" / "knn.json").read_text())["random_init_top1"] == result["random_init_top1"]


def test_pretraining_baseline_and_knn_random_init_are_the_same_number(demo_run, mocokit_cli, capsys):
    # both take every image of the tiny splits with k=200, τ=0.1: the same weights must give the same accuracies
    logged = [json.loads(line) for line in (demo_run / "metrics.jsonl").read_text().splitlines()]
    baseline = next(record for record in logged if record.get("kind") == "baseline")
    assert mocokit_cli("knn", demo_run, "--random-init", demo_run / "config.yaml", "--json") == 0
    result = last_json(capsys)
    assert (result["random_init_top1"], result["random_init_top5"]) == (baseline["knn_top1"], baseline["knn_top5"])
    # and the check can fail: other initial weights (another train.seed) give other accuracies
    assert mocokit_cli("knn", demo_run, "train.seed=1", "--random-init", demo_run / "config.yaml", "--json") == 0
    other = last_json(capsys)
    assert (other["random_init_top1"], other["random_init_top5"]) != (baseline["knn_top1"], baseline["knn_top5"])


def test_an_unusable_random_init_config_stops_before_any_work(demo_run, mocokit_cli, capsys, tmp_path):
    run = tmp_path / "demo"
    _copy_run(demo_run, run)
    assert mocokit_cli("knn", run, "--random-init", "no-such-preset") == 2
    assert "kNN (k=" not in capsys.readouterr().out and not (run / "eval").exists()


def test_the_pretrained_result_is_saved_before_the_baseline_runs(demo_run, mocokit_cli, capsys, tmp_path,
                                                                monkeypatch):
    from mocokit.evaluation import knn_eval

    run = tmp_path / "demo"
    _copy_run(demo_run, run)
    evaluate = knn_eval.knn_evaluation

    def failing_baseline(session):
        if session.encoder.checkpoint is None:  # the random-init session
            raise RuntimeError("baseline failed")
        return evaluate(session)

    monkeypatch.setattr(knn_eval, "knn_evaluation", failing_baseline)
    with pytest.raises(RuntimeError, match="baseline failed"):
        mocokit_cli("knn", run, "--random-init", "demo")
    saved = json.loads((run / "eval" / "knn.json").read_text())
    assert 0.0 <= saved["top1"] <= 1.0 and "random_init_top1" not in saved


def _copy_run(run: Path, target: Path) -> None:
    """The run folder without the results and caches of earlier tests."""
    import shutil

    shutil.copytree(run, target, ignore=shutil.ignore_patterns("eval", "cache"))
