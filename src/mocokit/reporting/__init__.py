"""Reporting of a run folder: `metrics.jsonl` and TensorBoard events while training (`MetricsWriter`), and
afterwards `plots/` and a self-contained `report.html` (`write_plots`, `write_report`).

    with MetricsWriter(run_dir) as metrics:
        metrics.log({"kind": "step", "step": 10, "epoch": 0.1, "loss": 6.9, "lr": 0.03, ...})
    write_report(run_dir)  # run_dir/report.html, run_dir/plots/*.png
"""

from mocokit.reporting.metrics import METRICS_FILE, MetricsWriter, read_metrics
from mocokit.reporting.plots import write_plots
from mocokit.reporting.report import write_report
from mocokit.reporting.spikes import find_dips, find_spikes
from mocokit.reporting.summary import RunSummary, summarize

__all__ = ["METRICS_FILE", "MetricsWriter", "RunSummary", "find_dips", "find_spikes", "read_metrics",
           "summarize", "write_plots", "write_report"]
