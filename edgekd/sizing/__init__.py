"""Sizing a student to a target's budget: the largest candidate that fits every budget line.

Each candidate (a family at one width and depth, or a user's factory) is built, exported to ONNX
and measured where it can be measured exactly, and estimated where it cannot:

* ``params``: exact, the PyTorch parameter count (what the budget's ``params`` line checks).
* ``model_size_kb``: measured, the exported fp32 ONNX file; where the target runs int8, also the
  static int8 (QDQ) file that ``distill`` would write, quantized here with a few calibration
  samples (the scales differ from a full calibration, the file's size and graph do not).
* ``latency_ms``: *estimated* on the target device with the roofline model of
  ``edgekd.sizing.roofline``
  from the graph's per-node work and bytes (the device is not here to measure), for the fp32
  graph and for the int8 graph (every quantize/dequantize node counted); the host's own
  latency is measured too, for reference, and never compared with the budget.
* ``peak_memory_mb``: *estimated* as the runtime's own footprint (measured once per ONNX Runtime
  version in a fresh process, cached) plus ``MEMORY_FACTOR`` x (weights + peak activations). The
  factor is measured: fresh-process peak RSS of ONNX Runtime 1.32 grew by 1.95-2.0 MB per MB of
  weights (MLPs of 0.3-16.6 MB) and by 2.1 MB per MB of peak activation (a conv net with 8 MB of
  activations), on x86-64 Linux.
* ``share_of_teacher``: a student is at most ``MAX_SHARE_OF_TEACHER`` of the teacher's parameters.

Every line is checked at the precision the search is asked for (``fp32`` by default: the variant
``distill`` always produces; ``int8`` checks the int8 file's size, latency and memory). The chosen
candidate is the largest fitting one in a fixed order (parameters, then MACs): a larger budget
only adds fitting candidates, so it can never pick a smaller student.

The package: ``space`` (what is searched), ``candidate`` (one candidate's costs and lines, and the
``SizingRequest``), ``search`` (the search and its result), ``onnx_cost`` and ``roofline`` (the
graph's work and the device estimate), ``evidence`` (which families the teacher's structure and
the data's shape make plausible) and ``trial`` (``choose_student``: those families sized, then a
short trial between them and between augmentation levels). This module re-exports their public
names and holds the ``edgekd size`` verb. The runtime's own footprint is
``edgekd.bench.memory.runtime_baseline_mb``; the table is ``edgekd.report.sizing_table``.
"""

from __future__ import annotations

from typing import Any

from edgekd.bench.memory import RUNTIME_BASELINE_FALLBACK_MB, runtime_baseline_mb
from edgekd.sizing.candidate import (
    INT8_CALIBRATION_SAMPLES,
    MAX_SHARE_OF_TEACHER,
    MEMORY_FACTOR,
    Candidate,
    SizingRequest,
    build_candidate,
    check_lines,
    measure_candidate,
    quantize_bytes,
)
from edgekd.sizing.search import NothingFitsError, SizingResult, size_student_to_budget
from edgekd.sizing.space import FACTORY_DEPTHS, WIDTHS, SearchSpace, search_space

__all__ = [
    "FACTORY_DEPTHS",
    "INT8_CALIBRATION_SAMPLES",
    "MAX_SHARE_OF_TEACHER",
    "MEMORY_FACTOR",
    "RUNTIME_BASELINE_FALLBACK_MB",
    "WIDTHS",
    "Candidate",
    "NothingFitsError",
    "SearchSpace",
    "SizingRequest",
    "SizingResult",
    "build_candidate",
    "check_lines",
    "default_teacher_params",
    "measure_candidate",
    "quantize_bytes",
    "runtime_baseline_mb",
    "search_space",
    "size_for_target",
    "size_student_to_budget",
]


def __getattr__(name: str) -> Any:
    # ``default_teacher_params`` lives with the default teacher; imported on first use because
    # edgekd.teacher.default imports torch, which ``import edgekd.sizing`` (report.md's sizing
    # table) should not pay for.
    if name == "default_teacher_params":
        from edgekd.teacher.default import default_teacher_params

        return default_teacher_params
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def size_for_target(
    target: str,
    data: str | None = None,
    student: str | None = None,
    precision: str = "fp32",
    seed: int = 0,
    trial: bool = False,
) -> SizingResult:
    """``edgekd size``: load the target and data, read the default teacher's structure, size every
    plausible family against its parameters (``edgekd.sizing.trial``); ``trial``: train the
    default teacher (or reuse it from the cache) and run the short trial between the families.

    >>> size_for_target("iot").chosen.params <= 60_000  # doctest: +SKIP
    True
    """
    from types import SimpleNamespace

    from edgekd.config import DistillConfig
    from edgekd.data import load_data
    from edgekd.sizing.trial import choose_student
    from edgekd.targets import load_target

    bundle = load_data(data, seed=seed)
    profile = load_target(target)
    config = DistillConfig(target=target, data=data, student=student, seed=seed)
    if trial:
        from edgekd.teacher.prepare import prepare_teaching

        teaching = prepare_teaching(config, bundle)
    else:
        from edgekd.teacher.default import default_teacher_model

        model = default_teacher_model(bundle)
        teaching = SimpleNamespace(
            model=model, data=bundle, train_outputs=None, val_outputs=None, loaded=None,
            params=_teacher_params(bundle),
        )  # fmt: skip
    return choose_student(
        config, profile, teaching, bundle, "kd", "offline", run_trial=trial, precision=precision
    )


def _teacher_params(bundle):
    from edgekd.teacher.default import default_teacher_params

    return default_teacher_params(bundle)
