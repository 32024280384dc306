"""`pretrain(cfg)`: a full MoCo pretraining run into a run folder, resumable at any checkpoint.

The run folder holds config.yaml (the resolved config), checkpoints/ (last.pt, and epoch_NNNN.pt copies when
run.keep_every_epochs is set), metrics.jsonl, tensorboard/, and at the end plots/ and report.html.
"""

from __future__ import annotations

import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from mocokit import data as mdata
from mocokit import distributed
from mocokit.config import Config, ConfigError, config_to_yaml
from mocokit.config.loader import to_tree
from mocokit.data.subset import seeded_subset
from mocokit.engine.checkpoint import (
    LAST,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from mocokit.engine.loop import NonFiniteLoss, StepRunner, train_one_epoch, watched_parameters
from mocokit.engine.monitor import KnnMonitor
from mocokit.engine.optim import build_optimizer, scaled_learning_rate
from mocokit.engine.rundir import checkpoint_dir, resolve_run_dir, resume_checkpoint
from mocokit.engine.runtime import autocast_factory, configure_runtime, needs_grad_scaler, resolve_precision
from mocokit.engine.sampling import EpochSampler, SeededSamples
from mocokit.engine.schedules import learning_rate_at, momentum_at
from mocokit.models import build_model
from mocokit.reporting import MetricsWriter, write_report


@dataclass
class PretrainResult:
    run_dir: Path
    epochs_done: int
    steps_done: int
    completed: bool  # all epochs ran (False: stopped early by train.stop_at_step)
    knn_top1: float | None
    knn_top5: float | None
    baseline_top1: float | None  # the same network at random initialisation
    baseline_top5: float | None
    minutes: float


def pretrain(cfg: Config, echo: Callable[[str], None] = print) -> PretrainResult:
    started = time.perf_counter()
    main = distributed.is_main_process()
    say = echo if main else (lambda _message: None)
    device = configure_runtime(cfg.train)
    world = distributed.world_size()
    if cfg.train.batch_size % world:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} must be divisible by the {world} processes")
    local_batch = cfg.train.batch_size // world

    run_dir = resolve_run_dir(cfg.run.dir, cfg.name)
    resume_from = resume_checkpoint(run_dir, cfg.resume)
    payload = load_checkpoint(resume_from) if resume_from else None
    if payload is not None:
        _check_same_model(payload, cfg, resume_from)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(config_to_yaml(cfg))

    # ---- data: the order of samples and their augmentations are functions of the seed (exact resume)
    train_set = seeded_subset(mdata.build_pretrain_dataset(cfg.data, "train"), cfg.data.max_images, cfg.train.seed)
    mdata.check_batch_fits(train_set, cfg.train.batch_size)
    if cfg.model.uses_queue and cfg.model.queue_size >= len(train_set):
        warnings.warn(
            f"model.queue_size={cfg.model.queue_size} is not smaller than the dataset ({len(train_set)} images): "
            "the queue will hold stale keys of the very image being queried (moco #146). Use a smaller queue.",
            stacklevel=2,
        )
    sampler = EpochSampler(len(train_set), local_batch, cfg.train.seed, distributed.rank(), world)
    loader = DataLoader(
        SeededSamples(train_set, cfg.train.seed),
        batch_size=local_batch,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=cfg.data.num_workers > 0,
        generator=torch.Generator().manual_seed(cfg.train.seed),  # keeps the loader off the global RNG
    )
    steps_per_epoch = sampler.batches_per_epoch
    total_steps = steps_per_epoch * cfg.train.epochs
    batch_augment = mdata.build_batch_augment(cfg.data, device) if cfg.data.augment == "batched" else None

    # ---- model and optimisation
    model = build_model(cfg).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    peak_lr = scaled_learning_rate(cfg.optim, cfg.train.batch_size)
    optimizer = build_optimizer(model, cfg.optim, peak_lr)
    dtype = resolve_precision(cfg.train.precision, device)
    scaler = torch.amp.GradScaler(device.type) if needs_grad_scaler(dtype) else None
    step_model = torch.compile(model) if cfg.train.compile else model
    autocast = autocast_factory(device, dtype)
    run_step = StepRunner(step_model, optimizer, device, autocast, scaler, cfg.train.channels_last,
                          cfg.optim.grad_clip, batch_augment, watched_parameters(model))

    steps_done = epochs_done = batch_in_epoch = 0
    baseline: tuple[float, float] | None = None
    if payload is not None:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        if scaler is not None and payload.get("scaler"):
            scaler.load_state_dict(payload["scaler"])
        steps_done, epochs_done = payload["step"], payload["epoch"]
        batch_in_epoch = steps_done - epochs_done * steps_per_epoch
        if not 0 <= batch_in_epoch <= steps_per_epoch:
            raise ConfigError(
                f"{resume_from} was written with {payload['steps_per_epoch']} steps per epoch and this run has "
                f"{steps_per_epoch}: resume with the same dataset and train.batch_size"
            )
        baseline = tuple(payload["baseline"]) if payload.get("baseline") else None
        say(f"resuming {run_dir} from {resume_from}: epoch {epochs_done}, step {steps_done}")

    say(f"run folder: {run_dir}")
    say(f"MoCo {cfg.model.version}, {cfg.model.backbone}, {len(train_set)} images, {steps_per_epoch} steps/epoch, "
        f"batch {cfg.train.batch_size} ({world} process{'es' if world > 1 else ''}), device {device}, "
        f"precision {dtype or torch.float32}")
    say(f"learning rate {peak_lr:.6g} = base {cfg.optim.lr:g}"
        + (f" x batch {cfg.train.batch_size} / 256" if cfg.optim.scale_lr else " (not scaled)"))

    monitor = _build_monitor(cfg, device, autocast, say) if cfg.monitor.knn_every_epochs else None
    metrics = MetricsWriter(run_dir, tensorboard=cfg.run.tensorboard) if main else None
    log = metrics.log if metrics is not None else (lambda _record: None)
    if monitor is not None and cfg.monitor.knn_baseline and baseline is None and steps_done == 0:
        baseline = monitor.evaluate(model.backbone)
        say(f"kNN at random initialisation: top-1 {baseline[0]:.4f}, top-5 {baseline[1]:.4f}")
    if baseline is not None:
        log({"kind": "baseline", "step": 0, "knn_top1": baseline[0], "knn_top5": baseline[1], "time": time.time()})

    def save(step: int, epoch: int, name: str = LAST) -> None:
        if not main:
            return
        save_checkpoint(checkpoint_dir(run_dir) / name, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "step": step, "epoch": epoch, "steps_per_epoch": steps_per_epoch, "rng": capture_rng_state(),
            "baseline": list(baseline) if baseline else None, "config": to_tree(cfg),
        })

    if payload is not None:  # last, so that nothing set up above draws from the restored generators
        restore_rng_state(payload["rng"])
    knn: tuple[float, float] | None = None
    stopped_early = False
    show_progress = sys.stderr.isatty() if cfg.run.progress is None else cfg.run.progress
    try:
        for epoch in range(epochs_done, cfg.train.epochs):
            sampler.set_epoch(epoch, start_batch=batch_in_epoch)
            first_step = epoch * steps_per_epoch + batch_in_epoch
            progress = tqdm(total=steps_per_epoch, initial=batch_in_epoch, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                            leave=False, disable=not (main and show_progress), dynamic_ncols=True)
            result = train_one_epoch(
                run_step, loader, first_step,
                lr_at=lambda s: learning_rate_at(s, steps_per_epoch, cfg.train.epochs, peak_lr, cfg.optim),
                momentum_at=lambda s: momentum_at(s, total_steps, cfg.model),
                log_every=cfg.run.log_every_steps,
                on_log=lambda step, record: log({"kind": "step", "step": step, "epoch": step / steps_per_epoch,
                                                 **record, "time": time.time()}),
                checkpoint_every=cfg.run.checkpoint_every_steps,
                on_checkpoint=lambda step, epoch=epoch: save(step, epoch),
                stop_at_step=cfg.train.stop_at_step,
                progress=progress,
            )
            progress.close()
            steps_done = first_step + result.steps
            batch_in_epoch = 0
            if result.stopped_early and steps_done < (epoch + 1) * steps_per_epoch:
                save(steps_done, epoch)
                stopped_early = True
                say(f"stopped at step {steps_done} (train.stop_at_step); resume with resume=auto")
                break
            epochs_done = epoch + 1
            record = {"kind": "epoch", "epoch": epochs_done, "step": steps_done,
                      "loss": result.loss_sum / max(result.steps, 1),
                      "accuracy": result.accuracy_sum / max(result.steps, 1),
                      "epoch_seconds": result.seconds, "knn_top1": None, "knn_top5": None}
            due = monitor is not None and (epochs_done % cfg.monitor.knn_every_epochs == 0
                                           or epochs_done == cfg.train.epochs)
            if due:
                knn = monitor.evaluate(model.backbone)
                record["knn_top1"], record["knn_top5"] = knn
            log({**record, "time": time.time()})
            say(f"epoch {epochs_done}/{cfg.train.epochs}: loss {record['loss']:.4f}, "
                f"inst-disc acc {record['accuracy']:.3f}, {result.seconds:.0f}s"
                + (f", kNN top-1 {knn[0]:.4f}" if due else ""))
            save(steps_done, epochs_done)
            if cfg.run.keep_every_epochs and epochs_done % cfg.run.keep_every_epochs == 0 and main:
                shutil.copyfile(checkpoint_dir(run_dir) / LAST, checkpoint_dir(run_dir) / f"epoch_{epochs_done:04d}.pt")
            if result.stopped_early:
                stopped_early = steps_done < total_steps
                break
    except NonFiniteLoss:
        if metrics is not None:
            metrics.close()
            write_report(run_dir)
        raise

    minutes = (time.perf_counter() - started) / 60
    completed = not stopped_early and epochs_done == cfg.train.epochs
    if metrics is not None:
        if completed:
            log({"kind": "final", "step": steps_done, "epoch": epochs_done, "minutes": minutes,
                 "knn_top1": knn[0] if knn else None, "knn_top5": knn[1] if knn else None,
                 "baseline_top1": baseline[0] if baseline else None, "time": time.time()})
        metrics.close()
        report = write_report(run_dir)
        say(f"report: {report}")
    return PretrainResult(run_dir, epochs_done, steps_done, completed, knn[0] if knn else None,
                          knn[1] if knn else None, baseline[0] if baseline else None,
                          baseline[1] if baseline else None, minutes)


def _check_same_model(payload: dict, cfg: Config, path: Path) -> None:
    saved = payload.get("config", {}).get("model", {})
    current = to_tree(cfg.model)
    differing = sorted(key for key in set(saved) | set(current) if saved.get(key) != current.get(key))
    if differing:
        details = ", ".join(f"model.{k}: {saved.get(k)!r} in the checkpoint, {current.get(k)!r} now" for k in differing)
        raise ConfigError(f"{path} was trained with another model ({details}); resume with the same model settings")


def _build_monitor(cfg: Config, device: torch.device, autocast, say) -> KnnMonitor | None:
    splits = mdata.available_splits(cfg.data)
    query_split = next((s for s in ("test", "val") if s in splits), None)
    if query_split is None:
        say("kNN monitor off: the dataset has no test/val split")
        return None
    bank = mdata.build_eval_dataset(cfg.data, "train")
    queries = mdata.build_eval_dataset(cfg.data, query_split)
    if not getattr(bank, "classes", None):
        say("kNN monitor off: the dataset has no labels")
        return None
    monitor = KnnMonitor(bank, queries, len(bank.classes), cfg.monitor, device,
                         num_workers=min(cfg.data.num_workers, 2), channels_last=cfg.train.channels_last,
                         autocast=autocast, seed=cfg.train.seed)
    say(f"kNN monitor: {monitor.sizes[0]} bank images, {monitor.sizes[1]} {query_split} images, "
        f"k={cfg.monitor.knn_k}, τ={cfg.monitor.knn_temperature}")
    return monitor
