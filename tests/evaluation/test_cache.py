"""The feature cache: hit on the second call, missed when the checkpoint, the data or the subset changes."""

import os

import torch

from mocokit.evaluation.cache import FeatureCache
from mocokit.evaluation.knn_eval import knn_evaluation
from mocokit.evaluation.session import open_session
from mocokit.training.checkpoint import load_checkpoint, save_checkpoint

from .conftest import private_copy


def session_for(run, *overrides):
    return open_session(run, [*overrides], echo=lambda _m: None)


def test_second_call_reads_the_cache_and_a_rewritten_checkpoint_invalidates_it(resnet_run, tmp_path):
    run = private_copy(resnet_run, tmp_path / "run")  # other tests may have cached this run's features
    first = knn_evaluation(session_for(run, "knn.k=5"))
    entries = sorted((run / "cache").glob("features-*.pt"))
    assert not first.cached and len(entries) == 2  # bank and queries
    again = knn_evaluation(session_for(run, "knn.k=10"))  # another k: same features
    assert again.cached and sorted((run / "cache").glob("features-*.pt")) == entries
    assert (again.bank_images, again.query_images) == (first.bank_images, first.query_images)

    # A checkpoint written again (what every epoch end does) is another checkpoint: the cache must miss.
    checkpoint = run / "checkpoints" / "last.pt"
    payload = load_checkpoint(checkpoint)
    payload["model"] = {k: v + 1 if k.startswith("backbone.") and v.is_floating_point() else v
                        for k, v in payload["model"].items()}
    del payload["format"], payload["format_version"]
    save_checkpoint(checkpoint, payload)
    stat = checkpoint.stat()
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # even within the clock's resolution
    changed = knn_evaluation(session_for(run, "knn.k=5"))
    assert not changed.cached and len(list((run / "cache").glob("features-*.pt"))) == 4


def test_other_data_settings_and_subsets_get_their_own_entries(resnet_run, tmp_path):
    run = private_copy(resnet_run, tmp_path / "run")  # other tests may have cached this run's features
    session = session_for(run, "eval.test_images=9")
    knn_evaluation(session)
    knn_evaluation(session_for(run, "eval.test_images=12"))  # another query subset: the bank is shared
    knn_evaluation(session_for(run, "data.label_fraction=0.5", "eval.test_images=12"))  # another bank
    assert session.cache_hits == [False, False]
    assert len(list((run / "cache").glob("features-*.pt"))) == 4
    hit = session_for(run, "data.label_fraction=0.5", "eval.test_images=12")
    result = knn_evaluation(hit)
    assert result.cached and hit.cache_hits == [True, True] and result.bank_images == 30  # half of 3×20


def test_entries_are_plain_tensors_read_with_weights_only(tmp_path):
    cache = FeatureCache(tmp_path)
    features, labels = torch.randn(5, 3), torch.arange(5)
    cache.save("abc", features, labels)
    read = cache.load("abc")
    assert read is not None and torch.equal(read[0], features) and torch.equal(read[1], labels)
    cache.path("bad").write_bytes(b"not a torch file")
    assert cache.load("bad") is None and cache.load("missing") is None
