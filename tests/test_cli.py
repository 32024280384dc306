import subprocess
import sys

import pytest

from mocokit.cli import main
from mocokit.config.loader import preset_names


def test_presets_lists_every_preset_with_a_description(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == preset_names()
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["pretrain", "v2-cifar10", "train.epoch=5"], "unknown config key 'train.epoch'. Did you mean train.epochs"),
        (["pretrain", "nope"], "unknown preset 'nope'"),
        (["pretrain", "v2-cifar10", "optim.lr=-1"], "optim.lr must be > 0"),
        (["pretrain", "v2-cifar10", "train.batch_size=100"], "multiple of model.bn_splits"),
    ],
)
def test_bad_configs_exit_2_with_one_clear_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.startswith("mocokit: error:")


def test_help_of_the_command_and_subcommands(capsys):
    out = subprocess.run([sys.executable, "-m", "mocokit", "--help"], capture_output=True, text=True, check=True)
    assert "pretrain" in out.stdout and "presets" in out.stdout
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--help"])
    assert exit_info.value.code == 0
    assert "key=value" in capsys.readouterr().out
