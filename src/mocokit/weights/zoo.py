"""The official MoCo checkpoints by name: `moco-v2-800ep-r50` is the file facebookresearch/moco publishes, downloaded
once into a cache and checked, usable wherever a weights file is (`mocokit import NAME`, `model.init=NAME`).

Addresses and linear-probe accuracies (ImageNet top-1, %, as published) were read from the READMEs of
facebookresearch/moco (README.md, "Models") and facebookresearch/moco-v3 (CONFIG.md). Checksums: facebookresearch/moco
publishes the first 8 hex digits of each file's MD5, which are checked; no SHA-256 is published for any of them, nor
any checksum for the MoCo v3 files, so the SHA-256 of the first download is recorded beside the file
(`<file>.sha256`) and every later use is checked against that record (trust on first use, said when it happens).
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mocokit.cache import CACHE_VARIABLE, cache_dir  # noqa: F401 (CACHE_VARIABLE: the zoo's users name it here)
from mocokit.files import atomic_output, write_text_atomically
from mocokit.weights.errors import WeightsError

_V1V2 = "https://dl.fbaipublicfiles.com/moco/moco_checkpoints"
_V3 = "https://dl.fbaipublicfiles.com/moco-v3"
_V1V2_README = "facebookresearch/moco README.md, Models"
_V3_README = "facebookresearch/moco-v3 CONFIG.md"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    url: str  # the official download address
    top1: float  # the published ImageNet linear-probe top-1 (%)
    description: str  # version, backbone, pretraining epochs
    source: str  # where the address and the accuracy were read
    md5_prefix: str | None = None  # published: the first hex digits of the file's MD5 (None: none published)
    sha256: str | None = None  # published SHA-256 (None for every entry so far: recorded at the first download)
    filename: str = ""  # the name in the cache; default: the official file's name, the last part of url

    def __post_init__(self) -> None:
        if not self.filename:
            object.__setattr__(self, "filename", self.url.rsplit("/", 1)[1])


ZOO: dict[str, ZooEntry] = {entry.name: entry for entry in [
    ZooEntry("moco-v1-200ep-r50", f"{_V1V2}/moco_v1_200ep/moco_v1_200ep_pretrain.pth.tar", 60.6,
             "MoCo v1, ResNet-50, 200 epochs", _V1V2_README, md5_prefix="b251726a"),
    ZooEntry("moco-v2-200ep-r50", f"{_V1V2}/moco_v2_200ep/moco_v2_200ep_pretrain.pth.tar", 67.7,
             "MoCo v2, ResNet-50, 200 epochs", _V1V2_README, md5_prefix="59fd9945"),
    ZooEntry("moco-v2-800ep-r50", f"{_V1V2}/moco_v2_800ep/moco_v2_800ep_pretrain.pth.tar", 71.1,
             "MoCo v2, ResNet-50, 800 epochs", _V1V2_README, md5_prefix="a04e12f8"),
    ZooEntry("moco-v3-r50-100ep", f"{_V3}/r-50-100ep/r-50-100ep.pth.tar", 68.9,
             "MoCo v3, ResNet-50, 100 epochs", _V3_README),
    ZooEntry("moco-v3-r50-300ep", f"{_V3}/r-50-300ep/r-50-300ep.pth.tar", 72.8,
             "MoCo v3, ResNet-50, 300 epochs", _V3_README),
    ZooEntry("moco-v3-r50-1000ep", f"{_V3}/r-50-1000ep/r-50-1000ep.pth.tar", 74.6,
             "MoCo v3, ResNet-50, 1000 epochs", _V3_README),
    ZooEntry("moco-v3-vit-s", f"{_V3}/vit-s-300ep/vit-s-300ep.pth.tar", 73.2,
             "MoCo v3, ViT-Small (12 heads), 300 epochs", _V3_README),
    ZooEntry("moco-v3-vit-b", f"{_V3}/vit-b-300ep/vit-b-300ep.pth.tar", 76.7,
             "MoCo v3, ViT-Base, 300 epochs", _V3_README),
]}


def looks_like_zoo_name(text: str) -> bool:
    """A bare word such as moco-v2-800ep-r50: no folder, no file suffix, and no such file here."""
    path = Path(text)
    return not path.exists() and path.name == text and not path.suffix and text.startswith("moco")


def download(url: str, destination: Path) -> None:
    """Fetch `url` into `destination` (torch.hub's downloader, with a progress bar)."""
    from torch.hub import download_url_to_file

    download_url_to_file(url, str(destination), progress=True)


def zoo_file(name: str, fetch: Callable[[str, Path], None] | None = None,
             say: Callable[[str], None] = print) -> Path:
    """The cached file of zoo entry `name`, downloaded on first use and checked: the published MD5 prefix and
    SHA-256 where there are any, else the SHA-256 recorded at the first download. WeightsError for an unknown name
    (with the closest names), a failed download, or a checksum that does not match (the file is then removed).
    fetch: the downloader (default `download`)."""
    entry = ZOO.get(name)
    if entry is None:
        close = difflib.get_close_matches(name, ZOO, n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise WeightsError(f"{name!r} is neither a file nor a model zoo name; {hint}`mocokit import --list` lists "
                           f"the names ({', '.join(ZOO)})")
    path = cache_dir() / entry.filename
    record = path.with_name(path.name + ".sha256")
    if path.is_file():
        recorded = record.read_text().strip() if record.is_file() else None
        _check(entry, path, expected_sha256=entry.sha256 or recorded, downloaded=False)
        return path
    say(f"downloading {entry.name} ({entry.description}) from {entry.url} into {path}")
    try:
        with atomic_output(path) as partial:
            (fetch or download)(entry.url, partial)
            sha256 = _check(entry, partial, expected_sha256=entry.sha256, downloaded=True)
    except WeightsError:
        raise
    except Exception as error:  # no network, an HTTP error, a full disk
        raise WeightsError(f"could not download {entry.name} from {entry.url} ({type(error).__name__}: "
                           f"{str(error)[:200]}); download it yourself and pass the file, or put it at {path}") \
            from None
    if entry.sha256 is None:
        write_text_atomically(record, sha256 + "\n")
        say(f"{entry.name}: no SHA-256 is published; recorded {sha256} in {record}, checked at every later "
            "use" + (f" (its published MD5 prefix {entry.md5_prefix} matched)" if entry.md5_prefix else ""))
    return path


def _check(entry: ZooEntry, path: Path, expected_sha256: str | None, downloaded: bool) -> str:
    """The file's SHA-256 (hex); WeightsError, with the file removed, when a checksum does not match."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)  # MD5: only to compare with the published
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha256.update(block)
            md5.update(block)
    problems = []
    if entry.md5_prefix and not md5.hexdigest().startswith(entry.md5_prefix):
        problems.append(f"MD5 {md5.hexdigest()[:8]}..., published {entry.md5_prefix}...")
    expected = (expected_sha256 or "").removeprefix("sha256:")
    if expected and sha256.hexdigest() != expected:
        problems.append(f"SHA-256 {sha256.hexdigest()[:12]}..., expected {expected[:12]}...")
    if problems:
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".sha256").unlink(missing_ok=True)
        what = "the download" if downloaded else "the cached file"
        raise WeightsError(f"{entry.name}: {what} {entry.filename} does not match ({'; '.join(problems)}); it was "
                           "removed, run the command again to download it anew")
    return f"sha256:{sha256.hexdigest()}"
