"""`mocokit config` (issue 17, item 9): the resolved config with its derived values, and the list of keys."""

import yaml

from mocokit.cli import main
from mocokit.training.run_config import config_to_yaml, load_config


def test_config_prints_the_resolved_yaml_and_the_derived_values(tmp_path, capsys):
    for c in range(2):
        (tmp_path / "train" / f"c{c}").mkdir(parents=True)
        for n in range(10):
            (tmp_path / "train" / f"c{c}" / f"{n}.png").write_bytes(b"")  # counted, never decoded
    assert main(["config", "v2-cifar10", "train.batch_size=8", f"data.path={tmp_path}", "model.queue_size=40"]) == 0
    out = capsys.readouterr().out
    tree = yaml.safe_load(out)  # the derived values are YAML comments: the output loads as the config
    assert tree["train"]["batch_size"] == 8 and tree["model"]["queue_size"] == 40
    expected = load_config("v2-cifar10", ["train.batch_size=8", f"data.path={tmp_path}", "model.queue_size=40"])
    assert tree == yaml.safe_load(config_to_yaml(expected))
    assert "learning rate 0.0009375 (optim.lr 0.03 scaled for the global batch 8)" in out
    assert "steps per epoch 2 (20 images / batch 8" in out
    assert "K (model.queue_size) 40, N (images) 20 = 2.00 × N" in out


def test_config_says_when_steps_per_epoch_are_not_counted(capsys):
    assert main(["config", "v2-cifar10"]) == 0  # data.path: cifar10, a name, not a folder
    assert "steps per epoch: not counted" in capsys.readouterr().out


def test_config_keys_lists_every_key_with_type_default_and_help(capsys):
    assert main(["config", "--keys"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert {"train.epochs", "optim.lr", "data.path", "model.queue_size", "resume"} <= set(rows)
    assert "int" in rows["train.epochs"].split()[1]
    assert "end early after this global step" in rows["train.stop_at_step"]
    assert "ViT: input side in pixels" in rows["model.image_size"]
