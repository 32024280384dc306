"""`mocokit knn RUN [key=value ...]`: weighted kNN top-1/top-5 of a pretrained encoder, features cached."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from mocokit.commands.common import (
    add_json_flag,
    add_protocol_argument,
    add_random_init_argument,
    add_run_arguments,
    compare_with_random_init,
    finish_evaluation,
    late_options,
    open_evaluation,
    open_random_init,
)


def run(args: argparse.Namespace) -> int:
    from mocokit.evaluation.knn_eval import knn_evaluation, pixel_knn_evaluation

    args = late_options(args)
    session = open_evaluation(args)
    baseline = open_random_init(args, session)
    result = knn_evaluation(session)
    print(f"kNN (k={result.k}, τ={result.temperature}; {result.bank_images} bank, {result.query_images} query "
          f"images): top-1 {result.top1:.4f}, top-5 {result.top5:.4f}"
          f" [{'cached features' if result.cached else 'features extracted'}, {result.seconds:.1f}s]")
    record = {"command": "knn", **session.describe(), **asdict(result)}
    if args.pixel_baseline:
        pixels = pixel_knn_evaluation(session)
        print(f"raw pixels (mean-centred, {session.encoder.config.data.image_size} px): top-1 {pixels.top1:.4f}, "
              f"top-5 {pixels.top5:.4f} ({100 * (result.top1 - pixels.top1):+.1f} points for pretraining)")
        record.update(pixel_top1=pixels.top1, pixel_top5=pixels.top5)
    compare_with_random_init(args, baseline, knn_evaluation, result, session, "knn", record)
    finish_evaluation(session, "knn", record, args.json)
    return 0


def add_options(parser: argparse.ArgumentParser) -> None:
    add_protocol_argument(parser, "none (knn.k=200, knn.temperature=0.1)")
    add_random_init_argument(parser)
    parser.add_argument("--pixel-baseline", action="store_true",
                        help="also the kNN on the mean-centred raw pixels of the same images (the baseline that "
                             "needs no training)")
    add_json_flag(parser)


def register(commands) -> None:
    parser = commands.add_parser(
        "knn", help="weighted kNN accuracy of a pretrained encoder",
        description="Weighted kNN (InstDisc) top-1/top-5: training features as the bank, test features as queries. "
                    "Features are cached in RUN/cache/ per checkpoint, data and transform, so a repeat is fast. "
                    "Keys: knn.k, knn.temperature, knn.bank_images, eval.test_images, eval.batch_size, eval.cache.",
    )
    add_run_arguments(parser, add_options)
    parser.set_defaults(handler=run)
