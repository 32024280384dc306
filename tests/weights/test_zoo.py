"""Model zoo names: a local file stands in for the official download (a file:// address read by the real
downloader, torch.hub's); no network is used. Cache hit, checksum mismatches, unknown names, model.init=NAME."""

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch
import torchvision

from mocokit.cli import main
from mocokit.engine.initial_weights import load_initial_weights
from mocokit.evaluation.pretrained import load_pretrained
from mocokit.export.importer import import_weights
from mocokit.models import build_model
from mocokit.training.run_config import load_config
from mocokit.weights import WeightsError, zoo

from .foreign import OfficialV1V2, save_official, v1v2_encoder

NAME = "moco-v2-800ep-r50"


def serve(tmp_path, monkeypatch, write) -> Path:
    """write(path) makes the file that stands in for the download; the zoo entry then points at it, with its real
    MD5 prefix, and the cache is tmp_path/cache."""
    (tmp_path / "served").mkdir()
    source = tmp_path / "served" / "moco_v2_800ep_pretrain.pth.tar"
    write(source)
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    monkeypatch.setitem(zoo.ZOO, NAME, dataclasses.replace(zoo.ZOO[NAME], url=source.as_uri(), md5_prefix=md5[:8]))
    monkeypatch.setenv(zoo.CACHE_VARIABLE, str(tmp_path / "cache"))
    return source


@pytest.fixture
def official(tmp_path, monkeypatch):
    """(an official v2 model, the file served for moco-v2-800ep-r50)."""
    model = OfficialV1V2(lambda: v1v2_encoder(torchvision.models.resnet18(num_classes=128), mlp=True), 128, 64)
    return model, serve(tmp_path, monkeypatch, lambda path: save_official(path, model, "resnet18"))


@pytest.fixture
def small(tmp_path, monkeypatch):
    """A small file served for moco-v2-800ep-r50 (the checksum tests need no real weights)."""
    return serve(tmp_path, monkeypatch, lambda path: torch.save({"state_dict": {"w": torch.arange(10.0)}}, path))


@torch.no_grad()
def test_a_name_is_downloaded_once_checked_recorded_and_then_read_from_the_cache(tmp_path, official, monkeypatch,
                                                                                 capsys):
    model, source = official
    result = import_weights(NAME, tmp_path / "run")
    cached = tmp_path / "cache" / "moco_v2_800ep_pretrain.pth.tar"
    assert result.source == cached and cached.read_bytes() == source.read_bytes()
    sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
    assert (tmp_path / "cache" / "moco_v2_800ep_pretrain.pth.tar.sha256").read_text() == f"sha256:{sha256}\n"
    said = capsys.readouterr().out
    assert "downloading moco-v2-800ep-r50" in said and "no SHA-256 is published" in said and "MD5 prefix" in said
    images = torch.randn(2, 3, 32, 32)
    trunk = model.encoder_q.eval()
    trunk.fc = torch.nn.Identity()
    imported = load_pretrained(tmp_path / "run", say=lambda _m: None).model
    torch.testing.assert_close(imported.backbone(images), trunk(images), rtol=0, atol=0)

    # a cache hit: the address now leads nowhere, and nothing is downloaded
    monkeypatch.setitem(zoo.ZOO, NAME, dataclasses.replace(zoo.ZOO[NAME], url=(tmp_path / "gone").as_uri()))
    cfg = load_config("v2-imagenet", ["model.backbone=resnet18", "model.queue_size=64"])
    fresh = build_model(cfg)
    init = load_initial_weights(fresh, NAME)  # model.init=NAME
    assert init.sha256 == f"sha256:{sha256}"  # recorded in the run's config.yaml
    assert (init.given, init.path) == (NAME, cached)  # the name and the cached file it stands for
    assert init.yaml_comment().startswith(f"# model.init: {NAME} = {cached} (sha256:{sha256}): ")
    assert init.record(None)["given"] == NAME and init.record(None)["path"] == str(cached)
    assert "downloading" not in capsys.readouterr().out
    torch.testing.assert_close(fresh.eval().backbone(images), trunk(images), rtol=0, atol=0)


def test_a_download_that_does_not_match_the_published_md5_is_refused_and_not_kept(tmp_path, small, monkeypatch):
    monkeypatch.setitem(zoo.ZOO, NAME, dataclasses.replace(zoo.ZOO[NAME], md5_prefix="00000000"))
    with pytest.raises(WeightsError, match=r"moco-v2-800ep-r50: the download moco_v2_800ep_pretrain\.pth\.tar does "
                                           r"not match \(MD5 [0-9a-f]{8}\.\.\., published 00000000\.\.\.\); it was "
                                           r"removed"):
        import_weights(NAME, tmp_path / "run")
    assert not list((tmp_path / "cache").iterdir()) and not (tmp_path / "run").exists()


def test_a_cached_file_changed_since_its_recorded_sha256_is_refused_and_removed(tmp_path, small, monkeypatch):
    monkeypatch.setitem(zoo.ZOO, NAME, dataclasses.replace(zoo.ZOO[NAME], md5_prefix=None))  # only the record
    cached = zoo.zoo_file(NAME, say=lambda _m: None)
    content = cached.read_bytes()
    cached.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))  # one bit changed
    with pytest.raises(WeightsError, match=r"the cached file .* does not match \(SHA-256 .*\); it was removed, run "
                                           r"the command again to download it anew"):
        zoo.zoo_file(NAME, say=lambda _m: None)
    assert not list((tmp_path / "cache").iterdir())
    assert zoo.zoo_file(NAME, say=lambda _m: None) == cached  # downloaded anew


def test_a_published_sha256_is_checked_and_a_failed_download_leaves_nothing(tmp_path, small, monkeypatch):
    monkeypatch.setitem(zoo.ZOO, NAME, dataclasses.replace(zoo.ZOO[NAME], sha256="ab" * 32))
    with pytest.raises(WeightsError, match=r"SHA-256 [0-9a-f]{12}\.\.\., expected abababababab\.\.\."):
        zoo.zoo_file(NAME, say=lambda _m: None)
    monkeypatch.setitem(zoo.ZOO, NAME, dataclasses.replace(zoo.ZOO[NAME], url=(tmp_path / "gone").as_uri()))
    with pytest.raises(WeightsError, match=r"could not download moco-v2-800ep-r50 from file://.*; download it "
                                           r"yourself and pass the file, or put it at .*cache"):
        zoo.zoo_file(NAME, say=lambda _m: None)
    assert not list((tmp_path / "cache").iterdir())


def test_an_unknown_name_suggests_the_closest_and_a_path_stays_a_path(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.CACHE_VARIABLE, str(tmp_path / "cache"))
    with pytest.raises(WeightsError, match=r"'moco-v2-800-r50' is neither a file nor a model zoo name; did you mean "
                                           r"moco-v2-800ep-r50"):
        import_weights("moco-v2-800-r50", tmp_path / "run")
    with pytest.raises(WeightsError, match=r"weights file .*moco_v2\.pth\.tar does not exist"):
        import_weights(tmp_path / "moco_v2.pth.tar", tmp_path / "run")
    assert not (tmp_path / "cache").exists()


def test_the_list_names_every_entry_with_its_accuracy(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(zoo.CACHE_VARIABLE, str(tmp_path))
    (tmp_path / "vit-b-300ep.pth.tar").write_bytes(b"x")
    assert main(["import", "--list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = {row["name"]: row for row in listed["zoo"]}
    assert {"moco-v1-200ep-r50", "moco-v2-200ep-r50", "moco-v2-800ep-r50", "moco-v3-r50-100ep", "moco-v3-r50-300ep",
            "moco-v3-r50-1000ep", "moco-v3-vit-s", "moco-v3-vit-b"} == set(rows)
    assert (rows["moco-v2-800ep-r50"]["top1"], rows["moco-v3-vit-b"]["top1"]) == (71.1, 76.7)
    assert rows["moco-v3-vit-b"]["cached"] and not rows["moco-v3-vit-s"]["cached"]
    assert main(["import", "--out", str(tmp_path / "x")]) == 2  # neither a file nor --list
