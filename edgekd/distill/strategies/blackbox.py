"""Black-box distillation: the teacher is reachable only through its outputs.

An ONNX file run with ONNX Runtime, or an external command (protocol in
:mod:`edgekd.teacher.blackbox`), queried once over the training split. The student learns from the
full distribution, from top-K probabilities only, or from the teacher's hard labels only (then with
plain CE on those labels: knowledge transfer through a labelled transfer set). Methods that need
teacher activations are refused: a black box has none to give.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edgekd.data import Split
from edgekd.distill.strategies import DistillJob, StrategyResult, register_strategy
from edgekd.distill.strategies._common import prepare_method, val_accuracy
from edgekd.teacher.blackbox import OutputMode, open_teacher, query, teacher_targets
from edgekd.train.loop import cached_teacher, train_student


@register_strategy(
    "blackbox",
    "Teacher known only by its outputs (ONNX file or command): full probs, top-k, or labels",
    "Bucilua et al. 2006, https://doi.org/10.1145/1150402.1150464 (labelled transfer set)",
)
def blackbox(job: DistillJob) -> StrategyResult:
    opts, train = job.options, job.data.train
    mode = OutputMode.parse(opts.teacher_output)
    # Set up the method first: a method that needs teacher activations fails before any query.
    method = None if mode.kind == "labels" else prepare_method(job, job.student, None)
    teacher = open_teacher(opts.teacher_onnx, opts.teacher_cmd, opts.command_timeout_s)
    targets = teacher_targets(query(teacher, train), mode, job.data.num_classes, str(teacher))
    info = {
        "teacher_signal": f"black box ({teacher}), queried once over {train.n} training samples",
        "teacher_output": str(mode),
        "learns_from": targets.note,
    }
    if train.y is not None:
        info["teacher_train_accuracy"] = float(np.mean(targets.labels == train.y))
    if method is None:  # hard labels only: plain supervised training on them
        relabelled = Split(train.inputs, targets.labels)
        config = replace(job.train, alpha=1.0)
        history = train_student(
            job.student, relabelled, job.data.val, config, None, None, "distill", dist=job.dist,
            **job.stage("distill"),
        )  # fmt: skip
        info["method"] = "CE on the teacher's labels (the method's loss needs soft outputs)"
    else:
        signal = cached_teacher(targets.logits)
        history = train_student(
            job.student, train, job.data.val, job.train, method, signal, "distill", dist=job.dist,
            **job.stage("distill"),
        )  # fmt: skip
        info["method"] = method.describe()
    info["val_accuracy"] = val_accuracy(job.student, job.data.val)
    return StrategyResult(job.student, history, info)
