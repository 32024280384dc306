"""`import_weights`: a foreign weights file (the official MoCo code's, torchvision's, timm's) as a mocokit
checkpoint, which every evaluation command, `export` and `model.init` read like a pretraining run's.

The model is the one the file describes (`infer_model_settings`: backbone, version, head sizes, queue size, a ViT's
side, on the preset of that version) or the config given; the tensors go in strictly (`load_weights`). The checkpoint
is a `PretrainCheckpoint` at step 0 with no optimiser state (a new run builds its own), and carries `imported_from`:
the source file, its SHA-256, its layout and what of it was not used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mocokit.config.loader import to_tree
from mocokit.training.checkpoint import LAST, PretrainCheckpoint, save_checkpoint
from mocokit.training.initial import initial_model
from mocokit.training.run_config import Config, config_to_yaml, load_config
from mocokit.training.rundir import checkpoint_dir
from mocokit.weights import infer_model_settings, load_weights, read_weights
from mocokit.weights.load import LoadReport


@dataclass
class ImportResult:
    checkpoint: Path  # the mocokit checkpoint written
    source: Path  # the file read (a model zoo name: its cached file)
    run_dir: Path | None  # the run folder holding it (with config.yaml), or None when --out named a file
    config: Config
    layout: str  # the file's layout (one of LAYOUTS)
    sha256: str  # of the source file
    report: LoadReport
    config_from: str  # "inferred from the weights (<preset> + overrides)" or the config given


def import_weights(source: Path | str, out: Path | str, fmt: str = "auto", config: str | None = None,
                   overrides: list[str] | None = None, force: bool = False) -> ImportResult:
    """Write the weights of `source` (a file, or a model zoo name) as a mocokit checkpoint: `out` ending in .pt is
    that file; any other `out` is a run folder (out/checkpoints/last.pt and out/config.yaml). config: a preset or
    YAML the weights must fit (default: inferred from them); overrides: key=value on top. WeightsError (a
    ConfigError) naming the first tensor that does not fit; FileExistsError when `out` already holds a checkpoint
    and not `force`."""
    out = Path(out)
    run_dir = None if out.suffix == ".pt" else out
    target = out if run_dir is None else checkpoint_dir(run_dir) / LAST
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists; choose another --out or pass --force to overwrite it")
    weights = read_weights(source, fmt)
    if config is None:
        preset, inferred = infer_model_settings(weights)
        cfg = load_config(preset, [*inferred, *(overrides or [])])
        config_from = f"inferred from the weights: {preset} with {' '.join(inferred)}"
    else:
        cfg = load_config(config, list(overrides or []))
        config_from = str(config)
    model = initial_model(cfg)  # the parts the file lacks are those a run of cfg starts from
    report = load_weights(model, weights, dictionary=True)
    payload = PretrainCheckpoint(model=model.state_dict(), config=to_tree(cfg), step=0).to_payload()
    payload["imported_from"] = {"path": str(weights.path.resolve()), "sha256": weights.sha256,
                                "layout": weights.layout, "not_used": report.notes}
    save_checkpoint(target, payload)
    if run_dir is not None:
        (run_dir / "config.yaml").write_text(config_to_yaml(cfg))
    return ImportResult(target, weights.path, run_dir, cfg, weights.layout, weights.sha256, report, config_from)
