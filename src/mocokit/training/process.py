"""Process-wide settings, in one place. They change the whole Python process (every thread, every later caller),
so no library function makes them: the entry points call `configure_process` (the `mocokit` command in
`cli.main`, a pretraining run in `engine.pretrain.pretrain`, an evaluation command once its run's config is known).

This module imports nothing heavy at import time: the `mocokit` command calls it before parsing any argument.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import sys
import warnings
from collections.abc import Iterator

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


def use_persistent_compile_cache() -> None:
    """torch.compile's Inductor keeps its compiled kernels and autograd graphs in mocokit's cache folder
    (training/compilation.py: `<cache>/inductor`) rather than the system's temporary folder, so that a second run of
    the same model (or a resumed one) loads them instead of compiling again. $TORCHINDUCTOR_CACHE_DIR, when set,
    wins. Inductor reads the variable whenever it looks for its cache: set before the first compile is enough."""
    from mocokit.training.compilation import INDUCTOR_CACHE_VARIABLE, inductor_cache_dir

    os.environ[INDUCTOR_CACHE_VARIABLE] = str(inductor_cache_dir())


def draw_off_screen() -> None:
    """matplotlib's Agg backend for this process (and the processes it starts), without importing matplotlib when
    nothing has yet: the environment variable is what matplotlib reads when it is first imported."""
    if "matplotlib" in sys.modules:
        sys.modules["matplotlib"].use("Agg")
    else:
        os.environ["MPLBACKEND"] = "Agg"


WARNING_PREFIX = "mocokit: warning: "
# The per-image warning of mocokit.data (robust.py, memory.py); matched by name so that no heavy module is imported.
UNREADABLE_WARNING, UNREADABLE_PREFIX = "UnreadableImageWarning", "skipping unreadable image "


@contextlib.contextmanager
def one_line_warnings(stream=None) -> Iterator[None]:
    """While inside: every Python warning is printed as one line `mocokit: warning: <message>` (no file name, no
    source line, no category), each distinct message once; at the end, when images were skipped as unreadable, one
    line with their count. DataLoader workers forked inside count into the same total. The previous
    `warnings.showwarning` is restored on exit. For the command line (`cli.main`); a library leaves warnings to
    its caller."""
    seen: set[str] = set()
    skipped = multiprocessing.Value("i", 0)  # shared memory: forked DataLoader workers add to the same count
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split())  # one line, whatever the message holds
        if text in seen:
            return
        seen.add(text)
        if category.__name__ == UNREADABLE_WARNING and text.startswith(UNREADABLE_PREFIX):
            with skipped.get_lock():
                skipped.value += 1
        print(WARNING_PREFIX + text, file=stream or sys.stderr, flush=True)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous
        if skipped.value:
            images = "image was" if skipped.value == 1 else "images were"
            print(f"{WARNING_PREFIX}{skipped.value} unreadable {images} skipped in all (each named above); fix or "
                  "delete those files", file=stream or sys.stderr, flush=True)


@contextlib.contextmanager
def recorded_warnings() -> Iterator[list[str]]:
    """While inside: each distinct warning message (one line) is appended to the list this yields, and still shown
    as before (the previous `warnings.showwarning` is called). For a run's report: the warnings of the run."""
    messages: list[str] = []
    previous = warnings.showwarning

    def record(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split())
        if text not in messages:
            messages.append(text)
        previous(message, category, filename, lineno, file, line)

    warnings.showwarning = record
    try:
        yield messages
    finally:
        warnings.showwarning = previous

