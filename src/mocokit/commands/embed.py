"""`mocokit embed RUN [key=value ...] --out FILE.npz [--plot FILE.png]`: features of a split, and a 2-D map."""

from __future__ import annotations

import argparse
from pathlib import Path

from mocokit.commands.common import add_json_flag, add_run_arguments, late_options, print_json


def run(args: argparse.Namespace) -> int:
    from mocokit.data import build_eval_dataset
    from mocokit.evaluation.embedding import embed_dataset, save_embeddings
    from mocokit.evaluation.embedding_plot import plot_feature_map
    from mocokit.evaluation.pretrained import load_pretrained
    from mocokit.evaluation.projection import project_2d, resolve_method
    from mocokit.export.files import check_writable
    from mocokit.training.runtime import resolve_device

    args = late_options(args)
    if args.out is None:
        args.command_parser.error("the following arguments are required: --out")
    # Everything that can be refused is refused before the features are computed.
    check_writable(args.out, args.force)
    method = None
    if args.plot is not None:
        check_writable(args.plot, args.force)
        method = resolve_method(args.method)
    pretrained = load_pretrained(args.run, args.overrides)
    cfg = pretrained.config
    dataset = build_eval_dataset(cfg.data, args.split)
    embeddings = embed_dataset(
        pretrained.backbone, dataset, resolve_device(cfg.train.device), max_images=args.max_images,
        seed=cfg.train.seed, batch_size=args.batch_size, num_workers=cfg.data.num_workers,
    )
    save_embeddings(embeddings, args.out)
    n, d = embeddings.features.shape
    unreadable = dataset.unreadable()
    skipped = f"; {len(unreadable)} unreadable image(s) left out: {', '.join(unreadable)}" if unreadable else ""
    print(f"wrote {args.out}: {n} × {d} features of {dataset.where}, with labels and paths{skipped}")
    if args.plot is not None:
        coords = project_2d(embeddings.features, method, seed=cfg.train.seed)
        title = f"{cfg.model.version} {cfg.model.backbone}, step {pretrained.step}: {method} of {n} {args.split} images"
        plot_feature_map(coords, embeddings.labels, list(embeddings.classes), args.plot, title)
        print(f"wrote {args.plot} ({method})")
    if args.json:
        print_json({
            "out": str(args.out), "images": n, "features": d, "split": args.split,
            "classes": len(embeddings.classes), "plot": None if args.plot is None else str(args.plot),
            "method": method, "step": pretrained.step, "source_checkpoint": str(pretrained.checkpoint),
        })
    return 0


def add_options(parser: argparse.ArgumentParser) -> None:
    from mocokit.evaluation.projection import METHODS

    # --out is checked in `run`: a required option here would be refused when written after the overrides.
    parser.add_argument("--out", type=Path, default=None, help="the .npz file to write (required)")
    parser.add_argument("--split", default="test", choices=("train", "test"), help="which split (default test)")
    parser.add_argument("--max-images", type=_positive_int, default=None,
                        help="a seeded random subset of this many images (default: all)")
    parser.add_argument("--batch-size", type=_positive_int, default=256, help="images per forward pass")
    parser.add_argument("--plot", type=Path, default=None, help="also write a 2-D map of the features (PNG)")
    parser.add_argument("--method", default="auto", choices=METHODS,
                        help="map method: auto (umap if installed, else tsne), tsne (scikit-learn), umap, pca")
    parser.add_argument("--force", action="store_true", help="overwrite --out / --plot if they exist")
    add_json_flag(parser)


def register(commands) -> None:
    parser = commands.add_parser(
        "embed", help="save the features of a split (.npz) and optionally a 2-D map",
        # written out: --out is required, but checked in `run` (see add_options), so argparse would show [--out OUT]
        usage="mocokit embed [-h] RUN [key=value ...] --out FILE.npz [--split {train,test}] [--max-images N] "
              "[--batch-size N] [--plot FILE.png] [--method {auto,tsne,umap,pca}] [--force] [--json]",
        description="Run the pretrained backbone (eval mode, evaluation transform) over a split and save features, "
                    "labels and file paths with np.savez; --plot draws a t-SNE/UMAP/PCA map coloured by class. "
                    "Overrides change the data (e.g. data.path=...), never the model. See docs/export.md.",
    )
    add_run_arguments(parser, add_options)
    parser.set_defaults(handler=run)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
