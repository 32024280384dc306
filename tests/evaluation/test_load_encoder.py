"""The two-line Python API: `mocokit.load_encoder(RUN)` gives the run's backbone with its preprocessing,
`mocokit.load_run(RUN)` the whole run."""

import torch
from PIL import Image

import mocokit
from mocokit.data import get_recipe
from mocokit.evaluation.pretrained import load_pretrained
from mocokit.training.checkpoint import load_checkpoint


def test_load_encoder_gives_the_runs_backbone_with_its_preprocessing(resnet_run):
    encoder = mocokit.load_encoder(resnet_run)
    assert not encoder.training
    stored = load_checkpoint(resnet_run / "checkpoints" / "last.pt")["model"]
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(tensor, stored[f"encoder.backbone.{name}"]), name
    config = load_pretrained(resnet_run).config
    recipe = get_recipe(config.data.recipe)
    prep = encoder.preprocess
    assert (prep.image_size, prep.mean, prep.std) == (config.data.image_size, tuple(recipe.mean), tuple(recipe.std))
    image = Image.new("RGB", (40, 40), (200, 30, 90))
    pixels = prep(image)
    assert pixels.shape == (3, config.data.image_size, config.data.image_size)
    assert torch.allclose(pixels[:, 0, 0], (torch.tensor([200, 30, 90]) / 255 - torch.tensor(recipe.mean))
                          / torch.tensor(recipe.std))
    reference = load_pretrained(resnet_run).backbone.eval()
    with torch.no_grad():
        assert torch.equal(encoder(pixels[None]), reference(pixels[None]))


def test_load_run_gives_config_model_step_and_path(resnet_run):
    run = mocokit.load_run(resnet_run)
    assert run.checkpoint == resnet_run / "checkpoints" / "last.pt" and run.step > 0
    assert run.config.model.width == 0.125 and not run.model.training
