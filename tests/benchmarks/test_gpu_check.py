"""benchmarks/gpu_check.py (`make gpu-check`) in its tiny mode, on whatever device the tests run on: every variant is
there, the losses are compared with fp32 eager as the JSON says, the speeds and the pretraining's kNN are recorded.
Also the pass/fail rule itself, on made-up losses."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
CONVOLUTIONAL = {"fp32", "fp32_repeat", "bf16", "channels_last", "bf16_channels_last", "compile",
                 "bf16_channels_last_compile"}
VIT = {"fp32", "fp32_repeat", "bf16", "compile", "bf16_compile"}


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_check")
    out = tmp / "gpu_check.json"
    # PYTHONPATH=src, as on the GPU machine (where mocokit is not installed)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(out)], capture_output=True, text=True,
                         timeout=600, cwd=tmp, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return run, json.loads(out.read_text())


def test_tiny_run_checks_every_variant_against_fp32_eager(tiny_run):
    run, results = tiny_run
    assert "max rel dloss" in run.stdout and "PASSED" in run.stdout
    assert results["tiny"] and results["status"] == "passed" and results["summary"]["passed"]
    assert results["numerics"]["matmul_allow_tf32"] is False and results["numerics"]["cudnn_allow_tf32"] is False
    assert results["tolerances"]["fp32"]["relative"] == 1e-3 and results["tolerances"]["bf16"]["relative"] == 5e-2
    steps = results["settings"]["check_steps"]
    assert set(results["models"]) == {"v2_resnet18", "v3_resnet18", "v3_vit_small"}
    compiled_here = torch.cuda.is_available()
    for key, model in results["models"].items():
        variants = model["variants"]
        assert set(variants) == (VIT if key == "v3_vit_small" else CONVOLUTIONAL), key
        reference = variants["fp32"]
        assert reference["status"] == "ok", reference
        for name, record in variants.items():
            if record["compile"] and not compiled_here:
                assert record["status"] == "skipped" and "CPU" in record["reason"], (key, name, record)
                continue
            assert record["status"] == "ok", (key, name, record)
            assert len(record["losses"]) == steps and all(math.isfinite(x) for x in record["losses"]), (key, name)
            tolerance = 5e-2 if record["bf16"] else 1e-3
            assert record["tolerance_relative"] == tolerance
            if name == "fp32":
                continue
            # the comparison is really computed, from these losses and fp32 eager's at the same steps
            worst = max(abs(a - b) / abs(b) for a, b in zip(record["losses"], reference["losses"]))
            assert record["max_relative_loss_difference"] == pytest.approx(worst, rel=1e-9, abs=1e-15)
            assert record["within_tolerance"] is True and worst <= tolerance, (key, name, worst)
            if record["bf16"]:  # bf16 really ran: its losses are not fp32's to the last bit
                assert worst > 0, (key, name)
            if name == "fp32_repeat":
                assert "images_per_s" not in record
                continue
            assert record["images_per_s"] > 0 and len(record["images_per_s_samples"]) >= 2
            assert record["speedup_vs_fp32"] == pytest.approx(record["images_per_s"] / reference["images_per_s"])
    assert results["parts"]["steps"]["status"] == "ok" and results["parts"]["steps"]["seconds"] > 0


def test_tiny_run_pretrains_through_the_cli_and_reports_knn(tiny_run):
    _, results = tiny_run
    assert results["parts"]["pretrain"]["status"] == "ok", results["parts"]["pretrain"]
    pretrain = results["pretrain"]
    assert pretrain["return_code"] == 0 and not pretrain["stopped_at_time_cap"]
    assert 0.0 <= pretrain["knn_top1"] <= 1.0 and 0.0 <= pretrain["random_init_knn_top1"] <= 1.0
    assert pretrain["epochs_done"] == 2 and pretrain["images_per_s"] > 0 and pretrain["minutes"] > 0
    assert pretrain["cli_result"]["knn_top1"] == pretrain["knn_top1"]
    assert 0 < results["parts"]["pretrain"]["seconds"] <= results["total_seconds"] < results["budget_seconds"]


def test_the_tolerance_rule_fails_what_it_should():
    gpu_check = load_script()
    same = gpu_check.compare_losses([2.0, 1.5], [2.0, 1.5], 1e-3)
    assert same["within_tolerance"] and same["max_relative_loss_difference"] == 0.0
    off = gpu_check.compare_losses([2.0, 1.6], [2.0, 1.5], 5e-2)  # 6.7% at the second step
    assert not off["within_tolerance"] and off["max_relative_loss_difference"] == pytest.approx(0.1 / 1.5)
    assert not gpu_check.compare_losses([2.0, float("nan")], [2.0, 1.5], 5e-2)["within_tolerance"]
    assert not gpu_check.compare_losses([2.0], [2.0, 1.5], 5e-2)["within_tolerance"]  # a step missing
    results = {"models": {"m": {"variants": {
        "fp32": {"status": "ok", "losses_finite": True},
        "bf16": {"status": "ok", "losses_finite": True, "tolerance_relative": 5e-2, **off},
        "compile": {"status": "skipped", "reason": "no CUDA"},
    }}}, "parts": {"pretrain": {"status": "error", "error": "RuntimeError: boom"}}}
    summary = gpu_check.summarise(results)
    assert not summary["passed"] and summary["failed"] and summary["variants_checked"] == 2
    assert summary["errors"] == ["pretrain: RuntimeError: boom"] and summary["skipped"] == ["m/compile: no CUDA"]


def test_a_variant_past_its_own_time_limit_is_stopped_and_the_limit_is_lifted_afterwards():
    """On the H200 the first compiled MoCo step ran over 6 minutes and took the pretraining's time with it: a
    compiled variant now has its own limit (--compile-seconds)."""
    import time

    script = load_script()
    with pytest.raises(script.VariantTimeout, match="limit"):
        with script.time_limit(0.2):
            time.sleep(5)
    started = time.perf_counter()
    with script.time_limit(1.0):
        pass
    time.sleep(1.2)  # the alarm was cancelled on leaving: nothing fires later
    assert time.perf_counter() - started >= 1.2
