"""Reading a dataset's layout from the relative paths of its files: splits, classes, labels.

Works on plain path strings, so folders and archives share one set of rules:
- a single top-level folder that wraps everything (`cifar10/...` in an archive) is looked through;
- top-level folders named `train` and `test` or `val` are splits; otherwise the whole tree is the one split `train`;
- inside a split, labels come from class folders (`<class>/<any depth>/<img>`, ImageFolder semantics) when no image
  sits directly at the split's top (labels="auto"), and images are unlabelled (label -1) otherwise or with "none".
"""

from __future__ import annotations

from dataclasses import dataclass

from mocokit.data.errors import DataError
from mocokit.data.imagefile import IMAGE_EXTENSIONS, is_image_name

SPLIT_NAMES = ("train", "val", "test")
UNLABELLED = -1


@dataclass(frozen=True)
class SplitLayout:
    """The images of one split: relative paths (sorted), their labels (-1: unlabelled) and the class names."""

    paths: list[str]
    labels: list[int]
    classes: list[str]


def find_layout(
    files: list[str], dirs: list[str], where: str, labels: str = "auto"
) -> dict[str, SplitLayout]:
    """Split name -> layout, from every file path and folder path (relative, '/'-separated) of a dataset.

    Non-image files are ignored. Raises DataError, naming `where`, for a dataset with no images or a class folder
    with no images.
    """
    images = sorted(path for path in files if is_image_name(path))
    if not images:
        raise DataError(
            f"no images found in {where}. Put images there (suffixes: {' '.join(IMAGE_EXTENSIONS)}), in class "
            "folders (<class>/<image>) or in train/ and test/ splits, or point data.path elsewhere."
        )
    dirs = sorted(set(dirs) | {parent for path in files for parent in _parents(path)})
    prefix = _wrapper_prefix(images, dirs)
    images = [path[len(prefix) :] for path in images]
    dirs = [d[len(prefix) :] for d in dirs if d.startswith(prefix) and len(d) > len(prefix)]

    tops = {path.split("/", 1)[0] for path in images if "/" in path}
    has_splits = "train" in tops and bool({"val", "test"} & tops)
    if not has_splits:
        layout = _split_layout(images, dirs, f"{where}/{prefix}".rstrip("/"), labels)
        return {"train": SplitLayout([prefix + p for p in layout.paths], layout.labels, layout.classes)}
    layouts = {}
    for split in SPLIT_NAMES:
        head = split + "/"
        inside = [path[len(head) :] for path in images if path.startswith(head)]
        if inside:
            sub_dirs = [d[len(head) :] for d in dirs if d.startswith(head)]
            layout = _split_layout(inside, sub_dirs, f"{where}/{prefix}{split}", labels)
            layouts[split] = SplitLayout(
                [prefix + head + p for p in layout.paths], layout.labels, layout.classes
            )
    return layouts


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _wrapper_prefix(images: list[str], dirs: list[str]) -> str:
    """The path of folders that wrap every image with nothing beside them ('' if none), ending in '/'."""
    prefix = ""
    while True:
        rest = [path[len(prefix) :] for path in images]
        if not all("/" in path for path in rest):
            return prefix
        rest += [d[len(prefix) :] for d in dirs if d.startswith(prefix) and len(d) > len(prefix)]
        firsts = {path.split("/", 1)[0] for path in rest} - {""}
        firsts = {name for name in firsts if not name.startswith(".")}
        if len(firsts) != 1:
            return prefix
        (first,) = firsts
        if first in SPLIT_NAMES:
            return prefix
        prefix += first + "/"


def _split_layout(images: list[str], dirs: list[str], where: str, labels: str) -> SplitLayout:
    # Prefix paths relative to the split's top; ImageFolder semantics when every image is inside a class folder.
    at_top = [path for path in images if "/" not in path]
    use_folders = labels == "folders" or (labels == "auto" and not at_top)
    if not use_folders:
        return SplitLayout(images, [UNLABELLED] * len(images), [])
    if at_top:
        raise DataError(
            f"data.labels=folders but {len(at_top)} image(s) in {where} are not in a class folder "
            f"(e.g. {at_top[0]!r}). Move them into <class>/ folders, or set data.labels=none or auto."
        )
    classes = sorted({d.split("/", 1)[0] for d in dirs if not d.split("/", 1)[0].startswith(".")})
    counts = dict.fromkeys(classes, 0)
    for path in images:
        counts[path.split("/", 1)[0]] += 1
    empty = [name for name, count in counts.items() if count == 0]
    if empty:
        raise DataError(
            f"class folder(s) {', '.join(repr(e) for e in empty)} in {where} hold no images. Add images to them "
            f"(suffixes: {' '.join(IMAGE_EXTENSIONS)}) or remove them: an empty class cannot be learnt or evaluated."
        )
    index = {name: i for i, name in enumerate(classes)}
    return SplitLayout(images, [index[path.split("/", 1)[0]] for path in images], classes)
