"""The run folder's `report.html`: one self-contained page (inline CSS, PNGs as base64 data URIs, no scripts,
no external resources) with the run's final numbers, its curves and its resolved config.

Everything read from the run folder (config values, layer names, the run name) is HTML-escaped.
"""

from __future__ import annotations

import base64
import datetime
import html
import math
from pathlib import Path
from typing import Any

import yaml

from mocokit.reporting.metrics import METRICS_FILE, Metrics, read_metrics
from mocokit.reporting.plots import PLOTS_DIR, draw_plots
from mocokit.reporting.summary import RunSummary, baseline_start, summarize

REPORT_FILE = "report.html"
CONFIG_FILE = "config.yaml"
EVAL_DIR = "eval"  # RUN/eval/<command>.json, written by the evaluation commands
EVAL_NUMBERS = ("top1", "top5", "knn_top1", "knn_top5", "random_init_top1", "gain", "finetune_gain")
CAPTIONS = {  # plot file -> (heading, what to look for)
    "loss.png": (
        "Loss and instance-discrimination accuracy",
        ("Thin line: logged steps; thick segments: each epoch's mean. A loss stuck at log(K+1) with accuracy "
         "near 1/(K+1) means the encoder is not learning."),
    ),
    "lr_momentum.png": ("Learning rate and momentum", "The schedules actually applied, per logged step."),
    "knn.png": (
        "kNN accuracy",
        ("Weighted kNN on the test split after each measured epoch. Features that collapse show as a dip or "
         "a fall towards the random-initialisation line."),
    ),
    "grad_norms.png": (
        "Gradient norms",
        ("Per watched layer, log scale; red circles mark spikes. In an unstable ViT run, spikes in the first "
         "(patch embedding) and last layers come with loss jumps and kNN dips."),
    ),
    "health.png": (
        "Label-free health",
        ("Measured on a fixed sample of training images, no labels needed. Effective rank and per-dimension std "
         "that fall sharply mean collapse (every image mapped to nearly the same point; uniformity then rises "
         "towards 0); a healthy run keeps them up while alignment falls and the pretext accuracy rises."),
    ),
}
MISSING_PLOT = {  # plot file -> why it may be absent
    "knn.png": ("No kNN accuracy measured yet (no epoch finished, monitor.knn_every_epochs = 0, or the "
                "dataset has no labelled test split)."),
    "grad_norms.png": ("Not enough steps: no gradient norm logged yet (they are measured every "
                       "run.log_every_steps steps)."),
    "loss.png": "Not enough steps: no loss logged yet.",
    "lr_momentum.png": "Not enough steps: no learning rate or momentum logged yet.",
    "health.png": "No health metrics measured yet (no epoch finished, or monitor.health_images = 0).",
}
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1f2328;
       background: #f6f8fa; line-height: 1.45; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
h1 { margin: 0 0 4px; font-size: 1.7em; }
h2 { margin-top: 2em; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
h3 { margin: 1.2em 0 0.3em; font-size: 1.05em; }
.meta { color: #57606a; margin: 0; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 12px; font-size: 0.85em; font-weight: 600;
         margin-left: 8px; vertical-align: middle; }
.badge.completed { background: #dafbe1; color: #116329; }
.badge.partial { background: #fff8c5; color: #7d4e00; }
.badge.diverged { background: #ffebe9; color: #a40e26; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { text-align: left; padding: 4px 14px 4px 8px; border-bottom: 1px solid #eaeef2; vertical-align: top; }
th { font-weight: 600; color: #424a53; }
td.number { font-variant-numeric: tabular-nums; }
table.config td:first-child { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; color: #424a53; }
table.config td:last-child { font-family: ui-monospace, SFMono-Regular, Menlo, monospace;
                             word-break: break-all; }
figure { margin: 16px 0 28px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: 0.9em; margin-top: 4px; }
.note { color: #57606a; font-style: italic; }
pre { background: #f6f8fa; padding: 12px; overflow-x: auto; font-size: 0.88em; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.2f}%"


def _float(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.{digits}f}"


def _local_time(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _final_numbers(summary: RunSummary) -> list[tuple[str, str]]:
    """(label, formatted value) rows of the final-numbers table; rows that do not apply are left out."""
    rows = [("Last loss", _float(summary.last_loss)),
            ("Last instance-discrimination top-1", _percent(summary.last_accuracy))]
    if summary.knn_top1 is not None:
        at = f" (epoch {summary.knn_epoch})" if summary.knn_epoch is not None else ""
        rows += [(f"kNN top-1{at}", _percent(summary.knn_top1)),
                 (f"kNN top-5{at}", _percent(summary.knn_top5))]
    start = baseline_start(summary.initial_weights)
    if summary.baseline_top1 is not None:
        rows += [(f"kNN top-1 at {start}", _percent(summary.baseline_top1))]
        if summary.baseline_top5 is not None:
            rows += [(f"kNN top-5 at {start}", _percent(summary.baseline_top5))]
    if summary.pixel_top1 is not None:
        rows += [("kNN top-1 on raw pixels", _percent(summary.pixel_top1))]
        if summary.pixel_top5 is not None:
            rows += [("kNN top-5 on raw pixels", _percent(summary.pixel_top5))]
    if summary.knn_gain is not None:
        rows += [(f"kNN top-1 gain over {start}", f"{summary.knn_gain * 100:+.2f} pts")]
    if summary.best_epoch is not None:
        rows += [("Best label-free checkpoint (RUN@best)",
                  f"epoch {summary.best_epoch}, uniformity {_float(summary.best_uniformity, 3)}")]
    throughput = summary.mean_images_per_s
    rows += [("Epochs completed", str(summary.epochs)), ("Steps", str(summary.steps)),
             ("Minutes", _float(summary.minutes, 1)),
             ("Mean throughput", "—" if throughput is None else f"{throughput:,.0f} images/s")]
    if summary.first_nonfinite_loss_step is not None:
        rows += [("First non-finite loss", f"step {summary.first_nonfinite_loss_step}")]
    return rows


def _time_section(summary: RunSummary) -> str:
    """Where the run's wall time went (the final record's seconds per category), against the time budget's plan
    when the run had one (train.time_budget)."""
    spent, plan = summary.seconds_spent, summary.budget
    if not spent and not plan:
        return '<p class="note">Not recorded yet (written when the run completes).</p>'
    spent = spent or {}

    def number(key: str, source: dict[str, Any] | None) -> float | None:
        value = (source or {}).get(key)
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None

    def seconds(value: float | None) -> str:
        return "—" if value is None else f"{value:,.1f} s"

    def added(*values: float | None) -> float | None:
        known = [v for v in values if v is not None]
        return sum(known) if known else None

    setup, elapsed, training = number("setup_s", plan), number("elapsed_s", plan), number("training_s", plan)
    rows = [  # (what, planned, spent)
        ("setup + baselines", setup, added(number("setup", spent), number("baselines", spent))),
        ("training steps", added(elapsed - setup, training) if None not in (setup, elapsed, training) else None,
         number("training", spent)),
        ("kNN and health evaluations", number("evaluation_s", plan), number("evaluations", spent)),
        ("checkpoints", number("checkpoints_s", plan), number("checkpoints", spent)),
    ]
    total_planned = added(*(row[1] for row in rows)) if plan else None
    rows.append(("total", total_planned, added(*(row[2] for row in rows))))
    if plan:
        rows.append(("budget", number("budget_s", plan), None))
    head = "<tr><th></th><th>planned</th><th>spent</th></tr>" if plan else "<tr><th></th><th></th><th>spent</th></tr>"
    body = "".join(f'<tr><th>{_e(what)}</th><td class="number">{_e(seconds(planned) if plan else "")}</td>'
                   f'<td class="number">{_e(seconds(used))}</td></tr>' for what, planned, used in rows)
    note = ""
    if plan:
        steps, per_step = number("total_steps", plan), number("seconds_per_step", plan)
        epochs = steps / plan["steps_per_epoch"] if steps and plan.get("steps_per_epoch") else None
        note = (f'<p class="note">train.time_budget: {_e(seconds(number("budget_s", plan)))}; '
                f'{_e(seconds(per_step))} per step measured over steps {_e(plan.get("measured_from"))}–'
                f'{_e(plan.get("measured_to"))}, so {_e(f"{int(steps or 0):,}")} steps'
                f'{_e(f" = {epochs:.2f} epochs" if epochs else "")} were planned and the schedules laid over '
                "them. A resumed run follows its first invocation's plan; its spent time adds every invocation's "
                "(up to its last checkpoint).</p>")
    return f"<table>{head}{body}</table>{note}"


def _status(summary: RunSummary, finished: bool) -> tuple[str, str]:
    """(css class, text) of the badge next to the run name."""
    if summary.first_nonfinite_loss_step is not None:
        return "diverged", f"diverged at step {summary.first_nonfinite_loss_step}"
    return ("completed", "completed") if finished else ("partial", "not finished")


def _config_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    flow = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000)
    return flow.strip().removesuffix("...").strip()  # a bare scalar is dumped with a document end marker


def _read_config(config_path: Path) -> tuple[str | None, Any]:
    """(the file's text, its parsed YAML); (None, None) when missing, (text, None) when not valid YAML."""
    if not config_path.is_file():
        return None, None
    text = config_path.read_text(encoding="utf-8", errors="replace")
    try:
        return text, yaml.safe_load(text)
    except yaml.YAMLError:
        return text, None


def _config_section(text: str | None, tree: Any) -> str:
    """The resolved config as one table per section, or the raw text in a <pre> when not a YAML mapping."""
    if text is None:
        return f'<p class="note">{_e(CONFIG_FILE)} not found in the run folder.</p>'
    if not isinstance(tree, dict):
        return f"<pre>{_e(text)}</pre>"
    general = {key: value for key, value in tree.items() if not isinstance(value, dict)}
    sections = [("general", general)] if general else []
    sections += [(key, value) for key, value in tree.items() if isinstance(value, dict)]
    parts = []
    for name, section in sections:
        rows = "".join(f"<tr><td>{_e(key)}</td><td>{_e(_config_value(value))}</td></tr>"
                       for key, value in section.items())
        parts.append(f'<h3>{_e(name)}</h3>\n<table class="config">{rows}</table>')
    return "\n".join(parts)


def _figure(path: Path) -> str:
    heading, caption = CAPTIONS.get(path.name, (path.stem, ""))
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f"<h3>{_e(heading)}</h3>\n"
            f'<figure><img src="data:image/png;base64,{data}" alt="{_e(heading)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _run_section(metrics: Metrics) -> str:
    """How the run was made: the command, versions and device of its latest start, and the warnings it printed."""
    runs, warned = metrics.get("run", []), metrics.get("warnings", [])
    if not runs and not warned:
        return '<p class="note">Not recorded (a run of an earlier mocokit version).</p>'
    parts = []
    if runs:
        last = runs[-1]
        rows = [("command", last.get("command")), ("mocokit", last.get("mocokit")), ("torch", last.get("torch")),
                ("python", last.get("python")), ("device", last.get("device"))]
        if len(runs) > 1:
            rows.append(("starts", f"{len(runs)} (resumed {len(runs) - 1} time(s)); the latest is shown"))
        parts.append("<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows
                                         if v is not None) + "</table>")
    parts += [_initial_weights(record) for record in metrics.get("init", [])[:1]]
    messages = [m for record in warned for m in record.get("messages", [])]
    if messages:
        parts.append("<h3>Warnings</h3><ul>" + "".join(f"<li>{_e(m)}</li>" for m in dict.fromkeys(messages))
                     + "</ul>")
    else:
        parts.append('<p class="note">No warnings.</p>')
    return "\n".join(parts)


def _initial_weights(init: dict[str, Any]) -> str:
    """model.init: the weights the run started from (as given, the file, its SHA-256, what was loaded) and how its
    dictionary was filled before the first step; from the "init" record of the run's fresh start."""
    rows = [("model.init", init.get("given")), ("file", init.get("path")), ("SHA-256", init.get("sha256")),
            ("loaded", init.get("summary"))]
    fill = init.get("fill")
    if isinstance(fill, dict):
        what, unit = ("queue", "keys") if fill.get("dictionary") == "queue" else ("memory bank", "rows")
        entries, batches, seconds = fill.get("entries"), fill.get("batches"), fill.get("seconds")
        text = str(fill)  # a record this version did not write: shown as it is
        if isinstance(entries, int) and isinstance(batches, int):
            text = (f"filled with {entries:,} {unit} of {batches:,} batch{'es' if batches != 1 else ''} of training "
                    f"images by the initial {fill.get('encoder')}")
            if isinstance(seconds, (int, float)):
                text += f", {seconds:.1f} s"
        rows.append((what, text))
    else:
        rows.append(("dictionary", "no stored keys (v3's batch, end-to-end): nothing filled"))
    return ("<h3>Initial weights (model.init)</h3><table>"
            + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows if v is not None) + "</table>")


def _evaluations_section(run_dir: Path) -> str:
    """The results the evaluation commands wrote to RUN/eval/*.json (re-rendered after each of them)."""
    import json

    files = sorted((run_dir / EVAL_DIR).glob("*.json")) if (run_dir / EVAL_DIR).is_dir() else []
    rows = []
    for path in files:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            rows.append((path.stem, "unreadable"))
            continue
        numbers = {k: record[k] for k in EVAL_NUMBERS if isinstance(record, dict) and isinstance(record.get(k),
                                                                                                 (int, float))}
        shown = ", ".join(f"{k} {_percent(v) if 'gain' not in k else _float(v)}" for k, v in numbers.items())
        rows.append((path.stem, shown or "(no headline number)"))
    if not rows:
        return ('<p class="note">None yet: `mocokit knn|linear|finetune|transfer RUN` write their results to '
                f'{_e(EVAL_DIR)}/ and refresh this page.</p>')
    return "<table>" + "".join(f'<tr><th>{_e(name)}</th><td>{_e(value)}</td></tr>' for name, value in rows) \
        + "</table>"


def render_report(run_dir: Path, metrics: Metrics, plots: list[Path]) -> str:
    """The report page for the run in `run_dir` with records `metrics`, embedding the given PNG files."""
    has_records = any(metrics.values())
    summary = summarize(metrics)
    config_text, config = _read_config(run_dir / CONFIG_FILE)
    name = run_dir.resolve().name
    facts = [f"config {config['name']}"] if isinstance(config, dict) and config.get("name") else []
    if summary.started is not None:
        facts.append(f"started {_local_time(summary.started)}")
    facts += [f"report written {_local_time(datetime.datetime.now().timestamp())}", str(run_dir)]
    meta = f'<p class="meta">{" · ".join(_e(fact) for fact in facts)}</p>'
    if has_records:
        badge_class, badge_text = _status(summary, finished=bool(metrics.get("final")))
        badge = f'<span class="badge {badge_class}">{_e(badge_text)}</span>'
        rows = "".join(f'<tr><th>{_e(label)}</th><td class="number">{_e(value)}</td></tr>'
                       for label, value in _final_numbers(summary))
        numbers = f"<table>{rows}</table>"
        time_spent = _time_section(summary)
        drawn = {path.name: path for path in plots}
        curves = "\n".join(_figure(drawn[n]) if n in drawn else
                           f'<h3>{_e(CAPTIONS[n][0])}</h3>\n<p class="note">{_e(MISSING_PLOT[n])}</p>'
                           for n in CAPTIONS)
    else:
        badge = '<span class="badge partial">no metrics yet</span>'
        numbers = f'<p class="note">No metrics yet: {_e(METRICS_FILE)} is missing or holds no records.</p>'
        curves = '<p class="note">No metrics yet, so no curves.</p>'
        time_spent = '<p class="note">No metrics yet.</p>'
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mocokit run {_e(name)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<h1>{_e(name)}{badge}</h1>
{meta}
<h2>Final numbers</h2>
{numbers}
<h2>Time</h2>
{time_spent}
<h2>Evaluations</h2>
{_evaluations_section(run_dir)}
<h2>Curves</h2>
{curves}
<h2>Run</h2>
{_run_section(metrics)}
<h2>Resolved config</h2>
{_config_section(config_text, config)}
</main>
</body>
</html>
"""


def write_report(run_dir: Path) -> Path:
    """Write `run_dir/plots/*.png` (see `write_plots`) and `run_dir/report.html`; return the report's path.

    Promises: the page references no external resource (images are data URIs, CSS is inline, no scripts);
    all text from the run folder is HTML-escaped; it works for an empty or missing metrics file ("no metrics
    yet"), for a run with a few steps and no epoch, and for a missing config.yaml. The file is replaced
    atomically, so a browser never reads a half-written report."""
    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir / METRICS_FILE, missing_ok=True)
    plots = draw_plots(metrics, run_dir / PLOTS_DIR)
    path = run_dir / REPORT_FILE
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(render_report(run_dir, metrics, plots), encoding="utf-8")
    partial.replace(path)
    return path
