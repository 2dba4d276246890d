"""Training a causal LM: next-token cross-entropy weighted by alpha plus a method's loss.

``loss = alpha * CE(student, next tokens) + (1 - alpha) * method.loss(view)``, where the view the
method sees is the training block with the teacher's cached top-k (``edgekd.lm.topk``) or its
live logits; for GKD a share ``method.on_policy`` of the steps is on sequences the student
samples itself, scored by the live teacher; for sequence-level KD it is the teacher's greedy
continuation of the block's first half (``edgekd.lm.sample``). With ``alpha = 1`` (scratch, the
default teacher) no teacher work is done.

The machinery is the classifier loop's (``edgekd.train``): the device and precision
(``--device``, ``--precision``), torch threads measured once per process, a budget of optimizer
steps (not epochs: a corpus is one long stream), the one-cycle schedule, the training state saved
on a clock and on SIGINT/SIGTERM, and ``--time-budget``. The weights of the step with the best
validation perplexity are kept.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.distill.methods import DistillBatch, Method
from edgekd.distill.methods._tokens import LOG_FLOOR, top_k_scores
from edgekd.errors import DivergedError, Interrupted
from edgekd.lm.head import LossOfChunk, head_loss
from edgekd.lm.sample import continue_tokens, generated_mask, prompt_length
from edgekd.lm.topk import TopK
from edgekd.progress import progress_bar
from edgekd.train.device import (
    PRECISIONS,
    OnDevice,
    autocast,
    gradient_scaler,
    resolve_precision,
    training_device,
    valid_device_spec,
)
from edgekd.train.interrupt import stop_on_signals
from edgekd.train.resume import CheckpointClock, TimeBudget, load_training_state
from edgekd.train.threads import fit_training_threads, model_step_trial, resume_threads


@dataclass(frozen=True)
class LMTrainConfig:
    steps: int = 300  # optimizer steps: the step budget
    lr: float = 3e-3  # peak of the one-cycle schedule
    batch_size: int = 16  # blocks per step
    weight_decay: float = 0.01
    alpha: float = 1.0  # weight of the next-token CE; (1 - alpha) weights the method's loss
    seed: int = 0
    evals: int = 10  # validation perplexity measured this many times (and the best kept)
    device: str = "cpu"
    precision: str = "fp32"
    # how often the state is saved and how long training may run: not what is trained
    checkpoint_every: float = field(default=0.0, compare=False, repr=False)
    time_budget: float | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not valid_device_spec(self.device) or self.precision not in PRECISIONS:
            raise ValueError(f"unknown device {self.device!r} or precision {self.precision!r}")
        if self.steps < 1 or self.batch_size < 1 or self.evals < 1:
            raise ValueError("steps, batch_size and evals must be >= 1")
        if not 0.0 <= self.alpha <= 1.0 or not self.lr > 0:
            raise ValueError(f"alpha must be in [0, 1] and lr > 0, got {self.alpha}, {self.lr}")

    def settings(self) -> dict:
        out = dataclasses.asdict(self)
        for k in ("checkpoint_every", "time_budget", "device", "precision"):
            del out[k]
        return out


@dataclass(frozen=True)
class TeacherSide:
    """What the student learns from besides the text: the cached top-k, the live teacher
    (needed for on-policy steps, or when nothing is cached), the teacher's sequences (seqkd)."""

    top_k: TopK | None = None
    live: nn.Module | None = None
    sequences: np.ndarray | None = None  # [N, context + 1], rows aligned with the blocks


@dataclass
class LMHistory:
    loss: list[float] = field(default_factory=list)  # mean training loss per evaluation interval
    val_perplexity: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    best_step: int = -1
    stopped: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def train_lm(
    student: nn.Module,
    train: np.ndarray,
    val: np.ndarray | None,
    config: LMTrainConfig,
    method: Method | None = None,
    teacher: TeacherSide | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    description: str = "distill",
    labels: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> LMHistory:
    """Train ``student`` (``input_ids`` -> logits) in place on ``train`` blocks [N, context + 1];
    keeps the weights of the best validation perplexity on ``val``. Raises DivergedError on a
    non-finite loss; with ``checkpoint`` the state is saved every ``config.checkpoint_every``
    seconds (0: at each evaluation) and on SIGINT/SIGTERM (then Interrupted is raised), and
    ``resume=True`` continues from it. ``labels`` (train, val), the same shapes as the blocks:
    the next-token targets where they differ from the blocks themselves, -100 (ignored) where a
    position is not learned, e.g. the prompt of a prompt -> answer pair (``edgekd.lm.blackbox``).

    >>> history = train_lm(student, corpus.blocks, held_out.blocks, LMTrainConfig(steps=200))
    ... # doctest: +SKIP
    """
    if method is not None and config.alpha < 1.0:
        _check_teacher(method, teacher)
    trial_x = torch.from_numpy(np.asarray(train[: config.batch_size, :-1]))
    fit_training_threads(lambda: model_step_trial(student, [[trial_x]]))
    run = _Run(student, method, teacher or TeacherSide(), train, val, config, description)
    run.labels, run.val_labels = labels if labels is not None else (None, None)
    if resume:
        run.restore(load_training_state(checkpoint))
    saver = CheckpointClock(checkpoint, config.checkpoint_every)
    every = max(1, math.ceil(config.steps / config.evals))
    with (
        OnDevice(run.device, student, run.teacher.live),
        progress_bar(description, config.steps, done=run.step) as bar,
        stop_on_signals(enabled=checkpoint is not None) as stop,
    ):
        while run.step < config.steps and run.history.stopped is None:
            if stop.requested:
                saver.save(run.state())
                raise Interrupted(
                    f"{description}: stopped by {stop.name} at step {run.step + 1} of "
                    f"{config.steps}; checkpoint written to {checkpoint}"
                )
            run.one_step()
            saver.advanced()
            bar.advance(info=f"loss {run.last_loss:.3f}")
            # the time budget is checked after every step, not only at the evaluations (60
            # steps apart by default, minutes at scale): a spent budget evaluates and stops now
            if run.step % every == 0 or run.step == config.steps or run.budget.exhausted():
                run.evaluate()
                bar.advance(0, info=f"val ppl {run.history.val_perplexity[-1]:.1f}")
                if saver.due(epoch_end=True):
                    saver.save(run.state())
            elif saver.due():
                saver.save(run.state())
        if saver.unsaved:
            saver.save(run.state())
    if run.best_state is not None:
        student.load_state_dict(run.best_state)
    student.eval()
    return run.history


def time_training_steps(
    student: nn.Module,
    train: np.ndarray,
    config: LMTrainConfig,
    method: Method | None = None,
    teacher: TeacherSide | None = None,
    steps: int = 3,
) -> float:
    """Mean seconds of ``steps`` training steps of a copy of ``student`` after a warm-up step,
    as :func:`train_lm` runs them (the same loss, chunks, device and threads); ``student`` and
    torch's random state are as before. What sizing calibrates its estimate on
    (``edgekd.lm.affordable.TrainingCap.calibrated``)."""
    rng = torch.get_rng_state()
    try:
        model = copy.deepcopy(student)
        # the schedule must span the timed steps, however few the run's own are
        config = dataclasses.replace(config, steps=max(config.steps, steps + 1))
        run = _Run(model, method, teacher or TeacherSide(), train, None, config, "timing")
        with OnDevice(run.device, model, run.teacher.live):
            run.one_step()  # warm-up: first-call allocations and kernel choices
            start = time.perf_counter()
            for _ in range(steps):
                run.one_step()
            if run.device.type == "cuda":
                torch.cuda.synchronize(run.device)
            return (time.perf_counter() - start) / steps
    finally:
        torch.set_rng_state(rng)


def _check_teacher(method: Method, teacher: TeacherSide | None) -> None:
    t = teacher or TeacherSide()
    if getattr(method, "teacher_sequences", False):
        if t.sequences is None:
            raise ValueError(f"{method.name} trains on the teacher's sequences: none were given")
    elif t.top_k is None and t.live is None:
        raise ValueError(f"{method.name} needs the teacher: its top-k or the live module")
    if getattr(method, "on_policy", 0.0) > 0 and t.live is None:
        raise ValueError(f"{method.name} samples on-policy sequences: it needs the live teacher")


@torch.no_grad()
def perplexity_of(
    model: nn.Module, blocks: np.ndarray, batch_size: int = 16, labels: np.ndarray | None = None
) -> float:
    """exp(mean next-token cross-entropy) over every position of ``blocks`` (with ``labels``,
    over the positions whose label is not -100)."""
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        block = torch.from_numpy(np.asarray(blocks[start : start + batch_size])).to(device)
        target = block if labels is None else torch.from_numpy(
            np.asarray(labels[start : start + batch_size])).to(device)  # fmt: skip
        y = target[:, 1:].flatten()
        ce = head_loss(model, block[:, :-1], lambda logits, part, y=y: F.cross_entropy(
            logits.float(), y[part], reduction="sum"))  # fmt: skip
        total, count = total + float(ce), count + int((y != -100).sum())
    return math.exp(min(total / max(count, 1), 700.0))


class _Run:
    """Everything a step depends on, to and from a checkpoint."""

    def __init__(self, student, method, teacher, train, val, config, description) -> None:
        self.student, self.method, self.teacher = student, method, teacher
        self.train, self.val, self.config, self.description = train, val, config, description
        self.device = training_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.sample_gen = torch.Generator().manual_seed(config.seed)
        params = [p for p in student.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(
            self.opt, max_lr=config.lr, total_steps=config.steps
        )
        self.step, self.order, self.pos = 0, self.rng.permutation(len(train)), 0
        self.total, self.count, self.last_loss = 0.0, 0, float("nan")
        self.history = LMHistory()
        self.labels = self.val_labels = None  # set by train_lm for masked targets
        self.best_state, self.best_score = None, math.inf
        self.budget = TimeBudget(config.time_budget)
        self.scaler = gradient_scaler(self.device, self.precision)  # fp16 only

    def next_rows(self) -> np.ndarray:
        """The next batch's block indices: an epoch over the blocks in a shuffled order."""
        take = min(self.config.batch_size, len(self.train))
        if self.pos + take > len(self.order):
            self.order, self.pos = self.rng.permutation(len(self.train)), 0
        rows = np.sort(self.order[self.pos : self.pos + take])  # sorted: memory-map friendly
        self.pos += take
        return rows

    def one_step(self) -> None:
        self.student.train()
        rows = self.next_rows()
        block = torch.from_numpy(np.asarray(self.train[rows])).to(self.device)
        x, y = block[:, :-1], block[:, 1:]
        if self.labels is not None:
            y = torch.from_numpy(np.asarray(self.labels[rows])).to(self.device)[:, 1:]
        alpha = self.config.alpha if self.method is not None else 1.0
        with autocast(self.device, self.precision):
            loss = self._loss(rows, x, y, alpha)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise DivergedError(
                f"{self.description}: loss became {value} at step {self.step + 1}; lower --lr "
                "or check the teacher's outputs"
            )
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.opt.step()
        else:  # fp16: scaled so that small gradients do not underflow; inf steps are skipped
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        self.sched.step()
        self.step, self.last_loss = self.step + 1, value
        self.total, self.count = self.total + value, self.count + 1

    def _loss(self, rows, x, y, alpha: float) -> torch.Tensor:
        """``alpha`` * the next-token CE on the block + (1 - alpha) * the method's loss on its
        view, the logits computed a chunk of tokens at a time (``edgekd.lm.head``); one pass
        over the block when the method's view is the block itself."""
        labels = y.flatten()
        count = (labels != -100).sum().clamp_min(1)

        def ce(logits: torch.Tensor, part: slice) -> torch.Tensor:
            return F.cross_entropy(logits.float(), labels[part], reduction="sum") / count

        if alpha == 1.0:
            return head_loss(self.student, x, ce)
        inputs, kd = self._method_view(rows, x, y, alpha, ce, count)
        if inputs is x:  # kd holds the weighted sum of both
            return head_loss(self.student, x, kd)
        kd_loss = head_loss(self.student, inputs, kd)
        return kd_loss if alpha == 0.0 else (
            alpha * head_loss(self.student, x, ce) + (1.0 - alpha) * kd_loss)  # fmt: skip

    def _method_view(self, rows, x, y, alpha: float, ce: LossOfChunk, count
                     ) -> tuple[torch.Tensor, LossOfChunk]:  # fmt: skip
        """What the method's loss is computed on and its loss on a chunk of those positions'
        logits: on the teacher's sequences or on-policy samples the method's loss alone; on the
        block ``x`` itself ``alpha`` * ``ce`` (the block's CE chunk) + (1 - alpha) * the method's
        loss (``count``: the labels that count, for the fused top-k pass)."""
        teacher = self.teacher
        if getattr(self.method, "teacher_sequences", False):
            seq = torch.from_numpy(np.asarray(teacher.sequences[rows])).to(self.device)
            mask = generated_mask(len(rows), seq.shape[1] - 1, self.device)
            return seq[:, :-1], self._chunk_loss(labels=seq[:, 1:], mask=mask)
        if getattr(self.method, "on_policy", 0.0) > self.rng.random():
            keep = prompt_length(x.shape[1])
            seq = continue_tokens(self.student, x[:, :keep], x.shape[1] + 1 - keep, greedy=False,
                                  generator=self.sample_gen)  # fmt: skip
            self.student.train()
            with torch.no_grad():
                t_logits = teacher.live(seq[:, :-1]).float()
            mask = generated_mask(len(rows), x.shape[1], self.device)
            return seq[:, :-1], self._chunk_loss(teacher=t_logits, mask=mask)
        if teacher.top_k is not None:
            return x, self._top_k_loss(*teacher.top_k.rows(rows, self.device), y, alpha, count)
        with torch.no_grad():
            t_logits = teacher.live(x).float()
        kd = self._chunk_loss(teacher=t_logits, labels=y)

        def both(logits: torch.Tensor, part: slice) -> torch.Tensor:
            return alpha * ce(logits, part) + (1.0 - alpha) * kd(logits, part)

        return x, both

    def _top_k_loss(self, log_probs, index, y, alpha: float, count) -> LossOfChunk:
        """``alpha`` * CE + (1 - alpha) * the method's loss on the cached top-k's k + 1 buckets,
        both from one softmax over the chunk's vocabulary (``methods._tokens.top_k_scores``,
        with its backward written out); the method gets the student's buckets computed and the
        teacher's clamped, as ``token_views`` would have made them."""
        method, step, steps = self.method, self.step, self.config.steps
        teacher = log_probs.flatten(0, 1).float().clamp_min(LOG_FLOOR)
        index, labels = index.flatten(0, 1), y.flatten()

        def loss(logits: torch.Tensor, part: slice) -> torch.Tensor:
            buckets, ce = top_k_scores(logits, index[part], labels[part])
            kd = method.loss(DistillBatch(buckets[None], teacher[part][None], labels[part][None],
                                          epoch=step, epochs=steps))  # fmt: skip
            return alpha * ce.sum() / count + (1.0 - alpha) * kd * (len(buckets) / len(labels))

        return loss

    def _chunk_loss(self, teacher=None, labels=None, mask=None) -> LossOfChunk:
        """The method's loss on a chunk of the flattened positions: the chunk's token mean
        times its share of the tokens that count, so that the chunks add up to the mean over
        all of them (every language-model method is a token mean, ``methods._tokens``)."""
        method, step, steps = self.method, self.step, self.config.steps
        teacher, labels, mask = (None if t is None else t.flatten(0, 1)
                                 for t in (teacher, labels, mask))  # fmt: skip
        total = mask.sum().clamp_min(1) if mask is not None else None

        def loss(logits: torch.Tensor, part: slice) -> torch.Tensor:
            def at(t):
                return None if t is None else t[part][None]

            t = at(teacher)
            if t is not None:  # live logits: the student's vocabulary
                t = t[..., : logits.shape[-1]]
            batch = DistillBatch(logits[None], t, at(labels), epoch=step, epochs=steps,
                                 mask=at(mask))  # fmt: skip
            if mask is None:  # the block with the teacher's outputs: every position counts
                return method.loss(batch) * (logits.shape[0] / len(teacher))
            return method.loss(batch) * (mask[part].sum() / total)

        return loss

    def evaluate(self) -> None:
        history = self.history
        history.loss.append(self.total / max(self.count, 1))
        self.total, self.count = 0.0, 0
        score = (
            perplexity_of(self.student, self.val, labels=self.val_labels)
            if self.val is not None else -self.step
        )  # fmt: skip
        history.val_perplexity.append(score if self.val is not None else math.nan)
        history.eval_steps.append(self.step)
        if score < self.best_score:
            self.best_score, history.best_step = score, self.step
            self.best_state = copy.deepcopy(self.student.state_dict())
        if self.budget.exhausted() and self.step < self.config.steps:
            history.stopped = (
                f"time budget of {self.budget.seconds:g} s spent after step {self.step} of "
                f"{self.config.steps}; kept the best step ({history.best_step})"
            )
            print(f"edgekd: note: {self.description}: {history.stopped}", file=sys.stderr)

    def state(self) -> dict:
        return {
            "settings": self.config.settings(),
            "student": self.student.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "sample_rng": self.sample_gen.get_state(),
            "numpy_rng": self.rng.bit_generator.state,
            "step": self.step, "pos": self.pos, "order": torch.from_numpy(self.order),
            "total": self.total, "count": self.count,
            "history": self.history.to_dict(),
            "best_state": self.best_state, "best_score": self.best_score,
            "spent_s": self.budget.spent(),
            "intra_op_threads": torch.get_num_threads(),
        }  # fmt: skip

    def restore(self, state: dict) -> None:
        if state.get("settings") != self.config.settings():
            raise ValueError("the checkpoint was written with other training settings")
        self.student.load_state_dict(state["student"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.sample_gen.set_state(state["sample_rng"])
        self.rng.bit_generator.state = state["numpy_rng"]
        self.step, self.pos, self.order = state["step"], state["pos"], state["order"].numpy()
        self.total, self.count = state["total"], state["count"]
        self.history = LMHistory(**state["history"])
        self.best_state, self.best_score = state["best_state"], state["best_score"]
        self.budget.resume(float(state["spent_s"]))
        resume_threads(int(state["intra_op_threads"]))
