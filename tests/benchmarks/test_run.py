"""Smoke test of `make bench` (benchmarks/run.py) in its tiny mode: every section runs and the JSON it writes holds
the ratios the project tracks. The full benchmark is not part of the test suite (it takes minutes). The compiled
variant compiles with the aot_eager backend: the same tracing, graphs and measurements without Inductor's code
generation, which took about 4 of this test's 7 minutes (437 s against 183 s, one CPU core shared with another
job). Inductor's numerics and kernel cache have their own tests: tests/engine/test_step_runner.py,
tests/training/test_compile_cache.py."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_tiny_benchmark_prints_the_table_and_writes_the_tracked_ratios(tmp_path):
    out, full = tmp_path / "results.json", tmp_path / "full.json"
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--tiny", "--threads", "1", "--out", str(out),
         "--full-out", str(full), "--compile-backend", "aot_eager"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| workload | baseline images/s | mocokit images/s |" in run.stdout
    results = json.loads(out.read_text())
    for key in ("step_speedup_v2", "step_speedup_v3", "flops_fraction", "peak_memory_ratio",
                "compiled_step_speedup_demo", "compile_seconds_first_demo", "compile_seconds_warm_demo",
                "epoch_fraction_of_step_demo"):
        assert results[key] > 0, key
    assert "torch.compile (train.compile_scope=networks, backend aot_eager), the same run:" in run.stdout
    record = json.loads(full.read_text())
    assert record["compile_backend"] == "aot_eager"
    for row in record["steps"].values():
        # the ratios are those of the measured numbers, and the FLOPs are the model's, not zero
        rates = row["images_per_s"]
        assert abs(row["speedup"] - rates["mocokit"]["median"] / rates["baseline"]["median"]) < 1e-9
        assert row["step_flops"] > 0 and row["peak_step_bytes"]["baseline"] > 0
        # the baseline (and the compiled step) run the same algorithm on the same model
        assert all(d < 1e-4 for d in row["first_loss_relative_difference"].values())
    compiled = record["steps"]["demo"]["compiled"]
    rates = record["steps"]["demo"]["images_per_s"]
    assert abs(compiled["speedup_over_baseline"] - rates["compiled"]["median"] / rates["baseline"]["median"]) < 1e-9
    assert len(compiled["compile_seconds_warm"]) == 1 and record["steps"]["v2"]["compiled"] is None
    assert record["steps"]["demo"]["graph_breaks"] == 0
    assert set(record["epoch"]["backends"]) == {"batched_in_memory", "per_image_workers"}
    assert all(row["epoch_seconds"] > 0 for row in record["epoch"]["backends"].values())


def test_the_false_negative_options_benchmark_measures_every_option_against_the_papers_loss(tmp_path):
    out = tmp_path / "fn.json"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "false_negatives.py"), "--tiny", "--out", str(out)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"papers' loss", "own keys masked", "masked + eliminate top-5", "masked + attract top-5",
                         "masked + debiased"}
    assert rows["papers' loss"]["ratio"] == 1.0
    assert all(row["seconds_per_step"] > 0 and row["ratio"] > 0 for row in rows.values())
