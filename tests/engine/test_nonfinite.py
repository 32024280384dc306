"""NaN or infinite losses and gradients: `stop` names the first bad step and never checkpoints after it; `skip` leaves
the bad step out and goes on, unless the step already spoiled the model's buffers."""

import warnings
from contextlib import nullcontext

import pytest
import torch
from torch import nn

from mocokit.engine.epoch import EpochHooks, Schedule, SkippedStepWarning, train_one_epoch
from mocokit.engine.pretrain import pretrain
from mocokit.engine.step import StepRunner
from mocokit.errors import NonFiniteLoss


class Flaky(nn.Module):
    """A stand-in for MoCo: loss = sum(weight), so SGD at lr 0.1 lowers every weight by 0.1 per applied step. At the
    calls listed, the gradient (loss still finite), the loss, or a buffer become NaN."""

    def __init__(self, nan_grad=(), nan_loss=(), nan_buffer=()) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(4))
        self.register_buffer("running", torch.zeros(4))
        self.nan_grad, self.nan_loss, self.nan_buffer, self.calls = nan_grad, nan_loss, nan_buffer, 0

    def forward(self, view1, view2, momentum):
        self.calls += 1
        weight = self.weight * 1.0
        if self.calls in self.nan_grad:
            weight.register_hook(lambda grad: torch.full_like(grad, float("nan")))
        if self.calls in self.nan_buffer:
            self.running.fill_(float("nan"))
        loss = weight.sum() * view1.mean()
        if self.calls in self.nan_loss:
            loss = loss * float("nan")
        return {"loss": loss, "accuracy": torch.zeros(())}

    # MoCo's step protocol (models/moco.py): no dictionary to write
    needs_indices = False

    def end_step(self) -> None:
        pass

    def discard_step(self) -> None:
        pass


CONSTANT = Schedule(lr_at=lambda step: 0.1, momentum_at=lambda step: 0.9)


def run_epoch(model, steps=5, skip=False, checkpoint_every=1, scaler=None):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    runner = StepRunner(model, optimizer, torch.device("cpu"), nullcontext, scaler=scaler, skip_nonfinite=skip)
    batch = ((torch.ones(2, 3), torch.ones(2, 3)), torch.zeros(2), torch.arange(2))
    checkpoints = []
    result = train_one_epoch(runner, [batch] * steps, 0, CONSTANT,
                             EpochHooks(log_every=100, checkpoint_every=checkpoint_every,
                                        on_checkpoint=checkpoints.append))
    return result, checkpoints


@pytest.mark.parametrize("bad", ["nan_grad", "nan_loss"])
def test_stop_names_the_first_bad_step_and_never_checkpoints_after_it(bad):
    with pytest.raises(NonFiniteLoss, match=r"NaN or infinite at step 3; training stopped"):
        run_epoch(Flaky(**{bad: (3,)}))
    with pytest.raises(NonFiniteLoss, match="at step 3;"):  # no checkpoints: still the first bad step, not a later
        run_epoch(Flaky(**{bad: (3,)}), checkpoint_every=0)


def test_stop_keeps_the_checkpoints_before_the_bad_step():
    saved = []
    model = Flaky(nan_grad=(3,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    runner = StepRunner(model, optimizer, torch.device("cpu"), nullcontext)
    batch = ((torch.ones(2, 3), torch.ones(2, 3)), torch.zeros(2), torch.arange(2))
    with pytest.raises(NonFiniteLoss):
        train_one_epoch(runner, [batch] * 5, 0, CONSTANT,
                        EpochHooks(log_every=100, checkpoint_every=1,
                                   on_checkpoint=lambda step: saved.append((step, model.weight.detach().clone()))))
    assert [step for step, _ in saved] == [1, 2]
    assert all(torch.isfinite(weight).all() for _, weight in saved)


@pytest.mark.parametrize("bad", ["nan_grad", "nan_loss"])
def test_skip_leaves_the_bad_step_out_and_goes_on(bad):
    model = Flaky(**{bad: (3,)})
    with pytest.warns(SkippedStepWarning, match=r"^step 3: the loss or the gradients were NaN"):
        result, checkpoints = run_epoch(model, steps=5, skip=True)
    assert result.steps == 5 and result.skipped == 1 and checkpoints == [1, 2, 3, 4, 5]
    torch.testing.assert_close(model.weight.detach(), torch.full((4,), 1.0 - 4 * 0.1))  # 4 of 5 updates applied
    # losses of the applied steps only: 4·w before each of them, w = 1.0, 0.9, 0.8 (step 3 skipped), 0.7
    assert result.loss_sum == pytest.approx(4 * (1.0 + 0.9 + 0.8 + 0.7))


def test_skip_works_with_a_loss_scaler():
    model = Flaky(nan_loss=(2,))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    with pytest.warns(SkippedStepWarning, match="step 2"):
        result, _ = run_epoch(model, steps=4, skip=True, scaler=scaler)
    assert result.skipped == 1 and scaler.get_scale() < 2.0**4  # the scaler saw the infinities and backed off
    torch.testing.assert_close(model.weight.detach(), torch.full((4,), 0.7))


def test_skip_still_stops_when_the_bad_step_spoiled_the_buffers():
    model = Flaky(nan_loss=(2,), nan_buffer=(2,))
    with pytest.raises(NonFiniteLoss, match=r"step 2: .*skipped .*buffers already hold NaN .*\(running\)"):
        run_epoch(model, steps=4, skip=True)


def test_no_skipped_steps_and_no_warning_when_all_is_finite():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result, _ = run_epoch(Flaky(), steps=3, skip=True)
    assert result.skipped == 0


def test_a_diverging_run_in_skip_mode_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tiny_images, tmp_path):
    from mocokit.training.checkpoint import load_checkpoint
    from mocokit.training.run_config import load_config

    cfg = load_config("v2-cifar10", [
        "model.width=0.125", "model.queue_size=32", "model.bn_splits=2", "train.batch_size=16", "train.epochs=1",
        "train.threads=1", "data.num_workers=0", "run.tensorboard=false", "run.progress=false",
        "monitor.knn_every_epochs=0", f"data.path={tiny_images}", f"run.dir={tmp_path / 'run'}",
        "optim.lr=1e30", "optim.schedule=constant", "run.checkpoint_every_steps=1", "train.on_nonfinite=skip",
    ])
    with pytest.raises(NonFiniteLoss, match=r"step (\d+): .*skipped.*buffers already hold NaN") as error:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pretrain(cfg, echo=lambda _m: None)
    bad_step = int(str(error.value).split("step ")[1].split(":")[0])
    payload = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert payload["step"] == bad_step - 1
    assert all(torch.isfinite(t).all() for t in payload["model"].values() if t.is_floating_point())
