import pytest

from mocokit.data import DataError
from mocokit.data.layout import find_layout


def test_class_folders_give_sorted_classes_and_labels() -> None:
    files = ["dog/1.jpg", "cat/2.png", "cat/sub/3.jpg", "readme.md"]
    layout = find_layout(files, [], "here")["train"]
    assert layout.classes == ["cat", "dog"]
    assert list(zip(layout.paths, layout.labels)) == [
        ("cat/2.png", 0),
        ("cat/sub/3.jpg", 0),
        ("dog/1.jpg", 1),
    ]


def test_train_and_test_splits_inside_a_wrapper_folder() -> None:
    files = ["cifar/train/a/1.jpg", "cifar/train/b/2.jpg", "cifar/test/a/3.jpg", "cifar/test/b/4.jpg"]
    layouts = find_layout(files, [], "x")
    assert sorted(layouts) == ["test", "train"]
    assert layouts["test"].paths == ["cifar/test/a/3.jpg", "cifar/test/b/4.jpg"]
    assert layouts["train"].classes == ["a", "b"]


def test_val_counts_as_a_split() -> None:
    layouts = find_layout(["train/a/1.jpg", "val/a/2.jpg"], [], "x")
    assert sorted(layouts) == ["train", "val"]


def test_images_at_the_top_mean_unlabelled_any_depth() -> None:
    layout = find_layout(["1.jpg", "2021/05/2.png", "2022/3.jpg"], [], "x")["train"]
    assert layout.labels == [-1, -1, -1] and layout.classes == []


def test_labels_none_forces_unlabelled() -> None:
    layout = find_layout(["a/1.jpg", "b/2.jpg"], [], "x", labels="none")["train"]
    assert layout.labels == [-1, -1]


def test_empty_class_folder_is_an_error_that_names_it() -> None:
    with pytest.raises(DataError, match="'empty'.*remove"):
        find_layout(["a/1.jpg", "b/2.jpg"], ["a", "b", "empty"], "x")


def test_class_folder_with_only_non_images_is_empty() -> None:
    with pytest.raises(DataError, match="'docs'"):
        find_layout(["a/1.jpg", "docs/readme.txt"], [], "x")


def test_no_images_at_all_says_what_to_do() -> None:
    with pytest.raises(DataError, match="no images found in x"):
        find_layout(["notes.txt"], [], "x")


def test_labels_folders_with_loose_images_is_an_error() -> None:
    with pytest.raises(DataError, match="not in a class folder"):
        find_layout(["a/1.jpg", "2.jpg"], [], "x", labels="folders")


def test_a_wrapper_folder_is_kept_in_the_paths() -> None:
    layout = find_layout(["photos/a.jpg", "photos/b.jpg"], [], "x")["train"]
    assert layout.paths == ["photos/a.jpg", "photos/b.jpg"] and layout.labels == [-1, -1]
