"""Process-wide settings, in one place. They change the whole Python process (every thread, every later caller),
so no library function makes them: the entry points call `configure_process` (the `mocokit` command in
`cli.main`, a pretraining run in `engine.pretrain.pretrain`, an evaluation command once its run's config is known).

This module imports nothing heavy at import time: the `mocokit` command calls it before parsing any argument.
"""

from __future__ import annotations

import os
import random
import sys

from mocokit.training.cpu_memory import reuse_freed_memory


def configure_process(threads: int | None = None, seed: int | None = None, deterministic: bool | None = None,
                      reuse_cpu_memory: bool = False) -> None:
    """Always: matplotlib draws off-screen (the Agg backend: no display needed, and a GUI session's backend is
    not picked up by the experiments' figures). Then each setting given (None or False: left as it is):
    threads: PyTorch's CPU thread count. seed: Python's, NumPy's and PyTorch's global generators (every CUDA device
    too). deterministic: True selects deterministic kernels (cuBLAS workspace, no cuDNN autotuning), False lets
    cuDNN autotune. reuse_cpu_memory: glibc keeps freed blocks of up to 1 GiB for reuse (training on a CPU;
    training/cpu_memory.py)."""
    draw_off_screen()
    if threads is None and seed is None and deterministic is None and not reuse_cpu_memory:
        return  # torch stays unimported (`mocokit --help`)
    import numpy as np
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    if seed is not None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required for deterministic cuBLAS
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif deterministic is not None:
        torch.backends.cudnn.benchmark = True
    if reuse_cpu_memory:
        reuse_freed_memory()  # a step's large activations stay in the heap for the next


def draw_off_screen() -> None:
    """matplotlib's Agg backend for this process (and the processes it starts), without importing matplotlib when
    nothing has yet: the environment variable is what matplotlib reads when it is first imported."""
    if "matplotlib" in sys.modules:
        sys.modules["matplotlib"].use("Agg")
    else:
        os.environ["MPLBACKEND"] = "Agg"
