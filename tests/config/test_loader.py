import pytest
from PIL import Image

from mocokit.config.loader import preset_names
from mocokit.errors import ConfigError
from mocokit.training.run_config import Config, config_to_yaml, load_config


def test_every_preset_loads_and_names_itself(tmp_path):
    assert {"v1-imagenet", "v2-imagenet", "v3-resnet50-imagenet", "v3-vit-small-imagenet", "v3-vit-base-imagenet",
            "v1-cifar10", "v2-cifar10", "v3-cifar10", "v3-vit-cifar10", "auto"} <= set(preset_names())
    images = tmp_path / "images"  # the `auto` preset derives its values from the images
    images.mkdir()
    for i in range(16):
        Image.new("RGB", (32, 32), (i, i, i)).save(images / f"{i}.png")
    for name in preset_names():
        cfg = load_config(name, [f"data.path={images}"] if name == "auto" else [])
        assert isinstance(cfg, Config) and cfg.name == name


def test_base_inheritance_and_overrides():
    cfg = load_config("v2-imagenet", overrides=["model.queue_size=1024", "model.temperature=0.5"])
    assert cfg.model.version == "v2" and cfg.model.momentum == 0.999  # from the base preset v1-imagenet
    assert cfg.model.queue_size == 1024 and cfg.model.temperature == 0.5


def test_override_values_are_parsed_and_type_checked():
    cfg = load_config("v2-cifar10", overrides=["model.hidden_dim=null", "model.width=1", "model.symmetric=false",
                                               "model.backbone_args={drop_path_rate: 0.1}"])
    assert cfg.model.hidden_dim is None and cfg.model.width == 1.0 and isinstance(cfg.model.width, float)
    assert cfg.model.symmetric is False and cfg.model.backbone_args == {"drop_path_rate": 0.1}


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.queue_sise=5", "unknown config key 'model.queue_sise'. Did you mean model.queue_size"),
        ("modle.dim=5", "unknown config key 'modle'"),
        ("model.queue_size=big", "model.queue_size must be int"),
        ("model.symmetric=1", "model.symmetric must be bool"),
        ("model.version=v4", "model.version must be 'v1' or 'v2' or 'v3'"),
        ("model.temperature=0", "temperature must be > 0"),
        ("model.momentum=1.5", "momentum must be in \\[0, 1\\]"),
        ("model.dim=2.5", "model.dim must be int"),
        ("model", "must look like section.key=value"),
    ],
)
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("v2-cifar10", overrides=[override])


def test_unknown_preset_suggests_close_names():
    with pytest.raises(ConfigError, match="Did you mean v2-cifar10"):
        load_config("v2-cifar")


def test_yaml_file_with_base_and_round_trip(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: v3-cifar10\nmodel:\n  temperature: 0.3\n")
    cfg = load_config(path)
    assert cfg.name == "mine" and cfg.model.version == "v3" and cfg.model.temperature == 0.3
    dumped = tmp_path / "resolved.yaml"
    dumped.write_text(config_to_yaml(cfg))
    assert load_config(dumped) == cfg


def test_invalid_yaml_and_non_mapping_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
