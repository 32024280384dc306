"""knn, linear, finetune and transfer end to end on a small real CIFAR-10 subset: each prints one JSON object as
its last line and writes it to RUN/eval/. The run: MoCo v2 on 256 images of the real archive, one epoch, built once
per module."""

import argparse
import json
from pathlib import Path

import pytest

from mocokit.commands import finetune, knn, linear, transfer
from mocokit.engine.pretrain import pretrain
from mocokit.errors import ConfigError
from mocokit.training.run_config import load_config

ARCHIVE = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-jpg.tar.gz"
TINY_RUN = ["model.width=0.125", "train.epochs=1", "data.max_images=256", "train.batch_size=64",
            "monitor.knn_every_epochs=0", "run.tensorboard=false", "run.progress=false", "data.num_workers=0",
            "model.queue_size=128", "train.threads=1", "data.in_memory=false"]


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory) -> Path:
    if not ARCHIVE.is_file():
        pytest.skip(f"real CIFAR-10 archive not found at {ARCHIVE}")
    root = tmp_path_factory.mktemp("cifar")
    cfg = load_config("v2-cifar10", [*TINY_RUN, f"data.path={ARCHIVE}", f"data.root={root / 'data'}",
                                     f"run.dir={root / 'run'}"])
    pretrain(cfg, echo=lambda _message: None)
    return root / "run"


@pytest.fixture
def run_command():
    """run_command(argv) -> (exit status, stdout lines), through a parser with the four evaluation commands."""
    parser = argparse.ArgumentParser(prog="mocokit")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (knn, linear, finetune, transfer):
        module.register(commands)

    def run(argv: list[str], capsys) -> tuple[int, list[str]]:
        args = parser.parse_args(argv)
        status = args.handler(args)
        return status, capsys.readouterr().out.splitlines()

    return run


pytestmark = pytest.mark.slow

SMALL = ["data.max_images=300", "eval.test_images=200"]


def last_json(lines: list[str]) -> dict:
    return json.loads(lines[-1])


def test_knn_caches_features_and_compares_with_random_init(cifar_run, run_command, capsys):
    argv = ["knn", str(cifar_run), *SMALL, "knn.k=20", "--random-init", str(cifar_run / "config.yaml"), "--json"]
    status, lines = run_command(argv, capsys)
    first = last_json(lines)
    assert status == 0 and first["command"] == "knn" and not first["cached"]
    assert (first["bank_images"], first["query_images"], first["k"]) == (300, 200, 20)
    assert 0.1 < first["top1"] <= first["top5"] <= 1.0 and 0.0 < first["random_init_top1"] <= 1.0
    status, lines = run_command(argv, capsys)
    second = last_json(lines)
    assert second["cached"] and second["top1"] == first["top1"]  # same features, read back
    assert json.loads((cifar_run / "eval" / "knn.json").read_text()) == second
    assert f"{100 * second['top1']:.2f}%" in (cifar_run / "report.html").read_text()  # the report lists it


def test_linear_fast_probe(cifar_run, run_command, capsys):
    # Options after the overrides too, as users write them.
    status, lines = run_command(["linear", str(cifar_run), *SMALL, "--protocol", "linear-v1v2", "linear.epochs=5",
                                 "linear.mode=fast", "linear.feature_norm=batchnorm", "linear.optim.lr=0.1",
                                 "--json"], capsys)
    result = last_json(lines)
    assert status == 0 and result["protocols"] == ["linear-v1v2"] and result["mode"] == "fast"
    assert result["epochs"] == 5 and result["lr"] == 0.1
    assert result["train_images"] == 300 and 0.1 < result["top1"] <= result["top5"]
    assert (cifar_run / "eval" / "linear-fast.json").is_file()
    status, lines = run_command(["linear", str(cifar_run), *SMALL, "linear.epochs=2", "--json"], capsys)
    assert status == 0 and last_json(lines)["protocols"] == ["linear-fast"]  # the CPU default


def test_finetune_with_a_label_fraction(cifar_run, run_command, capsys):
    status, lines = run_command(["finetune", str(cifar_run), "data.label_fraction=0.01", "data.max_images=null",
                                 "eval.test_images=100",
                                 "finetune.epochs=1", "--json"], capsys)
    result = last_json(lines)
    assert status == 0 and result["train_images"] == 500 and result["label_fraction"] == 0.01
    assert result["curve"]["epochs"] == [1] and 0.0 <= result["top1"] <= 1.0


def test_transfer_writes_the_plot_and_both_accuracies(cifar_run, run_command, capsys):
    status, lines = run_command(["transfer", str(cifar_run), "data.max_images=200", "eval.test_images=100",
                                 "finetune.epochs=2", "--json"], capsys)
    result = last_json(lines)
    assert status == 0 and set(result) >= {"pretrained_top1", "random_init_top1", "gain", "plot"}
    assert result["pretrained"]["curve"]["epochs"] == result["random_init"]["curve"]["epochs"] == [1, 2]
    assert (cifar_run / "eval" / "transfer.png").stat().st_size > 10_000
    assert result["gain"] == pytest.approx(result["pretrained_top1"] - result["random_init_top1"])


def test_a_misspelt_key_is_a_config_error_before_any_work(cifar_run, run_command, capsys):
    with pytest.raises(ConfigError, match="Did you mean linear"):
        run_command(["linear", str(cifar_run), "lineer.epochs=3"], capsys)
    with pytest.raises(ConfigError, match="model.width: the model is fixed by the checkpoint"):
        run_command(["knn", str(cifar_run), "model.width=1.0"], capsys)
