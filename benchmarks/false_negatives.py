"""The cost of the queue's false-negative options per training step, against the same step without them.

    python benchmarks/false_negatives.py [--tiny]

The `demo` recipe's step (MoCo v2, quarter-width CIFAR ResNet-18, batch 128, 32 px, symmetric loss, 8 BN groups)
with K = 4096, on the CPU (or the GPU when there is one): the papers' loss, own-key masking, masking with
eliminate / attract top-5, and the debiased loss. Variants take turns (measure.alternate) in one process; the table
gives the median seconds per step and its ratio to the papers' loss. Writes benchmarks/out/false_negatives.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from measure import alternate, timed  # noqa: E402

from mocokit.engine.step import StepRunner  # noqa: E402
from mocokit.models import build_model  # noqa: E402
from mocokit.training.optim import build_optimizer  # noqa: E402
from mocokit.training.run_config import load_config  # noqa: E402

VARIANTS = {
    "papers' loss": ["model.mask_own_keys=false"],
    "own keys masked": ["model.mask_own_keys=true"],
    "masked + eliminate top-5": ["model.false_negatives=eliminate", "model.false_negative_top_k=5"],
    "masked + attract top-5": ["model.false_negatives=attract", "model.false_negative_top_k=5"],
    "masked + debiased": ["model.loss=debiased"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a few small steps: checks that it runs")
    parser.add_argument("--out", type=Path, default=None, help="the JSON (default: benchmarks/out/...)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch, size, queue = (16, 16, 64) if args.tiny else (128, 32, 4096)
    runners = {}
    for name, overrides in VARIANTS.items():
        cfg = load_config("demo", [f"model.queue_size={queue}", f"train.batch_size={batch}", *overrides,
                                   *(["model.width=0.125"] if args.tiny else [])])
        torch.manual_seed(0)
        model = build_model(cfg).to(device).train()
        runner = StepRunner(model, build_optimizer(model, cfg.optim, 0.03), device, nullcontext)
        generator = torch.Generator().manual_seed(0)
        views = [torch.randn(batch, 3, size, size, generator=generator).to(device) for _ in range(2)]
        state = {"step": 0}

        def step(runner=runner, views=views, state=state):
            # indices that come back within the queue's reach, so that masks and identities have work to do
            indices = (torch.arange(batch) + state["step"] * batch) % (queue // 2)
            state["step"] += 1
            return runner(views, 0.03, 0.99, indices=indices.to(device))

        for _ in range(2 if args.tiny else 3):  # warm-up (and fill the queue's identities)
            step()
        runners[name] = step
    steps, reps = (2, 2) if args.tiny else (6, 5)
    samples = alternate({name: (lambda s=step: timed(s, steps, device)) for name, step in runners.items()}, reps)
    base = statistics.median(samples["papers' loss"])
    rows = {name: {"seconds_per_step": statistics.median(v), "ratio": statistics.median(v) / base}
            for name, v in samples.items()}
    print("| option | s/step | vs papers' loss |\n|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['seconds_per_step']:.4f} | {row['ratio']:.3f}x |")
    out = args.out or Path(__file__).parent / "out" / ("false_negatives-tiny.json" if args.tiny
                                                       else "false_negatives.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"device": str(device), "batch": batch, "queue_size": queue, "threads": torch.get_num_threads(),
                    "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
