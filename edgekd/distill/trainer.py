"""The one training loop: hard-label CE weighted by alpha plus a method's distillation loss.

The teacher reaches the loop only through a ``TeacherSignal`` (cached logits for a frozen teacher,
or a live module for online strategies), so the loop does not know which strategy is running.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.data import Split
from edgekd.distill.methods import DistillBatch, Method
from edgekd.distill.taps import capture
from edgekd.errors import DivergedError
from edgekd.progress import progress_bar


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    lr: float = 3e-3
    batch_size: int = 64
    weight_decay: float = 1e-4
    alpha: float = 0.1  # weight of the hard-label CE; (1 - alpha) weights the distillation loss
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.lr <= 0 or self.batch_size < 1:
            raise ValueError("lr must be > 0 and batch_size >= 1")


@dataclass
class TrainHistory:
    loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    best_epoch: int = -1

    def to_dict(self) -> dict:
        return {"loss": self.loss, "val_accuracy": self.val_accuracy, "best_epoch": self.best_epoch}


# A teacher signal maps (indices into the training split, the batch) to teacher logits and taps.
TeacherSignal = Callable[[np.ndarray, Split], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def cached_teacher(logits: np.ndarray) -> TeacherSignal:
    """A frozen teacher whose logits over the training split were computed once."""
    table = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))

    def signal(index: np.ndarray, _batch: Split):
        return table[torch.from_numpy(index)], {}

    return signal


def live_teacher(teacher: nn.Module, taps: tuple[str, ...] = ()) -> TeacherSignal:
    """A frozen teacher run on each batch (needed for feature taps and augmented views)."""
    teacher.eval()

    def signal(_index: np.ndarray, batch: Split):
        with torch.no_grad(), capture(teacher, taps) as feats:
            logits = teacher(*to_tensors(batch))
        return logits, dict(feats)

    return signal


def to_tensors(split: Split) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(a)) for a in split.inputs.values()]


@torch.no_grad()
def predict_logits(model: nn.Module, split: Split, batch_size: int = 512) -> np.ndarray:
    model.eval()
    outs = [model(*to_tensors(b)).float().numpy() for _, b in split.batches(batch_size)]
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
) -> TrainHistory:
    """Train ``student`` in place; keeps the weights of the best validation epoch.

    With ``method=None`` this is plain supervised training (used for the default teacher and for
    the from-scratch baseline). Raises :class:`DivergedError` on a non-finite loss or teacher
    output.
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    params = list(student.parameters()) + (list(method.parameters()) if method else [])
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * math.ceil(train.n / config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps)
    history = TrainHistory()
    best_state, best_acc = None, -1.0
    s_taps = method.student_taps if method else ()
    with progress_bar(description, config.epochs) as bar:
        for epoch in range(config.epochs):
            student.train()
            total, count = 0.0, 0
            for index, batch in train.batches(config.batch_size, rng):
                with capture(student, s_taps) as s_feats:
                    logits = student(*to_tensors(batch))
                labels = None if batch.y is None else torch.from_numpy(batch.y)
                loss = _loss(logits, labels, index, batch, method, teacher, s_feats, config, epoch)
                if not torch.isfinite(loss):
                    raise DivergedError(
                        f"{description}: loss became {loss.item()} at epoch {epoch + 1}; "
                        "lower --lr or check the teacher's outputs (no checkpoint written from it)"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * batch.n
                count += batch.n
            history.loss.append(total / count)
            if val is not None and val.y is not None:
                acc = accuracy(predict_logits(student, val), val.y)
                history.val_accuracy.append(acc)
                if acc > best_acc:
                    best_acc, history.best_epoch = acc, epoch
                    best_state = copy.deepcopy(student.state_dict())
            bar.advance(
                info=f"loss {history.loss[-1]:.4f}"
                + (f"  val acc {history.val_accuracy[-1]:.3f}" if history.val_accuracy else "")
            )
    if best_state is not None:
        student.load_state_dict(best_state)
    student.eval()
    return history


def _loss(logits, labels, index, batch, method, teacher, s_feats, config, epoch) -> torch.Tensor:
    ce = F.cross_entropy(logits, labels) if labels is not None else None
    if method is None or teacher is None:
        if ce is None:
            raise ValueError("training without a teacher needs labels")
        return ce
    t_logits, t_feats = teacher(index, batch)
    if not torch.isfinite(t_logits).all():
        raise DivergedError("teacher produced NaN or infinite outputs; check the teacher and data")
    kd_loss = method.loss(
        DistillBatch(logits, t_logits, labels, dict(s_feats), t_feats, epoch, config.epochs)
    )
    if ce is None:
        return kd_loss
    return config.alpha * ce + (1.0 - config.alpha) * kd_loss
