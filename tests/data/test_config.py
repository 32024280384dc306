import pytest

from mocokit.data import DataConfig


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("image_size", 0),
        ("num_workers", -1),
        ("memory_budget_mb", -5),
        ("batched_source_size", 0),
        ("max_bad_fraction", 1.5),
        ("labels", "maybe"),
        ("augment", "gpu"),
        ("recipe", "v9"),
    ],
)
def test_invalid_values_name_the_key(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"data.{field}"):
        DataConfig(**{field: value})


def test_unknown_recipe_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="v2-small"):
        DataConfig(recipe="simclr")


def test_defaults_are_valid_and_per_image() -> None:
    cfg = DataConfig()
    assert cfg.augment == "per_image" and cfg.in_memory is None and cfg.recipe == "v2"


def test_config_module_imports_nothing_outside_mocokit_data() -> None:
    import ast
    from pathlib import Path

    import mocokit.data.config as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    mocokit_imports = [name for name in imported if name.startswith("mocokit")]
    assert all(name.startswith("mocokit.data") for name in mocokit_imports), mocokit_imports
