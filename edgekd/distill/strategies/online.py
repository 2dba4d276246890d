"""Online distillation: Deep Mutual Learning (Zhang, Xiang, Hospedales & Lu, 2018).

Paper: https://arxiv.org/abs/1706.00384
The student and a peer train together, each distilling from the other's outputs on the same batch
with the chosen method. DML's loss, CE + KL(p_peer || p_self), is ``kd`` at T = 1 with alpha = 0.5
(half of it: the same ratio). The peer is a copy of the teacher that keeps learning (default) or a
second, freshly initialised student (``peer="student"``, the paper's two-student setting).
The student trains in the one training loop; the peer is updated inside the student's teacher
signal, from the student's outputs on that batch (captured with a forward hook). Both therefore
update from each other's pre-step predictions; the paper alternates the two updates, which differs
by one optimiser step of staleness. In fp16 (``--precision fp16`` on CUDA) the peer's loss is
scaled by a gradient scaler of its own, as the student's is in ``edgekd.train.loop``.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from edgekd.distill.methods import DistillBatch
from edgekd.distill.strategies import DistillJob, StrategyResult, register_strategy
from edgekd.distill.strategies._common import fresh_like, prepare_method, val_accuracy
from edgekd.errors import BadInputError, DivergedError
from edgekd.train.device import autocast, gradient_scaler, resolve_precision, training_device
from edgekd.train.loop import to_tensors, train_student
from edgekd.train.taps import capture

OUTPUT = ""  # the root module's name in named_modules(): its output is the logits


@register_strategy(
    "online",
    "Deep mutual learning: student and peer (teacher copy or second student) teach each other",
    "Zhang et al. 2018, https://arxiv.org/abs/1706.00384",
)
def online(job: DistillJob) -> StrategyResult:
    cfg, train = job.train, job.data.train
    if job.options.peer == "teacher":
        if job.teacher is None:
            raise BadInputError("strategy 'online' with peer 'teacher' needs a PyTorch teacher")
        peer = copy.deepcopy(job.teacher)
    else:
        peer = fresh_like(job.student, cfg.seed + 1)
    student = job.student
    to_student = prepare_method(job, student, peer)  # the student learns from the peer
    to_peer = prepare_method(job, peer, student)  # and the peer from the student
    device = training_device(cfg.device, job.dist)  # the student's (train_student moves it there)
    peer.to(device)  # before its optimizer and DDP see it
    to_peer.to(device)
    precision = resolve_precision(cfg.precision, device)  # the student's, as train_student's
    scaler = gradient_scaler(device, precision)  # fp16 only (small gradients underflow), else None
    params = list(peer.parameters()) + list(to_peer.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(train.n / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.total_steps(steps_per_epoch)
    )
    peer_taps = tuple(dict.fromkeys(to_peer.student_taps + to_student.teacher_taps))
    step = 0  # the peer's own step count (its epoch for the method's schedules)
    # (dist) the peer learns under DDP too, on the same shard of each batch as the student
    peer_model = peer if job.dist is None else job.dist.wrap(peer)
    peer_loss = to_peer if job.dist is None else job.dist.wrap_method(to_peer)

    def signal(_index, batch):
        nonlocal step
        epoch, step = step // steps_per_epoch, step + 1
        s_logits = s_out[OUTPUT].detach()
        if s_logits.shape[0] != batch.n:  # pragma: no cover - the trainer runs the student first
            raise RuntimeError("online: the student's output for this batch was not captured")
        peer.train()
        with autocast(device, precision), capture(peer, peer_taps) as p_feats:
            p_logits = peer_model(*to_tensors(batch, device))
        labels = None if batch.y is None else torch.from_numpy(batch.y).to(device)
        kd = peer_loss.loss(
            DistillBatch(
                p_logits,
                s_logits,
                labels,
                {k: p_feats[k] for k in to_peer.student_taps},
                {k: s_out[k].detach() for k in to_peer.teacher_taps},
                epoch,
                cfg.epochs,
            )
        )
        loss = (
            kd
            if labels is None
            else cfg.alpha * F.cross_entropy(p_logits, labels) + (1.0 - cfg.alpha) * kd
        )
        if not torch.isfinite(loss):
            raise DivergedError(f"online: the peer's loss became {loss.item()}; lower --lr")
        _optimizer_step(loss, opt, scaler)
        sched.step()
        return p_logits.detach(), {k: p_feats[k].detach() for k in to_student.teacher_taps}

    def state_dict() -> dict:  # saved in the student's checkpoint, every epoch
        return {
            "peer": peer.state_dict(),
            "method": to_peer.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "step": step,
            "scaler": scaler.state_dict() if scaler is not None else {},
        }

    def load_state_dict(state: dict) -> None:
        nonlocal step
        peer.load_state_dict(state["peer"])
        to_peer.load_state_dict(state["method"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step = state["step"]
        if scaler is not None and state.get("scaler"):  # absent: written in another precision
            scaler.load_state_dict(state["scaler"])

    signal.state_dict, signal.load_state_dict = state_dict, load_state_dict
    with capture(student, (OUTPUT, *to_peer.teacher_taps)) as s_out:
        history = train_student(
            student, train, job.data.val, cfg, to_student, signal, "mutual", dist=job.dist,
            **job.stage("mutual"),
        )  # fmt: skip
    peer.eval()
    return StrategyResult(
        student,
        history,
        {
            "teacher_signal": f"live peer ({job.options.peer}), trained with the student",
            "peer": job.options.peer,
            "method": to_student.describe(),
            "val_accuracy": val_accuracy(student, job.data.val),
            "peer_val_accuracy": val_accuracy(peer, job.data.val),
        },
    )


def _optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler) -> None:
    """The peer's backward and step; with a scaler (fp16) scaled as the student's is, so that
    small gradients do not underflow, and a step with inf or NaN gradients skipped."""
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        opt.step()
        return
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
