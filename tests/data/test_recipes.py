"""The recipes hold exactly the parameters of the reference (docs section 6)."""

import pytest

from mocokit.data.recipes import IMAGENET_MEAN, get_recipe, recipe_names


def test_v1_matches_the_reference() -> None:
    r = get_recipe("v1")
    assert r.view1 is r.view2
    v = r.view1
    assert v.crop_scale == (0.2, 1.0) and v.grayscale_p == 0.2 and v.grayscale_first
    assert v.jitter == (0.4, 0.4, 0.4, 0.4) and v.jitter_p == 1.0
    assert v.blur_p == 0 and v.solarize_p == 0 and v.flip_p == 0.5
    assert r.mean == IMAGENET_MEAN


def test_v2_matches_the_reference() -> None:
    r = get_recipe("v2")
    assert r.view1 is r.view2
    v = r.view1
    assert v.crop_scale == (0.2, 1.0) and v.grayscale_p == 0.2 and not v.grayscale_first
    assert v.jitter == (0.4, 0.4, 0.4, 0.1) and v.jitter_p == 0.8
    assert v.blur_p == 0.5 and v.blur_sigma == (0.1, 2.0) and v.solarize_p == 0 and v.flip_p == 0.5


def test_v3_has_two_different_views_matching_the_reference() -> None:
    r = get_recipe("v3")
    a, b = r.view1, r.view2
    assert a != b
    for v in (a, b):
        assert v.crop_scale == (0.08, 1.0) and v.jitter == (0.4, 0.4, 0.2, 0.1) and v.jitter_p == 0.8
        assert v.grayscale_p == 0.2 and not v.grayscale_first and v.flip_p == 0.5
    assert (a.blur_p, a.solarize_p) == (1.0, 0.0)
    assert (b.blur_p, b.solarize_p, b.solarize_threshold) == (0.1, 0.2, 128)
    assert get_recipe("v3-r50").view1.crop_scale == (0.2, 1.0)


@pytest.mark.parametrize("name", ["v1-small", "v2-small", "v3-small"])
def test_small_variants_drop_the_blur_only(name: str) -> None:
    small, full = get_recipe(name), get_recipe(name.removesuffix("-small") if name != "v3-small" else "v3")
    assert small.image_size == 32
    for s, f in ((small.view1, full.view1), (small.view2, full.view2)):
        assert s.blur_p == 0
        assert (s.crop_scale, s.jitter, s.jitter_p, s.grayscale_p, s.solarize_p) == (
            f.crop_scale,
            f.jitter,
            f.jitter_p,
            f.grayscale_p,
            f.solarize_p,
        )


@pytest.mark.parametrize(("size", "kernel"), [(224, 23), (96, 9), (64, 7)])
def test_blur_kernel_is_the_odd_size_nearest_ten_percent(size: int, kernel: int) -> None:
    assert get_recipe("v2").view1.blur_kernel_size(size) == kernel


def test_every_recipe_cites_a_source_and_unknown_names_list_valid_ones() -> None:
    for name in recipe_names():
        assert "arXiv" in get_recipe(name).source
    with pytest.raises(ValueError, match="v1, v2, v3"):
        get_recipe("byol")
