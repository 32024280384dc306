"""training/cpu_memory.py: on glibc, freed step-sized blocks stay in the process for the next step instead of being
unmapped (and faulted in again as fresh zero pages)."""

import platform
import subprocess
import sys

import pytest

PROBE = """
import sys, torch
from mocokit.training.cpu_memory import reuse_freed_memory
if sys.argv[1] == "keep":
    assert reuse_freed_memory()
def resident():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) * 1024
block = torch.ones(64 * 2**20 // 4)  # 64 MiB, above glibc's largest automatic mmap threshold (32 MiB)
before_free = resident()
del block
print(before_free - resident())
"""


@pytest.mark.skipif(platform.system() != "Linux" or not platform.libc_ver()[0] == "glibc", reason="glibc only")
@pytest.mark.parametrize("mode", ["default", "keep"])
def test_a_freed_64_mib_block_is_returned_to_the_system_by_default_and_kept_after_reuse_freed_memory(mode):
    run = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    released = int(run.stdout)
    if mode == "keep":
        assert released < 8 * 2**20  # the block stays in the heap, resident, for the next step
    else:
        assert released > 56 * 2**20  # glibc unmapped it
