"""The baseline that needs no training: kNN on the mean-centred raw pixels, in the pretraining monitor (metrics,
summary) and in `mocokit knn --pixel-baseline`, against a slow numpy reference."""

import json

import numpy as np
import pytest
from PIL import Image

from mocokit.engine.pretrain import pretrain
from mocokit.reporting.metrics import read_metrics
from mocokit.reporting.summary import summarize
from mocokit.training.run_config import load_config

K, TEMPERATURE = 5, 0.1


def colour_classes(root, train=16, test=4, size=32, seed=0):
    """root/{train,test}/class<c>/<n>.png: red, green and blue classes in both splits, plus pixel noise."""
    rng = np.random.default_rng(seed)
    colours = np.array([(200, 60, 60), (60, 200, 60), (60, 60, 200)])
    for split, count in (("train", train), ("test", test)):
        for c, colour in enumerate(colours):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for n in range(count):
                pixels = np.clip(colour + rng.normal(0, 60, size=(size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{n}.png")
    return root


def reference_pixel_knn(data, k=K, temperature=TEMPERATURE):
    """Slow reference: each image through the evaluation transform, flattened; minus the bank's mean row; cosine
    similarity; the k nearest vote with weight exp(similarity / τ); top-1 and top-5 of the summed votes."""
    from mocokit import data as mdata

    def flat(split):
        dataset = mdata.build_eval_dataset(data, split)
        pairs = [dataset[i] for i in range(len(dataset))]
        return np.stack([np.asarray(x, np.float64).ravel() for x, _ in pairs]), np.array([y for _, y in pairs])

    bank, bank_labels = flat("train")
    queries, query_labels = flat("test")
    mean = bank.mean(axis=0)
    bank, queries = bank - mean, queries - mean
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    classes = bank_labels.max() + 1
    top1 = top5 = 0
    for query, label in zip(queries, query_labels):
        similarity = bank @ query
        nearest = np.argsort(-similarity)[:k]
        votes = np.zeros(classes)
        for i in nearest:
            votes[bank_labels[i]] += np.exp(similarity[i] / temperature)
        ranked = np.argsort(-votes)
        top1 += ranked[0] == label
        top5 += label in ranked[:5]
    return top1 / len(queries), top5 / len(queries)


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pixels")
    images = colour_classes(root / "images")
    cfg = load_config("v2-cifar10", [
        "model.width=0.125", "model.queue_size=32", "model.bn_splits=2", "train.batch_size=16", "train.epochs=1",
        "data.num_workers=0", "run.tensorboard=false", "run.progress=false", f"monitor.knn_k={K}",
        "train.threads=1", f"data.path={images}", f"run.dir={root / 'run'}",
    ])
    result = pretrain(cfg, echo=lambda _m: None)
    assert result.completed
    return cfg, result


def test_the_monitor_logs_the_pixel_baseline_equal_to_the_reference(pixel_run):
    cfg, result = pixel_run
    top1, top5 = reference_pixel_knn(cfg.data)
    assert top1 >= 0.9  # colour classes are separable in pixel space
    assert (result.pixel_top1, result.pixel_top5) == pytest.approx((top1, top5), abs=1e-6)
    metrics = read_metrics(result.run_dir / "metrics.jsonl")
    (baseline,) = metrics["baseline"]
    assert baseline["pixel_top1"] == pytest.approx(top1, abs=1e-6) and "knn_top1" in baseline
    summary = summarize(metrics)
    assert (summary.pixel_top1, summary.pixel_top5) == pytest.approx((top1, top5), abs=1e-6)
    assert "kNN top-1 on raw pixels" in (result.run_dir / "report.html").read_text()


def test_mocokit_knn_pixel_baseline_prints_and_saves_it(pixel_run, capsys):
    from mocokit import cli

    cfg, result = pixel_run
    top1, top5 = reference_pixel_knn(cfg.data, k=3)
    status = cli.main(["knn", str(result.run_dir), "knn.k=3", "--pixel-baseline", "--json"])
    out = capsys.readouterr().out
    assert status == 0 and "raw pixels (mean-centred, 32 px)" in out
    printed = json.loads(out.strip().splitlines()[-1])
    saved = json.loads((result.run_dir / "eval" / "knn.json").read_text())
    assert printed == saved
    assert (saved["pixel_top1"], saved["pixel_top5"]) == pytest.approx((top1, top5), abs=1e-6)
