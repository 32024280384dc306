"""Inductor's persistent caches under mocokit's cache folder: a second process compiling the same network loads its
kernels and autograd graphs from there instead of compiling them again (what makes a rerun or a resumed run's
compile take seconds; the times are measured by `make bench`, not here)."""

import json
import os
import subprocess
import sys

PROGRAM = """
import json, torch
from torch._dynamo.utils import counters
from mocokit.training.process import use_persistent_compile_cache
from mocokit.models.shuffle_bn import SplitBatchNorm2d
use_persistent_compile_cache()
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), SplitBatchNorm2d(8, num_splits=2), torch.nn.ReLU(),
                          torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))
net.compile()
loss = net(torch.randn(4, 3, 8, 8)).square().mean()
loss.backward()
print(json.dumps({"loss": loss.item(), "fx_hits": counters["inductor"]["fxgraph_cache_hit"],
                  "fx_misses": counters["inductor"]["fxgraph_cache_miss"],
                  "autograd_hits": counters["aot_autograd"]["autograd_cache_hit"]}))
"""


def compile_in_a_new_process(env):
    run = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_the_compiled_network_from_mocokits_cache(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    env["MOCOKIT_CACHE"] = str(tmp_path)
    first = compile_in_a_new_process(env)
    assert first["fx_misses"] > 0 and first["fx_hits"] == 0  # a cold cache: compiled
    assert any((tmp_path / "inductor").iterdir())  # kept in mocokit's cache, not the system's temporary folder
    second = compile_in_a_new_process(env)
    assert second["fx_hits"] > 0 and second["fx_misses"] == 0 and second["autograd_hits"] > 0
    assert second["loss"] == first["loss"]
