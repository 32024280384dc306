"""mocokit's layers: each module imports only from lower floors (or from its own unit), and `import mocokit`,
`mocokit --help` and `mocokit presets` import no heavy library.

The floors are written down here, once. A unit is a module or package (a tuple of names: several that count as one);
two units on one floor are side by side and do not import each other (the pretraining engine and the evaluation
neither know each other nor the export: what they share lives on a lower floor). Every import counts, at module
level or inside a function (a lazy import is still a dependency), and so do the names of a package's lazy
`__getattr__` (its `_LAZY` table). A violation is mended by moving the function down, not by an exemption here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "mocokit"

FLOORS: dict[int, list[str | tuple[str, ...]]] = {
    0: ["mocokit.errors", "mocokit._version"],  # exceptions several floors raise or catch; the version string
    1: [  # the bottom floor: the generic config loader, collectives, pure tensor functions
        "mocokit.config", "mocokit.distributed", "mocokit.losses", "mocokit.features", "mocokit.knn",
        "mocokit.files",  # outputs written whole or not at all
        "mocokit.cache",  # the cache folder (zoo weights, compiled kernels)
        "mocokit.health",  # label-free health metrics of features and embeddings
    ],
    2: ["mocokit.models", "mocokit.data"],
    3: ["mocokit.training", "mocokit.reporting",  # the training toolkit (with the run's Config); run reports
        "mocokit.weights"],  # foreign weights files (official MoCo, torchvision, timm) read and mapped onto MoCo
    4: ["mocokit.engine", "mocokit.evaluation", "mocokit.export"],  # pretraining, evaluation, hand-off
    5: ["mocokit.experiments"],  # the papers' experiments: pretraining runs, then evaluations
    6: [("mocokit.commands", "mocokit.cli", "mocokit.__main__", "mocokit")],  # the front: the command line, and
    # the package's lazy names (`mocokit.load_config`, ...); `mocokit` itself means the package's __init__ only
}
HEAVY = ("torch", "torchvision", "timm", "kornia", "matplotlib")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _unit(module: str) -> tuple[int, str] | None:
    """(floor, unit) of a module: the unit naming it or a package above it; the longest such name wins."""
    best = None
    for floor, units in FLOORS.items():
        for unit in units:
            for name in unit if isinstance(unit, tuple) else (unit,):
                covers = module == name or (name != "mocokit" and module.startswith(name + "."))
                if covers and (best is None or len(name) > best[2]):
                    best = (floor, unit if isinstance(unit, str) else unit[0], len(name))
    return None if best is None else best[:2]


def _imports(module: str, path: Path) -> list[tuple[int, str, bool]]:
    """(line, imported mocokit module, at module level) for every import in the file, and for the modules named
    by a `_LAZY` table (a package's lazy attributes)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:  # `from mocokit import distributed` imports the module mocokit.distributed
                target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                found.append((node.lineno, target, id(node) in top_level))
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_LAZY" for t in node.targets):
            assert isinstance(node.value, ast.Dict), f"{path}: _LAZY is not a literal dict"
            found += [(node.lineno, value.value, False) for value in node.value.values]
    return [(line, name, top) for line, name, top in found if name == "mocokit" or name.startswith("mocokit.")]


def test_every_module_is_on_a_floor():
    unassigned = [name for name in MODULES if _unit(name) is None]
    assert not unassigned, f"modules on no floor (add them to FLOORS in {__file__}): {unassigned}"


def test_no_module_imports_from_a_higher_floor_or_a_unit_beside_it():
    violations = []
    for module, path in MODULES.items():
        floor, unit = _unit(module)
        for line, target, _top in _imports(module, path):
            target_floor, target_unit = _unit(target)
            if target_unit != unit and target_floor >= floor:
                where = "a higher floor" if target_floor > floor else "beside it"
                violations.append(f"{path.relative_to(SRC)}:{line}: {module} (floor {floor}) imports {target} "
                                  f"(floor {target_floor}, {where})")
    assert not violations, "imports against the layers:\n" + "\n".join(violations)


def test_a_package_init_imports_at_module_level_nothing_above_its_lowest_module():
    """Importing a module runs its packages' __init__ first: so an __init__ imports, at module level, nothing
    above the lowest floor of the modules inside it (deferred imports, in functions, are free)."""
    violations = []
    for package, path in MODULES.items():
        if path.name != "__init__.py":
            continue
        lowest = min(_unit(name)[0] for name in MODULES if name == package or name.startswith(package + "."))
        for line, target, top in _imports(package, path):
            if top and _unit(target)[0] > lowest:
                violations.append(f"{path.relative_to(SRC)}:{line}: imports {target} (floor {_unit(target)[0]}) "
                                  f"but {package} holds a module of floor {lowest}")
    assert not violations, "\n".join(violations)


def test_the_check_sees_an_upward_import_and_a_sideways_one():
    assert _unit("mocokit.engine.monitor") == (4, "mocokit.engine")
    assert _unit("mocokit") == (6, "mocokit.commands") and _unit("mocokit.cli") == (6, "mocokit.commands")
    assert _unit("mocokit.config.loader") == (1, "mocokit.config")
    assert _unit("mocokit.newmodule") is None  # the root's name covers the root only
    imports = _imports("mocokit.training.fake", PACKAGE / "training" / "process.py")
    assert any(target == "mocokit.training.cpu_memory" for _line, target, _top in imports)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)


REPORT = f"import sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"


@pytest.mark.parametrize("code", [
    "import mocokit",
    "import mocokit.cli; mocokit.cli.build_parser()",
    "import contextlib, io, mocokit.cli\nwith contextlib.redirect_stdout(io.StringIO()): mocokit.cli.main(['presets'])",
])
def test_import_help_and_presets_import_no_heavy_library(code):
    result = _run(f"{code}\n{REPORT}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]", f"{code!r} imported {result.stdout}"


def test_the_package_names_are_there_when_used():
    result = _run("import mocokit; print(mocokit.__version__, mocokit.Config.__name__, mocokit.load_config.__name__, "
                  "mocokit.build_model.__name__, mocokit.MoCo.__name__, mocokit.ConfigError.__name__)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0.1.0", "Config", "load_config", "build_model", "MoCo", "ConfigError"]


def test_mocokit_help_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "mocokit", "--help"], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "pretrain" in result.stdout and "presets" in result.stdout
