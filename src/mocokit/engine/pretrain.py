"""`pretrain(cfg)`: a full MoCo pretraining run into a run folder, resumable at any checkpoint.

The run folder holds config.yaml (the resolved config), checkpoints/ (last.pt, and epoch_NNNN.pt copies when
run.keep_every_epochs is set), metrics.jsonl, tensorboard/, and at the end plots/ and report.html.
"""

from __future__ import annotations

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
from mocokit.config.loader import to_tree
from mocokit.data.subset import seeded_subset
from mocokit.engine.loop import (
    EpochResult,
    NonFiniteLoss,
    StepRunner,
    compile_enabled,
    train_one_epoch,
    watched_parameters,
)
from mocokit.engine.monitor import KnnMonitor
from mocokit.errors import ConfigError
from mocokit.reporting import MetricsWriter, write_report
from mocokit.training.checkpoint import (
    LAST,
    PREVIOUS,
    capture_rng_state,
    keep_copy,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from mocokit.training.initial import initial_model
from mocokit.training.interrupt import GracefulStop, StopAgreement
from mocokit.training.launch import data_parallel, process_group_from_environment
from mocokit.training.lock import RunLock
from mocokit.training.optim import build_optimizer, scaled_learning_rate
from mocokit.training.process import configure_process
from mocokit.training.run_config import Config, config_to_yaml
from mocokit.training.rundir import checkpoint_dir, epoch_copy_name, load_resume_checkpoint, resolve_run_dir
from mocokit.training.runtime import autocast_factory, needs_grad_scaler, resolve_device, resolve_precision
from mocokit.training.sampling import EpochSampler, SeededSamples
from mocokit.training.schedules import learning_rate_at, momentum_at


@dataclass
class PretrainResult:
    run_dir: Path
    epochs_done: int
    steps_done: int
    completed: bool  # all epochs ran
    interrupted: bool  # stopped by a signal (Ctrl-C, SIGTERM) after checkpointing; run again to continue
    knn_top1: float | None
    knn_top5: float | None
    baseline_top1: float | None  # the same network at random initialisation
    baseline_top5: float | None
    minutes: float  # this invocation's wall time
    main_process: bool = True  # False on the other ranks of a multi-process run, which should stay quiet


def pretrain(cfg: Config, echo: Callable[[str], None] = print) -> PretrainResult:
    """Run (or continue) the pretraining that `cfg` describes. Raises ConfigError/DataError/CheckpointError for
    unusable inputs before anything is trained, and NonFiniteLoss when the loss diverges."""
    # under torchrun: one process of many; the main process locks the run folder (a second pretrain is refused)
    with process_group_from_environment(cfg.train.device), RunLock() as lock:
        train = cfg.train  # threads, seeds, determinism and the CPU heap: process-wide (training/process.py)
        configure_process(train.threads, train.seed, train.deterministic,
                          reuse_cpu_memory=resolve_device(train.device).type == "cpu")
        return Pretraining(cfg, echo, lock).run()


class Pretraining:
    """The pieces of one pretraining run, set up in order: run folder, data, model and optimiser, resume state,
    monitor and logging. `run()` then trains epoch by epoch."""

    def __init__(self, cfg: Config, echo: Callable[[str], None], lock: RunLock | None = None) -> None:
        self.cfg = cfg
        self.started = time.perf_counter()
        self.main = distributed.is_main_process()
        self.say = echo if self.main else (lambda _message: None)
        self.device = resolve_device(cfg.train.device)
        world = distributed.world_size()
        if cfg.train.batch_size % world:
            raise ConfigError(f"train.batch_size={cfg.train.batch_size} must be divisible by the {world} processes")
        self.local_batch = cfg.train.batch_size // world

        # rank 0 decides (a timestamped folder name, the checkpoint to resume) and every rank follows
        self.run_dir = distributed.broadcast_object(resolve_run_dir(cfg.run.dir, cfg.name))
        if self.main and lock is not None:
            lock.acquire(self.run_dir)  # before reading or writing anything there; released by pretrain()
        # resume=auto skips damaged checkpoints, naming them (rundir.load_resume_checkpoint)
        resume_from, self.payload = load_resume_checkpoint(self.run_dir, cfg.resume, self.say)
        self.resume_from = distributed.broadcast_object(resume_from)
        if self.resume_from != resume_from:
            self.payload = load_checkpoint(self.resume_from) if self.resume_from else None
        if self.payload is not None:
            _check_same_model(self.payload, cfg, self.resume_from)
        self._setup_data()
        self._setup_model()
        self._restore_progress()
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(config_to_yaml(cfg))
        self._describe()
        self.monitor = _build_monitor(cfg, self.device, self.autocast, self.say) if cfg.monitor.knn_every_epochs \
            else None
        self.metrics = MetricsWriter(self.run_dir, tensorboard=cfg.run.tensorboard) if self.main else None

    # ------------------------------------------------------------------------------------------------ set-up

    def _setup_data(self) -> None:
        """The order of samples and their augmentations are functions of the seed, so a resume sees the same."""
        cfg = self.cfg
        # indexed: the items' indices become positions in the subset (the memory bank has one row per image)
        self.train_set = seeded_subset(mdata.build_pretrain_dataset(cfg.data, "train"), cfg.data.max_images,
                                       cfg.train.seed, indexed=True)
        mdata.check_batch_fits(self.train_set, cfg.train.batch_size)
        if cfg.model.uses_queue and cfg.model.queue_size >= len(self.train_set):
            warnings.warn(
                f"model.queue_size={cfg.model.queue_size} is not smaller than the dataset ({len(self.train_set)} "
                "images): the queue will hold stale keys of the very image being queried (moco #146). "
                "Use a smaller queue.",
                stacklevel=3,
            )
        self.sampler = EpochSampler(len(self.train_set), self.local_batch, cfg.train.seed, distributed.rank(),
                                    distributed.world_size())
        self.loader = DataLoader(
            SeededSamples(self.train_set, cfg.train.seed),
            batch_size=self.local_batch,
            sampler=self.sampler,
            num_workers=cfg.data.num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=True,
            persistent_workers=cfg.data.num_workers > 0,
            generator=torch.Generator().manual_seed(cfg.train.seed),  # keeps the loader off the global RNG
        )
        self.steps_per_epoch = self.sampler.batches_per_epoch
        self.total_steps = self.steps_per_epoch * cfg.train.epochs

    def _setup_model(self) -> None:
        cfg = self.cfg
        # the weights of train.seed, whatever the data loading drew from the global generator before
        self.model = initial_model(cfg, dataset_size=len(self.train_set)).to(self.device)
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.peak_lr = scaled_learning_rate(cfg.optim, cfg.train.batch_size)
        self.optimizer = build_optimizer(self.model, cfg.optim, self.peak_lr)
        self.trained_model = data_parallel(self.model, self.device)  # what the step calls; self.model: the MoCo
        self.dtype = resolve_precision(cfg.train.precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type) if needs_grad_scaler(self.dtype) else None
        self.autocast = autocast_factory(self.device, self.dtype)
        batch_augment = mdata.build_batch_augment(cfg.data, self.device) if cfg.data.augment == "batched" else None
        self.run_step = StepRunner(
            self.trained_model,
            self.optimizer, self.device, self.autocast, self.scaler, cfg.train.channels_last, cfg.optim.grad_clip,
            batch_augment, watched_parameters(self.model), skip_nonfinite=cfg.train.on_nonfinite == "skip",
            compile=compile_enabled(cfg.train.compile, self.device), on_compiled=self._report_compile,
        )

    def _report_compile(self, seconds: float) -> None:
        self.say(f"torch.compile: the first step took {seconds:.1f} s, compilation included")
        self.log({"kind": "compile", "step": self.steps_done + 1, "seconds": seconds})

    def _restore_progress(self) -> None:
        self.steps_done = self.epochs_done = self.batch_in_epoch = 0
        self.baseline: tuple[float, float] | None = None
        self.knn: tuple[float, float] | None = None  # the last kNN measured (kept across resumes)
        if self.payload is None:
            return
        payload = self.payload
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        if self.scaler is not None and payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        self.steps_done, self.epochs_done = payload["step"], payload["epoch"]
        self.batch_in_epoch = self.steps_done - self.epochs_done * self.steps_per_epoch
        if payload["steps_per_epoch"] != self.steps_per_epoch:
            raise ConfigError(
                f"{self.resume_from} was written with {payload['steps_per_epoch']} steps per epoch and this run has "
                f"{self.steps_per_epoch}: resume with the same dataset and train.batch_size"
            )
        self.baseline = tuple(payload["baseline"]) if payload.get("baseline") else None
        self.knn = tuple(payload["knn"]) if payload.get("knn") else None

    def _describe(self) -> None:
        cfg, world = self.cfg, distributed.world_size()
        if self.payload is not None:
            self.say(f"resuming {self.run_dir} from {self.resume_from}: epoch {self.epochs_done}, "
                     f"step {self.steps_done}")
        self.say(f"run folder: {self.run_dir}")
        self.say(f"MoCo {cfg.model.version}, {cfg.model.backbone}, {len(self.train_set)} images, "
                 f"{self.steps_per_epoch} steps/epoch, batch {cfg.train.batch_size} ({world} process"
                 f"{'es' if world > 1 else ''}), device {self.device}, precision {self.dtype or torch.float32}")
        self.say(f"learning rate {self.peak_lr:.6g} = base {cfg.optim.lr:g}"
                 + (f" x batch {cfg.train.batch_size} / 256" if cfg.optim.scale_lr else " (not scaled)"))

    # ------------------------------------------------------------------------------------------------ training

    def log(self, record: dict) -> None:
        if self.metrics is not None:
            self.metrics.log({**record, "time": time.time()})

    def save(self, step: int, epoch: int) -> None:
        """Checkpoint everything a resume needs (main process only), atomically."""
        if not self.main:
            return
        folder = checkpoint_dir(self.run_dir)
        save_checkpoint(folder / LAST, previous=folder / PREVIOUS, payload={
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "step": step, "epoch": epoch, "steps_per_epoch": self.steps_per_epoch, "rng": capture_rng_state(),
            "baseline": list(self.baseline) if self.baseline else None,
            "knn": list(self.knn) if self.knn else None, "config": to_tree(self.cfg),
        })

    def run(self) -> PretrainResult:
        cfg = self.cfg
        if self.monitor is not None and cfg.monitor.knn_baseline and self.baseline is None and self.steps_done == 0:
            self.baseline = self.monitor.evaluate(self.model.backbone)
            self.say(f"kNN at random initialisation: top-1 {self.baseline[0]:.4f}, top-5 {self.baseline[1]:.4f}")
        if self.baseline is not None:
            self.log({"kind": "baseline", "step": 0, "knn_top1": self.baseline[0], "knn_top5": self.baseline[1]})
        if self.payload is not None:  # last, so that nothing set up above draws from the restored generators
            restore_rng_state(self.payload["rng"])

        already_complete = self.epochs_done == cfg.train.epochs
        if already_complete:
            self.say(f"{self.run_dir} already completed its {cfg.train.epochs} epochs; nothing to train")
        stopper = GracefulStop()
        self.stop_agreed = StopAgreement(stopper, every=min(10, self.cfg.run.log_every_steps))
        try:
            with stopper:
                for epoch in range(self.epochs_done, cfg.train.epochs):
                    result = self._train_epoch(epoch)
                    if self.steps_done < (epoch + 1) * self.steps_per_epoch:  # stopped inside the epoch
                        self.save(self.steps_done, epoch)
                        break
                    self._end_epoch(result)
                    if result.stopped_early:
                        break
        except NonFiniteLoss:
            self._close()
            raise
        completed = self.epochs_done == cfg.train.epochs
        if not completed:
            why = f"{stopper.signal_name or 'a stop signal'} received" if self.stop_agreed.requested \
                else "train.stop_at_step"
            self.say(f"stopped at step {self.steps_done} ({why}), checkpoint saved; run the same command again to "
                     "continue (resume=auto)")
        minutes = (time.perf_counter() - self.started) / 60
        knn = self.knn
        if completed and not already_complete:
            self.log({"kind": "final", "step": self.steps_done, "epoch": self.epochs_done, "minutes": minutes,
                      "knn_top1": knn[0] if knn else None, "knn_top5": knn[1] if knn else None,
                      "baseline_top1": self.baseline[0] if self.baseline else None})
        self._close()
        baseline = self.baseline or (None, None)
        return PretrainResult(self.run_dir, self.epochs_done, self.steps_done, completed, self.stop_agreed.requested,
                              knn[0] if knn else None, knn[1] if knn else None, baseline[0], baseline[1], minutes,
                              self.main)

    def _train_epoch(self, epoch: int) -> EpochResult:
        cfg = self.cfg
        self.sampler.set_epoch(epoch, start_batch=self.batch_in_epoch)
        first_step = epoch * self.steps_per_epoch + self.batch_in_epoch
        show = sys.stderr.isatty() if cfg.run.progress is None else cfg.run.progress
        progress = tqdm(total=self.steps_per_epoch, initial=self.batch_in_epoch, leave=False, dynamic_ncols=True,
                        desc=f"epoch {epoch + 1}/{cfg.train.epochs}", disable=not (self.main and show))
        result = train_one_epoch(
            self.run_step, self.loader, first_step,
            lr_at=lambda s: learning_rate_at(s, self.steps_per_epoch, cfg.train.epochs, self.peak_lr, cfg.optim),
            momentum_at=lambda s: momentum_at(s, self.total_steps, cfg.model),
            log_every=cfg.run.log_every_steps,
            on_log=lambda step, record: self.log({"kind": "step", "step": step,
                                                  "epoch": step / self.steps_per_epoch, **record}),
            checkpoint_every=cfg.run.checkpoint_every_steps,
            on_checkpoint=lambda step: self.save(step, epoch),
            stop_at_step=cfg.train.stop_at_step,
            stop_requested=self.stop_agreed,
            progress=progress,
        )
        progress.close()
        self.steps_done = first_step + result.steps
        self.batch_in_epoch = 0
        return result

    def _end_epoch(self, result: EpochResult) -> None:
        """Epoch record, kNN when due, checkpoint (after the kNN, so its RNG state is the one training continues
        from), kept copy."""
        cfg = self.cfg
        self.epochs_done += 1
        record = {"kind": "epoch", "epoch": self.epochs_done, "step": self.steps_done,
                  "loss": result.loss_sum / max(result.steps - result.skipped, 1),
                  "accuracy": result.accuracy_sum / max(result.steps - result.skipped, 1),
                  "epoch_seconds": result.seconds, "knn_top1": None, "knn_top5": None}
        if result.skipped:
            record["skipped_steps"] = result.skipped
        knn = None
        if self.monitor is not None and (self.epochs_done % cfg.monitor.knn_every_epochs == 0
                                         or self.epochs_done == cfg.train.epochs):
            knn = self.knn = self.monitor.evaluate(self.model.backbone)
            record["knn_top1"], record["knn_top5"] = knn
        self.log(record)
        self.say(f"epoch {self.epochs_done}/{cfg.train.epochs}: loss {record['loss']:.4f}, inst-disc acc "
                 f"{record['accuracy']:.3f}, {result.seconds:.0f}s" + (f", kNN top-1 {knn[0]:.4f}" if knn else ""))
        self.save(self.steps_done, self.epochs_done)
        if self.main and cfg.run.keep_every_epochs and self.epochs_done % cfg.run.keep_every_epochs == 0:
            folder = checkpoint_dir(self.run_dir)
            keep_copy(folder / LAST, folder / epoch_copy_name(self.epochs_done))

    def _close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.say(f"report: {write_report(self.run_dir)}")


def _check_same_model(payload: dict, cfg: Config, path: Path) -> None:
    saved = payload.get("config", {}).get("model", {})
    current = to_tree(cfg.model)
    defaults = to_tree(type(cfg.model)())
    # a setting added after the checkpoint was written counts as its default value (older checkpoints resume)
    differing = sorted(key for key in set(saved) | set(current)
                       if saved.get(key, defaults.get(key)) != current.get(key))
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
    if not getattr(bank, "classes", None):
        say("kNN monitor off: the dataset has no labels")
        return None
    queries = mdata.build_eval_dataset(cfg.data, query_split)
    monitor = KnnMonitor(bank, queries, len(bank.classes), cfg.monitor, device,
                         num_workers=min(cfg.data.num_workers, 2), channels_last=cfg.train.channels_last,
                         autocast=autocast, seed=cfg.train.seed)
    say(f"kNN monitor: {monitor.sizes[0]} bank images, {monitor.sizes[1]} {query_split} images, "
        f"k={cfg.monitor.knn_k}, τ={cfg.monitor.knn_temperature}")
    return monitor
