"""`pretrain(cfg)`: a full MoCo pretraining run into a run folder, resumable at any checkpoint.

The run folder holds config.yaml (the resolved config), checkpoints/ (last.pt, and epoch_NNNN.pt copies when
run.keep_every_epochs is set), metrics.jsonl, tensorboard/, and at the end plots/ and report.html.

The run is set up by small functions, each returning a frozen part (`RunFolder`, `TrainingData`, `TrainingParts`,
the kNN monitor, the `RunLog`), in this order (the model's initialisation draws from the seeded global generator);
everything that changes while training is one `TrainingState`. `Pretraining` then trains epoch by epoch.
"""

from __future__ import annotations

import math
import platform
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mocokit import data as mdata
from mocokit import distributed
from mocokit._version import __version__
from mocokit.config.loader import to_tree
from mocokit.data.subset import seeded_subset
from mocokit.engine.budget import TimeAccount, TimeBudget
from mocokit.engine.compile_trial import CompileControl
from mocokit.engine.dictionary_fill import fill_dictionary
from mocokit.engine.epoch import EpochHooks, EpochResult, Schedule, train_one_epoch
from mocokit.engine.health_monitor import build_health_monitor
from mocokit.engine.initial_weights import load_initial_weights, recorded_source
from mocokit.engine.monitor import HOW_TO_LABEL, KnnMonitor, own_labelled_splits
from mocokit.engine.step import StepRunner, watched_parameters
from mocokit.errors import ConfigError, NonFiniteLoss
from mocokit.knn import KnnScore
from mocokit.models import MoCo
from mocokit.models.config import VIT_GEOMETRY
from mocokit.reporting import MetricsWriter, write_report
from mocokit.training.budget import BudgetPlan, EvaluationCosts
from mocokit.training.checkpoint import (
    LAST,
    PREVIOUS,
    PretrainCheckpoint,
    capture_rng_state,
    keep_copy,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from mocokit.training.compilation import CompileLedger, device_name, signature
from mocokit.training.initial import initial_model
from mocokit.training.interrupt import GracefulStop, StopAgreement
from mocokit.training.launch import data_parallel, process_group_from_environment
from mocokit.training.lock import RunLock
from mocokit.training.optim import build_optimizer, scaled_learning_rate
from mocokit.training.process import configure_process, recorded_warnings, use_persistent_compile_cache
from mocokit.training.run_config import Config, config_to_yaml
from mocokit.training.rundir import (
    BEST,
    checkpoint_dir,
    epoch_copy_name,
    load_resume_checkpoint,
    resolve_run_dir,
)
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
    pixel_top1: float | None = None  # kNN on the mean-centred raw pixels (measured on a fresh start only)
    pixel_top5: float | None = None


def pretrain(cfg: Config, echo: Callable[[str], None] = print,
             clock: Callable[[], float] = time.perf_counter) -> PretrainResult:
    """Run (or continue) the pretraining that `cfg` describes. Raises ConfigError/DataError/CheckpointError for
    unusable inputs before anything is trained (and for a train.time_budget spent before the first step), and
    NonFiniteLoss when the loss diverges. `clock` times the run for its time budget and its time report (seconds;
    tests give a fake one)."""
    # under torchrun: one process of many; the main process locks the run folder (a second pretrain is refused)
    with process_group_from_environment(cfg.train.device), RunLock() as lock, recorded_warnings() as warned:
        train = cfg.train  # threads, seeds, determinism and the CPU heap: process-wide (training/process.py)
        configure_process(train.threads, train.seed, train.deterministic,
                          reuse_cpu_memory=resolve_device(train.device).type == "cpu")
        return Pretraining(cfg, echo, lock, warned, clock).run()


# ---------------------------------------------------------------------------------------------------- the parts


@dataclass(frozen=True)
class RunFolder:
    path: Path
    resume_from: Path | None  # the checkpoint this run continues from
    saved: PretrainCheckpoint | None  # its content


@dataclass(frozen=True)
class TrainingData:
    dataset: Dataset  # items (views, label, index), index = position in the (sub)set
    sampler: EpochSampler
    loader: DataLoader
    epochs: int

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.batches_per_epoch

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


@dataclass(frozen=True)
class TrainingParts:
    model: MoCo  # the MoCo itself (the step may call it through DDP)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None  # fp16 only
    peak_lr: float  # after the linear scaling rule
    precision: torch.dtype | None  # the autocast dtype, None: fp32
    autocast: Callable[[], AbstractContextManager]
    run_step: StepRunner


@dataclass(frozen=True)
class RunLog:
    """Messages for the user (main process only) and records for metrics.jsonl / TensorBoard."""

    say: Callable[[str], None]
    metrics: MetricsWriter | None
    warned: list[str] = field(default_factory=list)  # the run's warnings so far (training/process.py)

    def __call__(self, record: dict) -> None:
        if self.metrics is not None:
            self.metrics.log({**record, "time": time.time()})

    def close(self, run_dir: Path, step: int) -> None:
        """The run's warnings into metrics.jsonl, then the report."""
        if self.metrics is not None:
            if self.warned:
                self({"kind": "warnings", "step": step, "messages": list(self.warned)})
            self.metrics.close()
            self.say(f"report: {write_report(run_dir)}")


@dataclass
class TrainingState:
    """Everything that changes while training; what a checkpoint restores besides the parts' own state."""

    steps_done: int = 0
    epochs_done: int = 0
    baseline: KnnScore | None = None  # kNN at random initialisation
    knn: KnnScore | None = None  # the last kNN measured (kept across resumes)
    started: float = field(default_factory=time.perf_counter)
    plan: BudgetPlan | None = None  # the time budget's plan, once fixed (kept across resumes)
    best: dict | None = None  # {"epoch", "uniformity"}: the best label-free score so far, kept as checkpoints/best.pt

    def batch_in_epoch(self, steps_per_epoch: int) -> int:
        """Steps already done inside the current epoch (a resume from a mid-epoch checkpoint)."""
        return self.steps_done - self.epochs_done * steps_per_epoch


def open_run_folder(cfg: Config, say: Callable[[str], None], lock: RunLock | None) -> RunFolder:
    """Rank 0 decides (a timestamped folder name, the checkpoint to resume) and every rank follows; the main
    process locks the folder before reading or writing anything there."""
    path = distributed.broadcast_object(resolve_run_dir(cfg.run.dir, cfg.name))
    if distributed.is_main_process() and lock is not None:
        lock.acquire(path)  # released by pretrain()
    # resume=auto skips damaged checkpoints, naming them (rundir.load_resume_checkpoint)
    resume_from, payload = load_resume_checkpoint(path, cfg.resume, say)
    agreed = distributed.broadcast_object(resume_from)
    if agreed != resume_from:
        payload = load_checkpoint(agreed) if agreed else None
    saved = PretrainCheckpoint.from_payload(payload, agreed) if payload is not None else None
    if saved is not None:
        check_same_model(saved, cfg, agreed)
    return RunFolder(path, agreed, saved)


def setup_data(cfg: Config, device: torch.device) -> TrainingData:
    """The order of samples and their augmentations are functions of the seed, so a resume sees the same."""
    world = distributed.world_size()
    if cfg.train.batch_size % world:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} must be divisible by the {world} processes")
    local_batch = cfg.train.batch_size // world
    # indexed: the items' indices become positions in the subset (the memory bank has one row per image)
    dataset = seeded_subset(mdata.build_pretrain_dataset(cfg.data, "train"), cfg.data.max_images, cfg.train.seed,
                            indexed=True)
    mdata.check_batch_fits(dataset, cfg.train.batch_size)
    if cfg.model.uses_queue and cfg.model.queue_size >= len(dataset):
        warnings.warn(
            f"model.queue_size={cfg.model.queue_size} is not smaller than the dataset ({len(dataset)} images): the "
            "queue will hold stale keys of the very image being queried (moco #146). Use a smaller queue.",
            stacklevel=3,
        )
    sampler = EpochSampler(len(dataset), local_batch, cfg.train.seed, distributed.rank(), world)
    loader = DataLoader(
        SeededSamples(dataset, cfg.train.seed),
        batch_size=local_batch,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=cfg.data.num_workers > 0,
        generator=torch.Generator().manual_seed(cfg.train.seed),  # keeps the loader off the global RNG
    )
    return TrainingData(dataset, sampler, loader, cfg.train.epochs)


def setup_training(cfg: Config, device: torch.device, dataset_size: int) -> TrainingParts:
    """Model (`initial_model`: the weights of train.seed, whatever the data loading drew before), optimiser,
    precision and the step that uses them."""
    model = initial_model(cfg, dataset_size=dataset_size).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    peak_lr = scaled_learning_rate(cfg.optim, cfg.train.batch_size)
    optimizer = build_optimizer(model, cfg.optim, peak_lr)
    precision = resolve_precision(cfg.train.precision, device)
    scaler = torch.amp.GradScaler(device.type) if needs_grad_scaler(precision) else None
    autocast = autocast_factory(device, precision)
    batch_augment = mdata.build_batch_augment(cfg.data, device) if cfg.data.augment == "batched" else None
    run_step = StepRunner(
        data_parallel(model, device), optimizer, device, autocast, scaler, cfg.train.channels_last,
        cfg.optim.grad_clip, batch_augment, watched_parameters(model),
        skip_nonfinite=cfg.train.on_nonfinite == "skip", compile_scope=cfg.train.compile_scope,
    )  # compiled (or not) by the run's CompileControl, which decides train.compile
    return TrainingParts(model, optimizer, scaler, peak_lr, precision, autocast, run_step)


def restore_state(folder: RunFolder, parts: TrainingParts, steps_per_epoch: int) -> TrainingState:
    """A fresh state, or the one of the checkpoint the run continues from (loaded into the parts as well)."""
    saved = folder.saved
    if saved is None:
        return TrainingState()
    parts.model.load_state_dict(saved.model)
    parts.optimizer.load_state_dict(saved.optimizer)
    if parts.scaler is not None and saved.scaler:
        parts.scaler.load_state_dict(saved.scaler)
    if saved.steps_per_epoch != steps_per_epoch:
        raise ConfigError(
            f"{folder.resume_from} was written with {saved.steps_per_epoch} steps per epoch and this run has "
            f"{steps_per_epoch}: resume with the same dataset and train.batch_size"
        )
    plan = BudgetPlan.from_record(saved.budget) if saved.budget else None
    return TrainingState(saved.step, saved.epoch, saved.baseline, saved.knn, plan=plan, best=saved.best)


def build_monitor(cfg: Config, device: torch.device, autocast, say: Callable[[str], None]) -> KnnMonitor | None:
    """The kNN monitor on monitor.data.path's labelled images, else on the dataset's labelled train and test/val
    splits, or None (said why, and how to get one)."""
    if not cfg.monitor.knn_every_epochs:
        return None
    if cfg.monitor.data.path:
        bank, queries, classes, query_split = own_labelled_splits(cfg.data, cfg.monitor.data.path, cfg.train.seed)
    else:
        splits = mdata.available_splits(cfg.data)
        query_split = next((s for s in ("test", "val") if s in splits), None)
        if query_split is None:
            say(f"kNN monitor off: the dataset has no labelled test/val split; {HOW_TO_LABEL}")
            return None
        bank = mdata.build_eval_dataset(cfg.data, "train")
        if not getattr(bank, "classes", None):
            say(f"kNN monitor off: the dataset has no labels; {HOW_TO_LABEL}")
            return None
        queries, classes = mdata.build_eval_dataset(cfg.data, query_split), len(bank.classes)
        query_split = f"{query_split} images"
    monitor = KnnMonitor(bank, queries, classes, cfg.monitor, device,
                         num_workers=min(cfg.data.num_workers, 2), channels_last=cfg.train.channels_last,
                         autocast=autocast, seed=cfg.train.seed)
    say(f"kNN monitor: {monitor.sizes[0]} bank images, {monitor.sizes[1]} {query_split}, "
        f"k={cfg.monitor.knn_k}, τ={cfg.monitor.knn_temperature}")
    return monitor


# The label-free score that picks checkpoints/best.pt: the uniformity of the embeddings (Wang & Isola), lower is
# better. Of the four health metrics it ranked checkpoints most like kNN accuracy does (Spearman 0.86 within runs,
# 0.82 across datasets; the effective rank 0.79 and 0.47: benchmarks/own_data.json, docs/own-data.md).
BEST_SCORE = "uniformity"


def is_new_best(record: dict, best: dict | None) -> bool:
    """Whether an epoch record's label-free score beats the best so far (a tie keeps the earlier epoch)."""
    score = record.get(BEST_SCORE)
    return score is not None and (best is None or score < best[BEST_SCORE])


def check_same_model(saved: PretrainCheckpoint, cfg: Config, path: Path) -> None:
    saved_model = saved.config.get("model", {})
    current = to_tree(cfg.model)
    defaults = to_tree(type(cfg.model)())
    inert = () if cfg.model.is_vit else VIT_GEOMETRY  # settings that do not change this backbone
    # a setting added after the checkpoint was written counts as its default value (older checkpoints resume)
    differing = sorted(key for key in set(saved_model) | set(current)
                       if key not in inert and saved_model.get(key, defaults.get(key)) != current.get(key))
    if differing:
        details = ", ".join(f"model.{k}: {saved_model.get(k)!r} in the checkpoint, {current.get(k)!r} now"
                            for k in differing)
        raise ConfigError(f"{path} was trained with another model ({details}); resume with the same model settings")


# ---------------------------------------------------------------------------------------------------- the run


class Pretraining:
    """One pretraining run: its frozen parts, set up in order, and its TrainingState; `run()` trains."""

    def __init__(self, cfg: Config, echo: Callable[[str], None], lock: RunLock | None = None,
                 warned: list[str] | None = None, clock: Callable[[], float] = time.perf_counter) -> None:
        self.cfg = cfg
        self.main = distributed.is_main_process()
        say = echo if self.main else (lambda _message: None)
        self.device = resolve_device(cfg.train.device)
        started, self.started_clock = time.perf_counter(), clock()
        self.folder = open_run_folder(cfg, say, lock)
        self.data = setup_data(cfg, self.device)
        self.parts = setup_training(cfg, self.device, len(self.data.dataset))
        self.state = restore_state(self.folder, self.parts, self.data.steps_per_epoch)
        self.state.started = started
        saved = self.folder.saved
        self.account = TimeAccount(self.started_clock, clock, saved.seconds_spent if saved is not None else None)
        self.budget: TimeBudget | None = None  # set below, once the monitors are known
        self.init = None  # model.init: the weights the run started from (engine/initial_weights.py)
        if cfg.model.init:
            fresh = self.folder.saved is None
            self.init = load_initial_weights(self.parts.model, cfg.model.init) if fresh \
                else recorded_source(cfg.model.init)
            say(f"initial weights: {self.init.source} ({self.init.sha256}): {self.init.summary}")
        if self.main:
            self.folder.path.mkdir(parents=True, exist_ok=True)
            (self.folder.path / "config.yaml").write_text(config_to_yaml(cfg)
                                                          + (self.init.yaml_comment() if self.init else ""))
        self._describe(say)
        self.monitor = build_monitor(cfg, self.device, self.parts.autocast, say)
        self.health = build_health_monitor(cfg, self.data.dataset, self.device, self.parts.run_step.batch_augment,
                                           self.parts.autocast, say) if self.main else None  # main process only
        metrics = MetricsWriter(self.folder.path, tensorboard=cfg.run.tensorboard) if self.main else None
        self.log = RunLog(say, metrics, warned if warned is not None else [])
        self.budget = self._time_budget(say)  # None without a budget, or once the plan is fixed
        self.log({"kind": "run", "step": self.state.steps_done, "command": " ".join(sys.argv),
                  "mocokit": __version__, "torch": torch.__version__, "python": platform.python_version(),
                  "device": str(self.device)})
        if self.init is not None and self.folder.saved is None:  # a fresh start from model.init: a queue of real keys
            self.log(self.init.record(fill_dictionary(self.parts.run_step, self.data.loader, say)))
        self.parts.run_step.on_compiled = self._report_compile
        self.compiling = self._compile_control(say)

    def _describe(self, say: Callable[[str], None]) -> None:
        cfg, world, state, data = self.cfg, distributed.world_size(), self.state, self.data
        if self.folder.saved is not None:
            say(f"resuming {self.folder.path} from {self.folder.resume_from}: epoch {state.epochs_done}, "
                f"step {state.steps_done}")
        say(f"run folder: {self.folder.path}")
        say(f"MoCo {cfg.model.version}, {cfg.model.backbone}, {len(data.dataset)} images, "
            f"{data.steps_per_epoch} steps/epoch, batch {cfg.train.batch_size} ({world} process"
            f"{'es' if world > 1 else ''}), device {self.device}, precision {self.parts.precision or torch.float32}")
        say(f"learning rate {self.parts.peak_lr:.6g} = base {cfg.optim.lr:g}"
            + (f" x batch {cfg.train.batch_size} / 256" if cfg.optim.scale_lr else " (not scaled)"))

    def _time_budget(self, say: Callable[[str], None]) -> TimeBudget | None:
        """The budget's measurement and planning, when train.time_budget is set and no plan is fixed yet (a
        checkpoint written before the plan re-measures, its budget counted from this invocation's start). A
        checkpoint with a plan is followed, whatever train.time_budget and train.epochs say now."""
        cfg, plan = self.cfg, self.state.plan
        if plan is not None:
            before = sum(self.account.before.values()) if self.account.before else 0.0
            say(f"time budget: this run follows its first invocation's plan ({plan.total_steps:,} steps = "
                f"{plan.epochs:.2f} epochs, fixed for a budget of {plan.budget_s:.0f} s); train.epochs and "
                f"train.time_budget are not applied again; {before:.0f} s spent before this invocation")
            return None
        budget_s = cfg.train.time_budget_seconds
        if budget_s is None:
            return None
        say(f"time budget {cfg.train.time_budget} ({budget_s:.0f} s, counted from the start of this invocation): "
            f"the number of steps is fixed after timing the first ones (train.epochs={cfg.train.epochs} is not used)")
        cadence = EvaluationCosts(knn_every=cfg.monitor.knn_every_epochs if self.monitor is not None else 0,
                                  health_every=cfg.monitor.health_every_epochs if self.health is not None else 0,
                                  checkpoint_every_steps=cfg.run.checkpoint_every_steps)
        sync = (lambda: torch.cuda.synchronize(self.device)) if self.device.type == "cuda" else (lambda: None)
        return TimeBudget(budget_s, self.account, self.data.steps_per_epoch, cadence, sync)

    @property
    def total_steps(self) -> int | None:
        """The run's last step: the plan's, train.epochs' worth without a budget, None while the plan is measured."""
        if self.state.plan is not None:
            return self.state.plan.total_steps
        return None if self.budget is not None else self.data.total_steps

    def _schedule_length(self) -> tuple[float, float]:
        """(epochs, steps) the lr and momentum schedules span. Infinite while a budget's plan is measured: the
        warm-up runs as configured, the cosine has not begun to decay, v3's momentum is still m0."""
        if self.state.plan is not None:
            return self.state.plan.epochs, self.state.plan.total_steps
        if self.budget is not None:
            return math.inf, math.inf
        return self.cfg.train.epochs, self.data.total_steps

    def _compile_control(self, say: Callable[[str], None]) -> CompileControl:
        """train.compile decided for this run (training/compilation.py), from what was measured on this machine for
        the same model signature; Inductor keeps its kernels in mocokit's cache whenever the run may compile."""
        cfg, parts = self.cfg, self.parts
        if cfg.train.compile is not False:
            use_persistent_compile_cache()
        key = signature(to_tree(cfg.model), batch=self.data.loader.batch_size, image_size=cfg.data.image_size,
                        augment=cfg.data.augment, precision=str(parts.precision), channels_last=cfg.train.channels_last,
                        device=device_name(self.device), threads=torch.get_num_threads(), torch=torch.__version__,
                        scope=cfg.train.compile_scope, processes=distributed.world_size())
        sync = (lambda: torch.cuda.synchronize(self.device)) if self.device.type == "cuda" else (lambda: None)
        return CompileControl(parts.run_step, cfg.train.compile, self.device.type, key, CompileLedger(), say,
                              self._remaining_training, processes=distributed.world_size(), write_ledger=self.main,
                              sync=sync, clock=self.account.clock, agree=distributed.broadcast_object)

    def _remaining_training(self) -> tuple[int | None, float | None]:
        """(steps left, None) for a run of known length, (None, seconds left) while a time budget is measured."""
        total = self.total_steps
        if total is not None:
            return max(total - self.state.steps_done, 0), None
        return None, max((self.cfg.train.time_budget_seconds or 0.0) - self.account.seconds(), 0.0)

    def _report_compile(self, seconds: float) -> None:
        self.log.say(f"torch.compile: the first compiled step took {seconds:.1f} s, compilation included")
        self.log({"kind": "compile", "step": self.state.steps_done + 1, "seconds": seconds})
        self.compiling.compiled(seconds)

    def save(self, step: int, epoch: int) -> None:
        """Checkpoint everything a resume needs (main process only), atomically."""
        if not self.main:
            return
        parts, state = self.parts, self.state
        with self.account.spending("checkpoints") as span:
            record = PretrainCheckpoint(
                model=parts.model.state_dict(), config=to_tree(self.cfg), step=step, epoch=epoch,
                steps_per_epoch=self.data.steps_per_epoch, optimizer=parts.optimizer.state_dict(),
                scaler=parts.scaler.state_dict() if parts.scaler is not None else {}, rng=capture_rng_state(),
                baseline=state.baseline, knn=state.knn, budget=state.plan.to_record() if state.plan else None,
                seconds_spent=self.account.total(), best=state.best,
            )
            folder = checkpoint_dir(self.folder.path)
            save_checkpoint(folder / LAST, previous=folder / PREVIOUS, payload=record.to_payload())
        if self.budget is not None:
            self.budget.observe("checkpoint", span.seconds)

    def run(self) -> PretrainResult:
        cfg, state = self.cfg, self.state
        pixels = None  # kNN on the raw pixels
        if self.monitor is not None and cfg.monitor.knn_baseline and state.baseline is None and state.steps_done == 0:
            with self.account.spending("baselines") as span:
                state.baseline = self.monitor.evaluate(self.parts.model.backbone)
            if self.budget is not None:
                self.budget.observe("knn", span.seconds)  # what each later kNN evaluation will cost
            start = "the initial weights (model.init)" if self.init else "random initialisation"
            self.log.say(f"kNN at {start}: top-1 {state.baseline.top1:.4f}, "
                         f"top-5 {state.baseline.top5:.4f}")
            with self.account.spending("baselines"):
                pixels = self.monitor.pixel_baseline()  # measured on a fresh start only; metrics.jsonl keeps it
            self.log.say(f"kNN on mean-centred raw pixels ({cfg.data.image_size} px): top-1 {pixels.top1:.4f}, "
                         f"top-5 {pixels.top5:.4f}")
        if state.baseline is not None:
            record = {"kind": "baseline", "step": 0, "knn_top1": state.baseline.top1, "knn_top5": state.baseline.top5}
            if pixels is not None:
                record.update(pixel_top1=pixels.top1, pixel_top5=pixels.top5)
            self.log(record)
        already_complete = self._finished()
        if self.budget is not None and not already_complete:
            self._prepare_budget()  # may refuse: a budget spent before the first step
        if self.folder.saved is not None:  # last, so that nothing set up above draws from the restored generators
            restore_rng_state(self.folder.saved.rng)

        if already_complete:
            self.log.say(f"{self.folder.path} already completed its {self._length_text()}; nothing to train")
        stopper = GracefulStop()
        stop_agreed = StopAgreement(stopper, every=min(10, cfg.run.log_every_steps))
        try:
            with stopper:
                while not self._finished():
                    epoch = state.epochs_done
                    result = self._train_epoch(epoch, stop_agreed)
                    if state.steps_done < self._epoch_end_step(epoch):  # stopped inside the epoch
                        self.save(state.steps_done, epoch)
                        break
                    self._end_epoch(result)
                    if result.stopped_early:
                        break
        except NonFiniteLoss:
            self.log.close(self.folder.path, state.steps_done)
            raise
        completed = self._finished()
        if not completed:
            why = f"{stopper.signal_name or 'a stop signal'} received" if stop_agreed.requested \
                else "train.stop_at_step"
            again = "run the same command again" if cfg.run.dir else \
                f"run the same command with run.dir={self.folder.path} (run.dir was empty: a new folder each time)"
            self.log.say(f"stopped at step {state.steps_done} ({why}), checkpoint saved; {again} to continue "
                         "(resume=auto)")
        minutes = (time.perf_counter() - state.started) / 60
        knn, baseline = state.knn or KnnScore(None, None), state.baseline or KnnScore(None, None)
        if completed and not already_complete:
            spent = self.account.total()
            # minutes: the run's time over all its invocations (a resumed run's earlier ones up to their last
            # checkpoint), as its experiment tables report it; minutes_this_invocation: this one's wall time
            self.log({"kind": "final", "step": state.steps_done, "epoch": state.epochs_done,
                      "minutes": sum(spent.values()) / 60, "minutes_this_invocation": minutes,
                      "knn_top1": knn.top1, "knn_top5": knn.top5, "baseline_top1": baseline.top1,
                      **({"pixel_top1": pixels.top1} if pixels is not None else {}),
                      "seconds_spent": spent,
                      **({"budget": state.plan.to_record()} if state.plan is not None else {})})
            self.log.say(spent_line(spent, state.plan))
        self.log.close(self.folder.path, state.steps_done)
        return PretrainResult(self.folder.path, state.epochs_done, state.steps_done, completed,
                              stop_agreed.requested, knn.top1, knn.top5, baseline.top1, baseline.top5, minutes,
                              self.main, *(pixels or (None, None)))

    def _finished(self) -> bool:
        """All planned steps done and the last epoch ended (a checkpoint written at the last step but before the
        epoch end, e.g. by run.checkpoint_every_steps, still has its epoch end to do: kNN, health, final save)."""
        total = self.total_steps
        last_epoch = math.ceil(total / self.data.steps_per_epoch) if total is not None else None
        return total is not None and self.state.steps_done >= total and self.state.epochs_done >= last_epoch

    def _epoch_end_step(self, epoch: int) -> int:
        """The last step of `epoch`: the epoch's last batch, or the run's planned end inside it."""
        end, total = (epoch + 1) * self.data.steps_per_epoch, self.total_steps
        return end if total is None else min(end, total)

    def _length_text(self) -> str:
        plan = self.state.plan
        if plan is not None:
            return f"{plan.total_steps:,} planned steps ({plan.epochs:.2f} epochs)"
        return f"{self.cfg.train.epochs} epochs"

    def _epochs_text(self) -> str:
        """The run's number of epochs, for "epoch 3/12": the plan's (rounded up), "?" while it is measured."""
        if self.state.plan is not None:
            return str(math.ceil(self.state.plan.epochs))
        return "?" if self.budget is not None else str(self.cfg.train.epochs)

    def _prepare_budget(self) -> None:
        """Before the first step of a budget still to plan: the cost of each evaluation (timed once, not logged, when
        no baseline measured it), a checkpoint of step 0 (it keeps the baselines, and times a checkpoint), and the
        refusal of a budget already spent."""
        budget, state = self.budget, self.state
        for kind in budget.missing_costs():
            with self.account.spending("baselines") as span:
                if kind == "knn":
                    self.monitor.evaluate(self.parts.model.backbone)
                else:
                    self.health.measure(self.parts.model, remember=False)
            budget.observe(kind, span.seconds)
        if state.steps_done == 0 and self.folder.saved is None:
            self.save(0, 0)
        left = distributed.broadcast_object(budget.left_before_training())
        if left <= 0:
            costs = budget.evaluation_costs()
            message = (f"time budget {self.cfg.train.time_budget} is spent before the first step: setup and baselines "
                       f"took {budget.setup_s:.1f} s and the final evaluations and checkpoint need "
                       f"~{costs.final_s():.1f} s. Raise train.time_budget, or make the evaluations cheaper "
                       "(monitor.knn_bank_size, monitor.knn_query_size, monitor.health_images, "
                       "monitor.knn_baseline=false); the baselines are kept in the step-0 checkpoint")
            self.log.close(self.folder.path, state.steps_done)
            raise ConfigError(message)

    def _on_step(self, step: int) -> None:
        """train.compile=auto's trial while it measures; then the time budget's clock, after every step until the
        plan is fixed (its measurement starts once the step's form, compiled or eager, is settled)."""
        if not self.compiling.settled:
            self.compiling.after_step()
            return
        if self.budget is None:
            return
        plan = self.budget.on_step(step)
        if plan is None:
            return
        self.state.plan = plan
        self.log({"kind": "budget", "step": step, **plan.to_record(), "epochs": plan.epochs})
        self.log.say(plan_line(self.cfg.train.time_budget, plan, self.budget.cadence))
        if plan.total_steps <= step:
            self.log.say(f"time budget {self.cfg.train.time_budget}: no step fits after the first {step}; the run "
                         "ends now with its final evaluations. Raise train.time_budget, or make the evaluations "
                         "cheaper (monitor.knn_bank_size, monitor.knn_query_size, monitor.health_images)")
        if self.cfg.optim.warmup_epochs > plan.epochs:
            self.log.say(f"warning: optim.warmup_epochs={self.cfg.optim.warmup_epochs:g} is longer than the "
                         f"{plan.epochs:.2f} epochs of the budget: the lr never reaches its peak; lower "
                         "optim.warmup_epochs")
        self.budget = None  # planned: nothing more to measure

    def _train_epoch(self, epoch: int, stop_requested: Callable[[], bool]) -> EpochResult:
        cfg, state, data, parts = self.cfg, self.state, self.data, self.parts
        batch_in_epoch = state.batch_in_epoch(data.steps_per_epoch)
        data.sampler.set_epoch(epoch, start_batch=batch_in_epoch)
        first_step = epoch * data.steps_per_epoch + batch_in_epoch
        show = sys.stderr.isatty() if cfg.run.progress is None else cfg.run.progress
        progress = tqdm(total=data.steps_per_epoch, initial=batch_in_epoch, leave=False, dynamic_ncols=True,
                        desc=f"epoch {epoch + 1}/{self._epochs_text()}", disable=not (self.main and show))
        budgeted = self.budget is not None or state.plan is not None
        schedule = Schedule(
            lr_at=lambda s: learning_rate_at(s, data.steps_per_epoch, self._schedule_length()[0], parts.peak_lr,
                                             cfg.optim),
            momentum_at=lambda s: momentum_at(s, self._schedule_length()[1], cfg.model),
        )
        hooks = EpochHooks(
            log_every=cfg.run.log_every_steps,
            on_log=lambda step, record: self.log({"kind": "step", "step": step,
                                                  "epoch": step / data.steps_per_epoch, **record}),
            checkpoint_every=cfg.run.checkpoint_every_steps,
            on_checkpoint=lambda step: self.save(step, epoch),
            stop_at_step=cfg.train.stop_at_step,
            stop_requested=stop_requested,
            progress=progress,
            on_step=self._on_step,
            last_step=(lambda: self.total_steps) if budgeted else (lambda: None),
        )
        with self.account.spending("training"):
            result = train_one_epoch(parts.run_step, data.loader, first_step, schedule, hooks)
        progress.close()
        state.steps_done = first_step + result.steps
        return result

    def _end_epoch(self, result: EpochResult) -> None:
        """Epoch record, kNN and health when due (and at the run's end), checkpoint (after the kNN, so its RNG state
        is the one training continues from), kept copy."""
        cfg, state = self.cfg, self.state
        state.epochs_done += 1
        final = self._finished()
        record = {"kind": "epoch", "epoch": state.epochs_done, "step": state.steps_done,
                  "loss": result.mean_loss, "accuracy": result.mean_accuracy,
                  "epoch_seconds": result.seconds, "knn_top1": None, "knn_top5": None, **result.mean_stats}
        if result.skipped:
            record["skipped_steps"] = result.skipped
        knn = None
        if self.monitor is not None and (state.epochs_done % cfg.monitor.knn_every_epochs == 0 or final):
            with self.account.spending("evaluations") as span:
                knn = state.knn = self.monitor.evaluate(self.parts.model.backbone)
            self._observe("knn", span.seconds)
            record["knn_top1"], record["knn_top5"] = knn.top1, knn.top5
        if self.health is not None and (state.epochs_done % cfg.monitor.health_every_epochs == 0 or final):
            with self.account.spending("evaluations") as span:
                record.update(self.health.measure(self.parts.model, warn=self.log.say))  # rank, alignment, ...
            self._observe("health", span.seconds)
        new_best = is_new_best(record, state.best)
        if new_best:
            state.best = {"epoch": state.epochs_done, BEST_SCORE: record[BEST_SCORE]}
            record["best"] = True
        self.log(record)
        self.log.say(f"epoch {state.epochs_done}/{self._epochs_text()}: loss {record['loss']:.4f}, inst-disc acc "
                     f"{record['accuracy']:.3f}, {result.seconds:.0f}s"
                     + (f", kNN top-1 {knn.top1:.4f}" if knn else ""))
        self.save(state.steps_done, state.epochs_done)
        folder = checkpoint_dir(self.folder.path)
        if self.main and new_best:
            with self.account.spending("checkpoints"):
                keep_copy(folder / LAST, folder / BEST)
        if self.main and cfg.run.keep_every_epochs and state.epochs_done % cfg.run.keep_every_epochs == 0:
            with self.account.spending("checkpoints"):
                keep_copy(folder / LAST, folder / epoch_copy_name(state.epochs_done))

    def _observe(self, kind: str, seconds: float) -> None:
        """An evaluation measured while the plan is still open refines its cost (the latest measurement counts)."""
        if self.budget is not None:
            self.budget.observe(kind, seconds)


def _seconds(value: float) -> str:
    return f"{value:,.1f} s" if value < 100 else f"{value:,.0f} s"


def plan_line(budget: str | None, plan: BudgetPlan, cadence: EvaluationCosts) -> str:
    """The plan in one line: "time budget 20m: 12.3 s setup+baselines, 0.41 s/step measured over steps 2-21, ..."."""
    parts = [f"{_seconds(plan.setup_s)} setup+baselines",
             f"{plan.seconds_per_step:.3g} s/step measured over steps {plan.measured_from}-{plan.measured_to}",
             f"{plan.total_steps:,} steps = {plan.epochs:.2f} epochs"]
    if cadence.knn_every:
        parts.append(f"{plan.knn_evaluations} kNN evaluations ~{_seconds(plan.knn_s)} each")
    if cadence.health_every:
        parts.append(f"health ~{_seconds(plan.health_s)} each")
    parts.append(f"checkpoints ~{_seconds(plan.checkpoint_s)} each, {_seconds(plan.margin_s)} kept free; "
                 f"planned end at {_seconds(plan.planned_s)} of {_seconds(plan.budget_s)}")
    return f"time budget {budget or _seconds(plan.budget_s)}: " + ", ".join(parts)


def spent_line(spent: dict[str, float], plan: BudgetPlan | None) -> str:
    """Where the run's time went, against the budget's plan when there is one."""
    total = sum(spent.values())
    split = (f"{_seconds(spent['setup'] + spent['baselines'])} setup+baselines + {_seconds(spent['training'])} "
             f"training + {_seconds(spent['evaluations'])} evaluations + {_seconds(spent['checkpoints'])} checkpoints")
    if plan is None:
        return f"time spent: {_seconds(total)} = {split}"
    return (f"time budget {_seconds(plan.budget_s)}: spent {_seconds(total)} = {split} "
            f"(planned {_seconds(plan.planned_s)}: {_seconds(plan.setup_s)} setup+baselines, "
            f"{_seconds(plan.elapsed_s - plan.setup_s + plan.training_s)} training, "
            f"{_seconds(plan.evaluation_s)} evaluations, {_seconds(plan.checkpoints_s)} checkpoints)")
