"""kNN evaluation of an encoder: bank = labelled training features, queries = test features, both from the cache
when present; the classifier itself is the pure `knn_accuracy`."""

from __future__ import annotations

import time
from dataclasses import dataclass

from mocokit.evaluation.session import EvalSession
from mocokit.features import pixel_features
from mocokit.knn import KnnScore, centred_knn_accuracy, knn_accuracy


@dataclass
class KnnResult:
    top1: float
    top5: float
    k: int
    temperature: float
    bank_images: int
    query_images: int
    cached: bool  # both feature sets came from the cache
    seconds: float


def knn_evaluation(session: EvalSession) -> KnnResult:
    started = time.perf_counter()
    cfg = session.config.knn
    bank_split = session.train_split(max_images=cfg.bank_images)
    query_split = session.test_split()
    hits_before = len(session.cache_hits)
    bank, bank_labels = session.features(bank_split)
    queries, query_labels = session.features(query_split)
    top1, top5 = knn_accuracy(bank, bank_labels, queries, query_labels, len(bank_split.classes), cfg.k,
                              cfg.temperature)
    return KnnResult(top1, top5, cfg.k, cfg.temperature, len(bank_split), len(query_split),
                     all(session.cache_hits[hits_before:]), time.perf_counter() - started)


def pixel_knn_evaluation(session: EvalSession) -> KnnScore:
    """The same kNN (same bank and query images, k and τ) on the mean-centred raw pixels at the run's image size,
    through the evaluation transform: the baseline that needs no training."""
    cfg = session.config.knn
    bank_split = session.train_split(max_images=cfg.bank_images)
    bank, bank_labels = pixel_features(session.loader(bank_split, session.config.eval.batch_size))
    queries, query_labels = pixel_features(session.loader(session.test_split(), session.config.eval.batch_size))
    return centred_knn_accuracy(bank, bank_labels, queries, query_labels, len(bank_split.classes), cfg.k,
                                cfg.temperature)
