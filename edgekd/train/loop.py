"""The one training loop: hard-label CE weighted by alpha plus a method's distillation loss.

The teacher reaches the loop only through a ``TeacherSignal`` (cached logits for a frozen teacher,
or a live module for online strategies), so the loop does not know which strategy is running.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.data import Split
from edgekd.distill.methods import DistillBatch, Method
from edgekd.errors import BadInputError, DivergedError, Interrupted
from edgekd.progress import progress_bar
from edgekd.train.device import (
    PRECISIONS,
    OnDevice,
    autocast,
    gradient_scaler,
    module_device,
    resolve_precision,
    training_device,
    valid_device_spec,
)
from edgekd.train.interrupt import stop_on_signals
from edgekd.train.resume import CheckpointClock, TimeBudget, load_training_state
from edgekd.train.taps import capture
from edgekd.train.threads import fit_training_threads, model_step_trial, resume_threads

if TYPE_CHECKING:
    from edgekd.train.distributed import DistContext


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    lr: float = 3e-3
    batch_size: int = 64
    weight_decay: float = 1e-4
    alpha: float = 0.1  # weight of the hard-label CE; (1 - alpha) weights the distillation loss
    seed: int = 0
    patience: int = 0  # stop after this many epochs without a better validation score; 0: never
    # Seconds between training checkpoints (at the first step boundary after); 0: at every
    # epoch's end. It does not change what is trained: left out of equality, of the repr (the
    # default teacher's cache key is built from it) and of the settings a resume must match.
    checkpoint_every: float = dataclasses.field(default=0.0, compare=False, repr=False)
    # Where and in what precision the arithmetic runs (edgekd.train.device), not what is trained:
    # a checkpoint resumes under other values (see _RunState.restore).
    device: str = "cpu"
    precision: str = "fp32"
    # Seconds of training (--time-budget; None: no limit): stop at the first epoch end after
    # them. Out of the repr (the default teacher's cache key) and of what a resume must match.
    time_budget: float | None = dataclasses.field(default=None, repr=False)
    # The most optimizer steps (None: every step of every epoch): the last epoch stops at the
    # budget, mid-epoch, and is validated there (the default teacher's step budget on a large
    # set, edgekd.teacher.default). Out of the repr so that cache keys built before it stay;
    # a key that depends on it names it.
    max_steps: int | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not valid_device_spec(self.device) or self.precision not in PRECISIONS:
            raise ValueError(f"unknown device {self.device!r} or precision {self.precision!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.lr <= 0 or self.batch_size < 1:
            raise ValueError("lr must be > 0 and batch_size >= 1")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")
        if not self.checkpoint_every >= 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"time_budget must be > 0 seconds, got {self.time_budget}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")

    def settings(self) -> dict:
        """What a checkpoint must have been written with to resume under this config."""
        out = dataclasses.asdict(self)
        del out["checkpoint_every"], out["time_budget"]
        if out["max_steps"] is None:  # as written before max_steps existed
            del out["max_steps"]
        return out

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps over the whole run: every epoch's, or ``max_steps`` if fewer."""
        every = self.epochs * steps_per_epoch
        return every if self.max_steps is None else min(every, self.max_steps)

    def steps_in_epoch(self, epoch: int, steps_per_epoch: int) -> int:
        """Steps epoch ``epoch`` (from 0) runs: all of them, or up to the step budget."""
        return min(steps_per_epoch, self.total_steps(steps_per_epoch) - epoch * steps_per_epoch)


@dataclass
class TrainHistory:
    loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped: str | None = None  # why training ended before its last epoch (the time budget)

    def to_dict(self) -> dict:
        return {"loss": self.loss, "val_accuracy": self.val_accuracy, "best_epoch": self.best_epoch}


# A teacher signal maps (indices into the training split, the batch) to teacher logits and taps.
# One that trains something of its own (online's peer) also has ``state_dict()`` and
# ``load_state_dict(state)``: that state goes into the checkpoint with the student's.
TeacherSignal = Callable[[np.ndarray, Split], tuple[torch.Tensor, dict[str, torch.Tensor]]]
# An augmenter maps a batch and the loop's generator to the view both models see
# (edgekd.data.augment).
Augment = Callable[[Split, np.random.Generator], Split]


def cached_teacher(logits: np.ndarray) -> TeacherSignal:
    """A frozen teacher whose logits over the training split were computed once. ``logits`` may
    be memory-mapped (``edgekd.teacher.outputs``' cache): only each batch's rows are read."""

    def signal(index: np.ndarray, _batch: Split):
        return torch.from_numpy(np.asarray(logits[index], dtype=np.float32)), {}

    signal.by_index = True  # answers for the stored samples, not for an augmented view
    return signal


def live_teacher(teacher: nn.Module, taps: tuple[str, ...] = ()) -> TeacherSignal:
    """A frozen teacher run on each batch (needed for feature taps and augmented views)."""
    teacher.eval()

    def signal(_index: np.ndarray, batch: Split):
        with torch.no_grad(), capture(teacher, taps) as feats:
            logits = teacher(*to_tensors(batch, module_device(teacher)))
        return logits, dict(feats)

    signal.module = teacher  # train_student runs it on the training device
    return signal


def to_tensors(split: Split, device: torch.device | None = None) -> list[torch.Tensor]:
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in split.inputs.values()]
    return tensors if device is None else [t.to(device) for t in tensors]


@torch.no_grad()
def predict_logits(model: nn.Module, split: Split, batch_size: int = 512) -> np.ndarray:
    model.eval()
    device = module_device(model)
    outs = [
        model(*to_tensors(b, device)).float().cpu().numpy() for _, b in split.batches(batch_size)
    ]
    return np.concatenate(outs)


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(-1) == y).mean())


def train_student(
    student: nn.Module,
    train: Split,
    val: Split | None,
    config: TrainConfig,
    method: Method | None = None,
    teacher: TeacherSignal | None = None,
    description: str = "distill",
    checkpoint: str | Path | None = None,
    resume: bool = False,
    val_score: Callable[[nn.Module], float] | None = None,
    dist: DistContext | None = None,
    augment: Augment | None = None,
) -> TrainHistory:
    """Train ``student`` in place; keeps the weights of the best validation epoch.

    With ``method=None`` this is plain supervised training (used for the default teacher and for
    the from-scratch baseline). Raises :class:`DivergedError` on a non-finite loss or teacher
    output. ``val_score(student)`` (higher is better) replaces validation accuracy, e.g. for
    embeddings or unlabelled data.

    With ``checkpoint`` (a file path) the training state is saved there every
    ``config.checkpoint_every`` seconds (at the first step boundary after; 0: at every epoch's
    end) and when training ends, and SIGINT/SIGTERM stop the loop at the next step boundary: the
    state is saved and :class:`Interrupted` raised. ``resume=True`` continues from that file and
    ends with the same weights as an uninterrupted run. Torch's thread count is set first
    (:mod:`edgekd.train.threads`: an override, or measured once per process on a copy).

    ``dist`` (see :mod:`edgekd.train.distributed`; None: one process) trains on several workers:
    each takes its shard of every global batch, DDP averages the gradients, only rank 0 writes the
    checkpoint, and rank 0 reads it on resume for every worker (any worker count).
    ``augment`` is applied once per batch, before both the student and the teacher signal see it
    (consistent teaching); a view without labels (mixup) is taught by the teacher alone.
    ``config.patience`` stops training after that many epochs without a better validation score;
    ``config.time_budget`` at the first epoch end after that many seconds (``history.stopped``);
    ``config.max_steps`` after that many steps, mid-epoch. ``config.device``/``precision``: see
    :mod:`edgekd.train.device` (modules go back at the end).
    """
    if augment is not None and getattr(teacher, "by_index", False):
        raise ValueError("cached teacher logits cannot teach augmented views; use live_teacher")
    fit_training_threads(lambda: _trial_step(student, train, config, augment), dist is not None)
    steps_per_epoch = math.ceil(train.n / config.batch_size)
    run = _start(student, method, teacher, config, steps_per_epoch, dist)
    placed = OnDevice(run.device, student, method, getattr(teacher, "module", None))
    if resume:  # (dist) rank 0 reads the file for every worker
        load = load_training_state
        run.restore(load(checkpoint) if dist is None else dist.from_main(load, checkpoint))
    # -- distributed: DDP wrappers; the plain student and method keep the state dicts (dist) --
    model = student if dist is None else dist.wrap(student)
    loss_fn = method if dist is None or method is None else dist.wrap_method(method)
    writes = dist is None or dist.is_main

    def stopping(stop) -> bool:  # (dist) all workers stop at the same step when one is signalled
        return stop.requested if dist is None or checkpoint is None else dist.any(stop.requested)

    history = run.history
    parts = _StepParts(model, loss_fn, teacher, train, augment, dist, description, run.precision)
    # (dist) only rank 0 writes; the clock starts now, so a resumed run saves after the interval
    saver = CheckpointClock(checkpoint if writes else None, config.checkpoint_every)
    with (
        placed,  # the modules go back where they were when the loop ends, also on an error
        progress_bar(description, config.epochs, done=run.epoch) as bar,
        stop_on_signals(enabled=checkpoint is not None) as stop,
    ):
        bar.advance(0, info="resumed" if run.epoch else "")
        for epoch in range(run.epoch, config.epochs):
            steps = config.steps_in_epoch(epoch, steps_per_epoch)  # fewer: max_steps; 0: spent
            if steps < 1 or _out_of_patience(history, config.patience) or _out_of_time(run, parts):
                break
            student.train()
            if run.order is None:  # a fresh epoch: draw its order (as Split.batches does)
                run.order, run.step, run.total, run.count = run.rng.permutation(train.n), 0, 0.0, 0
            with train.feed(_epoch_batches(run, parts, steps)) as feed:  # (data)
                while run.step < steps:
                    if stopping(stop):
                        saver.save(run.state(epoch))
                        raise _stopped(description, stop.name, epoch, run, checkpoint)
                    _step(run, parts, epoch, next(feed)[1])
                    saver.advanced()
                    if saver.due() and run.step < steps:  # mid-epoch: step-level state
                        saver.save(run.state(epoch))
            _end_epoch(run, epoch, val, val_score)
            if saver.due(epoch_end=True):
                saver.save(run.state(run.epoch))
            bar.advance(
                info=f"loss {history.loss[-1]:.4f}"
                + (f"  val {history.val_accuracy[-1]:.3f}" if history.val_accuracy else "")
            )
        if saver.unsaved:  # training ended (last epoch or out of patience): always saved
            saver.save(run.state(run.epoch))
        if stopping(stop):  # the signal came after the last step: training is complete and saved
            raise Interrupted(
                f"{description}: stopped by {stop.name} after the last epoch; checkpoint written "
                f"to {checkpoint}"
            )
    if run.best_state is not None:
        student.load_state_dict(run.best_state)
    student.eval()
    return history


def _start(
    student, method, teacher, config: TrainConfig, steps_per_epoch: int, dist=None
) -> _RunState:
    """A fresh run: seeded generators, AdamW over the student's (and method's) parameters and
    the one-cycle schedule over every step, on the device and in the precision it trains with."""
    device = training_device(config.device, dist)
    precision = resolve_precision(config.precision, device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    params = list(student.parameters()) + (list(method.parameters()) if method else [])
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, total_steps=config.total_steps(steps_per_epoch)
    )
    return _RunState(student, method, opt, sched, rng, config, teacher, device, precision)


def _out_of_patience(history: TrainHistory, patience: int) -> bool:
    """Checked at the start of an epoch, from the history alone, so a resumed run stops alike."""
    seen = len(history.val_accuracy)
    return bool(patience) and seen > 0 and seen - 1 - history.best_epoch >= patience


def _out_of_time(run: _RunState, parts: _StepParts) -> bool:
    """``config.time_budget`` spent: checked where an epoch starts (the previous one's end),
    never before the first, from the seconds the checkpoint holds, so a resumed run stops alike
    (with the same clock); (dist) every worker stops when one has spent it."""
    if run.order is not None or run.epoch == 0 or run.budget.seconds is None:
        return False
    spent = run.budget.exhausted()
    if parts.dist is not None:
        spent = parts.dist.any(spent)
    if spent:
        best = run.history.best_epoch
        run.history.stopped = (
            f"time budget of {run.budget.seconds:g} s spent after epoch {run.epoch} of "
            f"{run.config.epochs}; kept "
            + (f"the best epoch ({best + 1})" if best >= 0 else "the last epoch")
        )
        if parts.dist is None or parts.dist.is_main:  # one line, also with the bars silenced
            print(f"edgekd: note: {parts.description}: {run.history.stopped}", file=sys.stderr)
    return spent


def _validate(
    student: nn.Module, val: Split | None, val_score: Callable[[nn.Module], float] | None
) -> float | None:
    if val_score is not None:
        return float(val_score(student))
    if val is not None and val.y is not None:
        return accuracy(predict_logits(student, val), val.y)
    return None


class _RunState:
    """Everything a training step depends on, to and from a checkpoint."""

    def __init__(
        self, student, method, opt, sched, rng, config: TrainConfig, signal=None, device=None,
        precision: str = "fp32",
    ) -> None:  # fmt: skip
        self.student, self.method, self.opt, self.sched, self.rng = student, method, opt, sched, rng
        self.config = config
        self.signal = signal if hasattr(signal, "state_dict") else None  # it trains: keep its state
        self.history = TrainHistory()
        self.best_state: dict | None = None
        self.best_score = -math.inf
        self.epoch, self.step, self.total, self.count = 0, 0, 0.0, 0
        self.order: np.ndarray | None = None
        self.device, self.precision = device or torch.device("cpu"), precision
        self.scaler = gradient_scaler(self.device, precision)  # fp16 only, else None
        self.budget = TimeBudget(config.time_budget)  # counts from the start of training

    def state(self, epoch: int) -> dict:
        return {
            "config": self.config.settings(),
            "epoch": epoch,
            "step": self.step if self.order is not None else 0,
            "order": None if self.order is None else torch.from_numpy(self.order.copy()),
            "total": float(self.total),
            "count": int(self.count),
            "student": self.student.state_dict(),
            "method": self.method.state_dict() if self.method is not None else {},
            "teacher_signal": self.signal.state_dict() if self.signal is not None else {},
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": self.rng.bit_generator.state,
            "history": self.history.to_dict(),
            "best_state": self.best_state,
            "best_score": float(self.best_score),
            "spent_s": self.budget.spent(),  # a resumed run's time budget goes on from here
            "intra_op_threads": torch.get_num_threads(),  # a resumed run keeps it (threads.py)
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "cuda_rng": (
                torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
            ),
        }

    def restore(self, state: dict) -> None:
        saved, now = _trained_settings(state["config"]), _trained_settings(self.config.settings())
        if saved != now:
            diff = {k: (v, saved.get(k)) for k, v in now.items()}
            diff = {k: v for k, v in diff.items() if v[0] != v[1]}
            raise BadInputError(
                "the checkpoint was written with other training settings "
                + ", ".join(f"{k}: {b} there, {a} now" for k, (a, b) in diff.items())
            )
        self.student.load_state_dict(state["student"])
        if self.method is not None:
            self.method.load_state_dict(state["method"])
        if self.signal is not None:
            self.signal.load_state_dict(state["teacher_signal"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.rng.bit_generator.state = state["numpy_rng"]
        h = state["history"]
        self.history = TrainHistory(list(h["loss"]), list(h["val_accuracy"]), h["best_epoch"])
        self.best_state, self.best_score = state["best_state"], state["best_score"]
        self.epoch, self.step = state["epoch"], state["step"]
        self.total, self.count = state["total"], state["count"]
        self.budget.resume(float(state.get("spent_s", 0.0)))  # absent before --time-budget
        self.order = None if state["order"] is None else state["order"].numpy()
        if state.get("intra_op_threads"):  # absent from checkpoints written before issue 15
            resume_threads(int(state["intra_op_threads"]))
        # (device) a checkpoint from another device or precision resumes without these
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)


def _trained_settings(settings: dict) -> dict:
    """The training settings a checkpoint must share with the run that resumes it: all but where
    and in what precision the arithmetic runs (a run started on a GPU resumes on a CPU) and how
    often it is saved or how long it may train (``TrainConfig.settings`` leaves those out; older
    checkpoints may have ``checkpoint_every``)."""
    skip = ("device", "precision", "checkpoint_every", "time_budget")
    return {k: v for k, v in settings.items() if k not in skip}


@dataclass(frozen=True)
class _StepParts:
    """What a training step uses besides the run state (which a checkpoint holds)."""

    model: nn.Module  # the student; DDP-wrapped under dist
    loss_fn: Method | None  # the method; DDP-wrapped under dist
    teacher: TeacherSignal | None
    train: Split
    augment: Augment | None
    dist: DistContext | None
    description: str
    precision: str = "fp32"  # resolved (edgekd.train.device); the device is the run state's


def _stopped(description: str, signal: str, epoch: int, run: _RunState, checkpoint) -> Interrupted:
    steps = math.ceil(len(run.order) / run.config.batch_size)
    return Interrupted(
        f"{description}: stopped by {signal} at epoch {epoch + 1}, step {run.step + 1} of "
        f"{steps}; checkpoint written to {checkpoint}"
    )


def _epoch_batches(run: _RunState, parts: _StepParts, steps: int) -> list[np.ndarray]:
    """The rows of this worker's batch at each step left in the epoch, in order."""
    size, dist = run.config.batch_size, parts.dist
    batches = [run.order[i * size : (i + 1) * size] for i in range(run.step, steps)]
    return batches if dist is None else [dist.shard(index) for index in batches]  # (dist)


def _step(run: _RunState, parts: _StepParts, epoch: int, batch: Split | None = None) -> None:
    """One optimizer step: batch, augmented view, forward, loss, backward; ``run`` advances.
    ``batch``: the step's rows already taken (``_epoch_batches``; None: taken here)."""
    config, dist = run.config, parts.dist
    index = run.order[run.step * config.batch_size : (run.step + 1) * config.batch_size]
    local = index if dist is None else dist.shard(index)  # (dist)
    batch = parts.train.take(local) if batch is None else batch
    if parts.augment is not None:
        batch = parts.augment(batch, run.rng)
    s_taps = run.method.student_taps if run.method else ()
    labels = None if batch.y is None else torch.from_numpy(batch.y).to(run.device)
    with autocast(run.device, parts.precision):  # forward passes and loss; weights stay fp32
        with capture(run.student, s_taps) as s_feats:
            logits = parts.model(*to_tensors(batch, run.device))
        loss = _loss(
            logits, labels, local, batch, parts.loss_fn, parts.teacher, s_feats, config, epoch
        )
    seen = loss.item() * batch.n if dist is None else dist.batch_sum(loss)  # (dist)
    if not math.isfinite(seen):
        raise DivergedError(
            f"{parts.description}: loss became {seen / len(index)} at epoch {epoch + 1}; "
            "lower --lr or check the teacher's outputs (no checkpoint written from it)"
        )
    run.opt.zero_grad(set_to_none=True)
    if run.scaler is None:
        loss.backward()
        run.opt.step()
    else:  # fp16: scaled so that small gradients do not underflow; steps with inf are skipped
        run.scaler.scale(loss).backward()
        run.scaler.step(run.opt)
        run.scaler.update()
    run.sched.step()
    run.total += seen
    run.count += len(index)
    run.step += 1


def _end_epoch(
    run: _RunState,
    epoch: int,
    val: Split | None,
    val_score: Callable[[nn.Module], float] | None,
) -> None:
    """The epoch's mean loss, validation and the best weights so far; ``run`` is at the start of
    the next epoch (what an epoch-end checkpoint holds)."""
    history = run.history
    history.loss.append(run.total / run.count)
    run.order, run.epoch = None, epoch + 1
    score = _validate(run.student, val, val_score)
    if score is not None:
        history.val_accuracy.append(score)
        if score > run.best_score:  # a NaN score is never the best
            run.best_score, history.best_epoch = score, epoch
            run.best_state = copy.deepcopy(run.student.state_dict())


def _trial_step(student: nn.Module, train: Split, config: TrainConfig, augment: Augment | None):
    """A training step of a copy of ``student`` on a few real batches (augmented as training
    will), for timing thread counts; its own generator, so the training's is untouched."""
    rng = np.random.default_rng(0x7E57)
    index = rng.permutation(train.n)
    batches = []
    for i in range(min(3, math.ceil(train.n / config.batch_size))):
        batch = train.take(index[i * config.batch_size : (i + 1) * config.batch_size])
        batches.append(to_tensors(augment(batch, rng) if augment is not None else batch))
    return model_step_trial(student, batches)


def _loss(logits, labels, index, batch, method, teacher, s_feats, config, epoch) -> torch.Tensor:
    ce = F.cross_entropy(logits, labels) if labels is not None else None
    if method is None or teacher is None:
        if ce is None:
            raise ValueError("training without a teacher needs labels")
        return ce
    t_logits, t_feats = teacher(index, batch)
    # (device) cached logits and an ONNX or command teacher answer on the CPU
    t_logits = t_logits.to(logits.device)
    t_feats = {k: v.to(logits.device) if torch.is_tensor(v) else v for k, v in t_feats.items()}
    if not torch.isfinite(t_logits).all():
        raise DivergedError("teacher produced NaN or infinite outputs; check the teacher and data")
    kd_loss = method.loss(
        DistillBatch(logits, t_logits, labels, dict(s_feats), t_feats, epoch, config.epochs)
    )
    if ce is None:
        return kd_loss
    return config.alpha * ce + (1.0 - config.alpha) * kd_loss
