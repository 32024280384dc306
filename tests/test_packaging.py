"""pyproject.toml and the README against the code (issue 17, item 12)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_license_is_an_spdx_string_so_setuptools_does_not_warn():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "MIT"  # the table form is deprecated (setuptools >= 77 warns)
    (setuptools,) = [r for r in pyproject["build-system"]["requires"] if r.startswith("setuptools")]
    assert int(re.search(r">=(\d+)", setuptools).group(1)) >= 77  # the first setuptools that reads the string form


def test_the_readme_names_every_result_file_the_evaluation_commands_write():
    readme = (ROOT / "README.md").read_text()
    commands = ROOT / "src" / "mocokit" / "commands"
    names = set()
    for path in commands.glob("*.py"):
        for name in re.findall(r'finish_evaluation\(session, f?"([^"]+)"', path.read_text()):
            names |= {name.replace("{result.mode}", mode) for mode in ("fast", "full")}
    assert names == {"knn", "linear-fast", "linear-full", "finetune", "transfer"}
    for name in names:
        assert f"`{name}.json`" in readme, name
