"""The teacher side of a run, whichever teacher it is: the embedded default or a user's own.

:func:`prepare_teaching` loads the teacher, fits the data to its inputs (shapes and dtypes checked
before any training), checks its output on two samples, and computes its outputs on every split
once (offline distillation; cached for user teachers, see ``edgekd.teacher.outputs``), which
:attr:`Teaching.outputs` hands to training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from edgekd.data import DataBundle, Split
from edgekd.data.inputs import check_inputs, spec_from_arrays
from edgekd.errors import BadInputError
from edgekd.teacher.outputs import TeacherOutputs, outputs_key, teacher_outputs
from edgekd.train.loop import predict_logits

TASKS = ("classification", "embedding", "causal-lm")  # causal-lm: edgekd.lm.pipeline


@dataclass
class Teaching:
    model: nn.Module  # teacher(*inputs) -> logits or vectors
    info: dict[str, Any]  # for report.teacher
    data: DataBundle  # the data fitted to the teacher's inputs
    num_outputs: int  # class count or embedding dimension: the student's output width
    params: int
    train_outputs: np.ndarray
    val_outputs: np.ndarray
    test_outputs: np.ndarray | None = None  # user teachers (the default's come from its bench)
    loaded: Any = None  # edgekd.teacher.user.LoadedTeacher for a user's teacher
    warnings: list[str] = field(default_factory=list)

    @property
    def outputs(self) -> TeacherOutputs | None:
        """The outputs the offline strategy teaches from (None: a black box, queried instead)."""
        if self.train_outputs is None:
            return None
        return TeacherOutputs(self.train_outputs, self.val_outputs)


def conform(data: DataBundle, spec, sources: dict[str, str]) -> DataBundle:
    """Every split fitted to ``spec`` (default: the data's own arrays, floats as float32)."""
    spec = spec or spec_from_arrays(data.train.inputs)
    return dataclasses.replace(
        data,
        train=check_inputs(spec, data.train, sources["train"]),
        val=check_inputs(spec, data.val, sources["val"]),
        test=check_inputs(spec, data.test, sources["test"]),
    )


def prepare_teaching(config, data: DataBundle, dist=None) -> Teaching:
    """``config`` is a ``DistillConfig``; see the module docstring. ``dist``
    (``edgekd.train.distributed.DistContext``): the workers share the teacher's work."""
    sources = {
        "train": config.data or data.name,
        "val": config.val_data or config.data or data.name,
        "test": config.test_data or config.data or data.name,
    }
    if config.teacher is None:
        return _default_teaching(config, conform(data, None, sources), dist)
    return _user_teaching(config, data, sources, dist)


def _default_teaching(config, data: DataBundle, dist=None) -> Teaching:
    from edgekd.teacher.default import default_teacher

    if config.task != "classification":
        raise BadInputError(f"--task {config.task} needs your own --teacher")
    if data.train.y is None:
        raise BadInputError(
            f"{data.name}: the default teacher is trained on labels and this data has none; "
            "pass --teacher"
        )
    model, info = default_teacher(data, seed=config.seed, epochs=config.teacher_epochs, dist=dist)
    return Teaching(
        model,
        info.to_dict(),
        data,
        data.num_classes,
        info.params,
        teacher_outputs(
            model, data.train, None, "teacher outputs (train)", dist=dist, device=config.device
        ),
        predict_logits(model, data.val),
    )


def _user_teaching(config, data: DataBundle, sources: dict[str, str], dist=None) -> Teaching:
    from edgekd.teacher.user import load_teacher, probe_teacher
    from edgekd.usercode import parse_factory

    loaded = load_teacher(
        config.teacher,
        weights=config.teacher_weights,
        output=config.teacher_output,
        trust_checkpoint=config.trust_checkpoint,
        seed=config.seed,
        task=config.task,
    )
    data = conform(data, loaded.inputs, sources)
    loaded.bind(tuple(data.train.inputs))
    width = probe_teacher(loaded, data.train, config.task)
    if config.task == "classification" and data.num_classes > width:
        raise BadInputError(
            f"{data.name}: labels go up to {data.num_classes - 1}, but the teacher has only "
            f"{width} outputs"
        )
    outputs = {}
    for name in ("train", "val", "test"):
        split: Split = getattr(data, name)
        outputs[name] = teacher_outputs(
            loaded.module,
            split,
            outputs_key(loaded.fingerprint, split),
            description=f"teacher outputs ({name})",
            dist=dist,
            device=config.device,
        )
    info = {
        **loaded.to_dict(),
        "path": loaded.weights or config.teacher,
        "val_accuracy": _accuracy(outputs["val"], data.val.y, config.task),
        "train_seconds": 0.0,
    }
    warnings = []
    if loaded.trusted:
        warnings.append(
            f"--trust-checkpoint was given: {config.teacher}"
            + (f" / {config.teacher_weights}" if config.teacher_weights else "")
            + " was loaded with code execution allowed"
        )
    if parse_factory(config.teacher):
        info["note"] = "a factory is Python code and was run"
    num_classes = width if config.task == "classification" else data.num_classes
    data = dataclasses.replace(data, num_classes=num_classes)
    return Teaching(
        loaded.module,
        info,
        data,
        width,
        loaded.params,
        outputs["train"],
        outputs["val"],
        outputs["test"],
        loaded,
        warnings,
    )


def _accuracy(outputs: np.ndarray, y: np.ndarray | None, task: str) -> float | None:
    if task != "classification" or y is None:
        return None
    return float((outputs.argmax(-1) == y).mean())
