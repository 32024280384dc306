"""training/process.py: the process-wide settings, made only by the entry points that call configure_process."""

import subprocess
import sys


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_without_settings_it_only_chooses_agg_and_imports_no_torch():
    assert _run("import os, sys\nfrom mocokit.training.process import configure_process\nconfigure_process()\n"
                "import matplotlib\n"
                "print('torch' in sys.modules, os.environ['MPLBACKEND'], matplotlib.get_backend().lower())"
                ) == ["False", "Agg", "agg"]


def test_threads_and_seeds_are_set_for_the_whole_process():
    out = _run("import random, numpy as np, torch\nfrom mocokit.training.process import configure_process\n"
               "configure_process(threads=1, seed=3, deterministic=False)\n"
               "a = (random.random(), float(np.random.rand()), float(torch.rand(())))\n"
               "random.seed(3); np.random.seed(3); torch.manual_seed(3)\n"
               "print(torch.get_num_threads(), a == (random.random(), float(np.random.rand()), float(torch.rand(()))),"
               " torch.backends.cudnn.benchmark)")
    assert out == ["1", "True", "True"]


def test_importing_the_experiment_figures_leaves_the_backend_alone():
    assert _run("import matplotlib\nmatplotlib.use('svg')\nimport mocokit.experiments.plots\n"
                "print(matplotlib.get_backend().lower())") == ["svg"]


def test_recorded_warnings_keep_each_message_once_and_still_show_it():
    import warnings

    from mocokit.training.process import recorded_warnings

    shown = []
    previous = warnings.showwarning
    warnings.showwarning = lambda message, *args, **kwargs: shown.append(str(message))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            with recorded_warnings() as messages:
                for text in ("first\n  line", "second", "first\n  line"):
                    warnings.warn(text, stacklevel=1)
    finally:
        warnings.showwarning = previous
    assert messages == ["first line", "second"]  # one line each, distinct
    assert len(shown) == 3  # the previous handler still saw every warning
