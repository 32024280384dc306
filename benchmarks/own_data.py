"""`auto` against the `demo` preset on datasets that are not the CIFAR-10 training setup, same time budget each.

    python benchmarks/own_data.py                   # ~45 minutes on 2 CPU cores
    python benchmarks/own_data.py --budget 4m --target-budget 18m --datasets small-500 gray-2k
    python benchmarks/own_data.py --tiny            # seconds: checks that it runs

Datasets, built from the CIFAR-10 JPEG archive into benchmarks/out/own_data/ (training folders are unlabelled:
the labels are held aside in a separate labelled folder, used only by the kNN monitor to score the features):
- small-500: 500 CIFAR-10 *test* images (the test split as training data; the demo's K=4,096 is 8x the dataset);
- gray-2k: 2,000 other test images converted to grayscale;
- upscaled-96-2k: 2,000 other test images upscaled to 96 px;
- cifar10k (the target run): 10,000 CIFAR-10 train images, scored as in docs/calibration: kNN k=200, τ=0.1, the
  bank = those 10,000 images, queries = 2,000 test images; `auto` with train.time_budget=18m.
The scoring folders (monitor.data.path) of the first three: 2,000 labelled train images (bank) and 500 test images
that are not in any training folder (queries), transformed like the training images (grayscale, upscaled).

Per run it records the kNN top-1 after training, the random-init and raw-pixel baselines, the steps and epochs done,
and the share of the run spent on the label-free health metrics. Across all epoch records of all runs (each one a
checkpoint) it reports the Spearman rank correlation of each label-free metric with the kNN top-1. Writes
benchmarks/own_data.json (committed) and prints a table for docs/own-data.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
WORK = REPO / "benchmarks" / "out" / "own_data"
RESULT = REPO / "benchmarks" / "own_data.json"
LABEL_FREE = ("rank", "uniformity", "alignment", "dimension_std")
# higher is better for rank and dimension_std; lower for uniformity (more uniform) and alignment (closer views)
HIGHER_IS_BETTER = {"rank": True, "dimension_std": True, "uniformity": False, "alignment": False}


# --------------------------------------------------------------------------------------------------- datasets


def cifar_images(split: str) -> list[tuple[bytes, str]]:
    """Every JPEG of a CIFAR-10 split of the archive, with its class name, in archive order."""
    with tarfile.open(ARCHIVE, "r:gz") as tar:
        return [(tar.extractfile(m).read(), m.name.split("/")[-2]) for m in tar
                if m.isfile() and f"/{split}/" in m.name and m.name.endswith(".jpg")]


def transformed(data: bytes, kind: str) -> Image.Image:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    if kind == "gray":
        return image.convert("L")
    if kind == "upscaled":
        return image.resize((96, 96), Image.BICUBIC)
    return image


def write(items: list[tuple[bytes, str]], folder: Path, kind: str, labelled: bool) -> None:
    for i, (data, label) in enumerate(items):
        path = folder / label / f"{i:05d}.png" if labelled else folder / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "plain":
            path.with_suffix(".jpg").write_bytes(data)
        else:
            transformed(data, kind).save(path)


def shuffled(items: list, seed: int) -> list:
    order = np.random.default_rng(seed).permutation(len(items))
    return [items[i] for i in order]


def build_datasets(tiny: bool) -> dict[str, dict]:
    """name -> {"train": folder, "monitor": folder (train/ and test/ labelled), "kind"}; built once."""
    scale = 20 if tiny else 1
    test, train = shuffled(cifar_images("test"), 0), shuffled(cifar_images("train"), 1)
    monitor_bank, monitor_queries = train[:2000 // scale], test[-500 // scale:]
    specs = {
        "small-500": ("plain", test[:500 // scale]),
        "gray-2k": ("gray", test[500 // scale:2500 // scale]),
        "upscaled-96-2k": ("upscaled", test[2500 // scale:4500 // scale]),
    }
    datasets = {}
    for name, (kind, items) in specs.items():
        root = WORK / f"{'tiny-' if tiny else ''}{name}"
        if not (root / "done").exists():
            write(items, root / "images", kind, labelled=False)
            write(monitor_bank, root / "monitor" / "train", kind, labelled=True)
            write(monitor_queries, root / "monitor" / "test", kind, labelled=True)
            (root / "done").write_text("")
        datasets[name] = {"train": root / "images", "monitor": root / "monitor", "kind": kind, "images": len(items)}
    root = WORK / f"{'tiny-' if tiny else ''}cifar10k"
    if not (root / "done").exists():  # labelled train/ + test/: the kNN monitor uses the data's own splits
        write(train[:10_000 // scale], root / "train", "plain", labelled=True)
        write(test[:2000 // scale], root / "test", "plain", labelled=True)
        (root / "done").write_text("")
    datasets["cifar10k"] = {"train": root, "monitor": None, "kind": "plain", "images": 10_000 // scale}
    return datasets


# --------------------------------------------------------------------------------------------------- runs


def pretrain(preset: str, dataset: dict, budget: str, run_dir: Path, extra: list[str]) -> dict:
    """One budgeted run through the CLI; its summary from --json and metrics.jsonl."""
    overrides = [f"data.path={dataset['train']}", f"train.time_budget={budget}", f"run.dir={run_dir}",
                 "resume=none", "run.tensorboard=false", *extra]
    if dataset["monitor"] is not None:
        overrides += [f"monitor.data.path={dataset['monitor']}", "data.labels=none"]
    command = [sys.executable, "-m", "mocokit", "pretrain", preset, *overrides, "--json"]
    shutil.rmtree(run_dir, ignore_errors=True)  # an earlier measurement of the same run: measured again
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    (run_dir.parent / f"{run_dir.name}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    health = sum(r.get("health_seconds", 0.0) for r in epochs)
    return {
        "preset": preset, "budget": budget, "wall_seconds": round(seconds, 1),
        "knn_top1": summary["knn_top1"], "random_init_top1": summary["random_init_knn_top1"],
        "pixel_top1": summary["pixel_knn_top1"], "steps": summary["steps"], "epochs": len(epochs),
        "health_share": round(health / seconds, 4),
        "config": _config_summary(run_dir / "config.yaml"),
        "epoch_records": [{k: r.get(k) for k in ("epoch", "knn_top1", *LABEL_FREE)} for r in epochs],
    }


def _config_summary(path: Path) -> dict:
    import yaml

    cfg = yaml.safe_load(path.read_text())
    return {"image_size": cfg["data"]["image_size"], "batch_size": cfg["train"]["batch_size"],
            "queue_size": cfg["model"]["queue_size"], "width": cfg["model"]["width"],
            "bn_splits": cfg["model"]["bn_splits"], "lr": cfg["optim"]["lr"]}


# --------------------------------------------------------------------------------------------------- analysis


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    def ranks(values: list[float]) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        order = np.argsort(values, kind="stable")
        result = np.empty(len(values))
        result[order] = np.arange(len(values), dtype=float)
        for value in np.unique(values):  # ties share their mean rank
            tied = values == value
            result[tied] = result[tied].mean()
        return result

    rx, ry = ranks(x), ranks(y)
    return float(np.corrcoef(rx, ry)[0, 1])


def label_free_correlations(runs: list[dict]) -> dict[str, dict]:
    """Per metric: Spearman of (metric, oriented so that higher = better) against kNN top-1, over every epoch
    record of every run (pooled), and the mean of the per-run correlations (within a run: over its checkpoints)."""
    result = {}
    for metric in LABEL_FREE:
        sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
        pooled_x, pooled_y, within = [], [], []
        for run in runs:
            pairs = [(sign * r[metric], r["knn_top1"]) for r in run["epoch_records"]
                     if r.get(metric) is not None and r.get("knn_top1") is not None]
            pooled_x += [p[0] for p in pairs]
            pooled_y += [p[1] for p in pairs]
            if len(pairs) >= 3:
                within.append(spearman([p[0] for p in pairs], [p[1] for p in pairs]))
        result[metric] = {
            "pooled": round(spearman(pooled_x, pooled_y), 3) if len(pooled_x) >= 3 else None,
            "within_run_mean": round(float(np.nanmean(within)), 3) if within else None,
            "checkpoints": len(pooled_x),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="4m", help="time budget of each comparison run (default 4m)")
    parser.add_argument("--target-budget", default="18m", help="budget of the cifar10k auto run (default 18m)")
    parser.add_argument("--datasets", nargs="*", default=["small-500", "gray-2k", "upscaled-96-2k"])
    parser.add_argument("--skip-target", action="store_true", help="no cifar10k run")
    parser.add_argument("--tiny", action="store_true", help="tiny datasets and 20 s budgets: checks that it runs")
    args = parser.parse_args()
    if not ARCHIVE.is_file():
        sys.exit(f"{ARCHIVE} is missing: the benchmark builds its datasets from the CIFAR-10 JPEG archive")
    budget, target_budget = ("20s", "20s") if args.tiny else (args.budget, args.target_budget)
    datasets = build_datasets(args.tiny)
    runs_dir = WORK / ("tiny-runs" if args.tiny else "runs")
    runs_dir.mkdir(parents=True, exist_ok=True)
    out = RESULT if not args.tiny else WORK / "own_data-tiny.json"
    # results of earlier invocations are kept (a dataset rerun replaces only its own runs)
    results: dict = json.loads(out.read_text()) if out.is_file() else {"datasets": {}}
    results.update({"machine": f"{platform.machine()} {os.cpu_count()} cores", "budget": budget})
    for name in args.datasets:
        results["datasets"][name] = {}
        for preset in ("auto", "demo"):  # alternated per dataset: the same machine load for both
            run = pretrain(preset, datasets[name], budget, runs_dir / f"{name}-{preset}", [])
            run["started"] = time.strftime("%Y-%m-%d %H:%M")
            results["datasets"][name][preset] = run
            print(f"{name:16s} {preset:5s} kNN {run['knn_top1']:.4f} (random init {run['random_init_top1']:.4f}, "
                  f"pixels {run['pixel_top1']:.4f}), {run['steps']} steps, {run['epochs']} epochs, "
                  f"health {100 * run['health_share']:.1f}% of {run['wall_seconds']:.0f} s", flush=True)
    if not args.skip_target:
        extra = ["monitor.knn_bank_size=10000", "monitor.knn_query_size=2000", "model.width=0.25"]
        run = pretrain("auto", datasets["cifar10k"], target_budget, runs_dir / "cifar10k-auto", extra)
        results["cifar10k"] = run
        results["knn_auto_18min_cifar10k"] = run["knn_top1"]
        results["knn_random_init_cifar10k"] = run["random_init_top1"]
        results["knn_pixels_cifar10k"] = run["pixel_top1"]
        print(f"cifar10k auto {target_budget}: kNN {run['knn_top1']:.4f} (random init "
              f"{run['random_init_top1']:.4f}, pixels {run['pixel_top1']:.4f}), {run['steps']} steps", flush=True)
    all_runs = [run for runs in results["datasets"].values() for run in runs.values()]
    all_runs += [results["cifar10k"]] if "cifar10k" in results else []
    correlations = label_free_correlations(all_runs)
    results["spearman_label_free_vs_knn"] = {m: c["pooled"] for m, c in correlations.items()}
    results["spearman_details"] = correlations
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results["spearman_label_free_vs_knn"]))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
