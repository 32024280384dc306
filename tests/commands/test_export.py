"""`mocokit export` end to end on a tiny real run: each format, its JSON, and the refusals."""

import json

import torch

from mocokit.evaluation.pretrained import load_pretrained
from mocokit.export import load_moco_safetensors, read_safetensors


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_the_torchvision_export_and_its_printed_code_give_the_run_s_features(mocokit_cli, tiny_run, tmp_path, capsys):
    out = tmp_path / "encoder.safetensors"
    assert mocokit_cli("export", tiny_run, "--format", "torchvision", "--out", out, "--json") == 0
    result = last_json(capsys)
    pretrained = load_pretrained(tiny_run)
    assert result["out"] == str(out) and result["format"] == "torchvision" and result["step"] == pretrained.step == 2
    assert result["tensors"] == len(read_safetensors(out)[0]) and result["bytes"] == out.stat().st_size
    namespace: dict = {}
    exec(result["load_code"], namespace)  # builds mocokit.export.torchvision_resnet(...) and loads strictly
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(namespace["model"](x), pretrained.backbone(x), rtol=1e-5, atol=1e-5)


def test_the_moco_export_of_a_checkpoint_file_holds_the_whole_model(mocokit_cli, tiny_run, tmp_path, capsys):
    checkpoint = tiny_run / "checkpoints" / "last.pt"
    out = tmp_path / "moco.safetensors"
    assert mocokit_cli("export", checkpoint, "--format", "moco", "--out", out, "--json") == 0
    assert last_json(capsys)["source_checkpoint"] == str(checkpoint)
    model, _config = load_moco_safetensors(out)
    trained = load_pretrained(checkpoint).model.state_dict()
    assert int(model.queue.ptr) == int(trained["queue.ptr"]) != 0
    assert all(torch.equal(t, trained[name]) for name, t in model.state_dict().items())


def test_refusals_exit_2_with_a_message_and_write_nothing(mocokit_cli, tiny_run, tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    assert mocokit_cli("export", tiny_run, "--format", "timm", "--out", out) == 2  # width 0.125: no timm ResNet
    assert "--format torchvision" in capsys.readouterr().err and not out.exists()
    assert mocokit_cli("export", tmp_path / "no-run", "--format", "moco", "--out", out) == 2
    assert "no such run folder or checkpoint" in capsys.readouterr().err and not out.exists()
    out.write_bytes(b"keep")
    assert mocokit_cli("export", tiny_run, "--format", "moco", "--out", out) == 2
    assert "--force" in capsys.readouterr().err and out.read_bytes() == b"keep"
    assert mocokit_cli("export", tiny_run, "--format", "moco", "--out", out, "--force") == 0
    assert read_safetensors(out)[1]["export_format"] == "moco"


def test_onnx_through_the_command_line_and_detectron2_refused_for_the_cifar_stem(mocokit_cli, tiny_run, tmp_path,
                                                                                capsys):
    import onnxruntime

    out = tmp_path / "backbone.onnx"
    assert mocokit_cli("export", tiny_run, "--format", "onnx", "--out", out, "--json") == 0
    result = last_json(capsys)
    assert result["format"] == "onnx" and result["onnx_difference"] < 1e-4 and "onnxruntime" in result["load_code"]
    x = torch.randn(3, 3, 32, 32)
    features = onnxruntime.InferenceSession(str(out)).run(["features"], {"images": x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(features), load_pretrained(tiny_run).backbone(x), rtol=0,
                                   atol=1e-4)
    pkl = tmp_path / "r18.pkl"
    assert mocokit_cli("export", tiny_run, "--format", "detectron2", "--out", pkl) == 2
    error = capsys.readouterr().err.strip()
    assert "CIFAR stem" in error and "use --format torchvision or onnx" in error and not pkl.exists()
    assert len(error.splitlines()) == 1, error
