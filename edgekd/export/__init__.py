"""torch -> ONNX: export with a dynamic batch axis, check the graph, prove parity with PyTorch.

Steps: TorchScript-based export at the target's opset (one or several inputs, float or integer,
e.g. token ids and an attention mask) -> ``onnx.checker`` full check -> strict shape inference
(shapes stored in the graph) -> parity of ONNX Runtime against PyTorch on real inputs ->
optional onnxslim simplification, kept only if the simplified graph passes the same checks.

A model that fails the checker or disagrees with PyTorch beyond the thresholds is an error and
leaves no file behind (everything is built in a temporary folder and renamed into place only after
every check passed). Export failures name the module and operator at fault
(:mod:`edgekd.export.diagnosis`).
"""

from __future__ import annotations

import dataclasses
import io
import math
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.errors import BadInputError, DataError, ExportError, ParityError
from edgekd.export.diagnosis import (
    capture_tracer_warnings,
    explain_control_flow,
    explain_export_failure,
    quiet_native_output,
    track_modules,
)
from edgekd.fileio import atomic_path


@dataclass(frozen=True)
class ParityThresholds:
    """ONNX Runtime must match PyTorch within these on the parity inputs."""

    max_abs_diff: float = 1e-3
    min_top1_agreement: float = 0.999

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_abs_diff) and self.max_abs_diff >= 0):
            raise BadInputError(f"max_abs_diff must be a number >= 0, got {self.max_abs_diff}")
        if not 0.0 <= self.min_top1_agreement <= 1.0:
            raise BadInputError(
                f"min_top1_agreement must be in [0, 1], got {self.min_top1_agreement}"
            )


@dataclass(frozen=True)
class ExportResult:
    path: str
    opset: int
    input_names: tuple[str, ...]
    max_abs_diff: float
    top1_agreement: float
    parity_samples: int
    input_dtypes: tuple[str, ...] = ()
    nodes: int = 0
    simplified: bool = False
    simplify_note: str = ""
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def onnx_parity(
    onnx_path: str | Path, model: nn.Module, inputs: dict[str, np.ndarray], batch_size: int = 256
) -> tuple[float, float]:
    """Max abs difference and top-1 agreement of ONNX Runtime (CPU) versus PyTorch.

    ``inputs`` are in the order of ``model.forward``'s positional arguments.
    """
    from edgekd.runtimes.ort_cpu import open_session

    sess = open_session(onnx_path)
    n = len(next(iter(inputs.values())))
    max_diff, agree = 0.0, 0
    model.eval()
    for start in range(0, n, batch_size):
        feed = {k: v[start : start + batch_size] for k, v in inputs.items()}
        got = sess.run(None, feed)[0]
        with torch.no_grad():
            want = model(
                *[torch.from_numpy(np.ascontiguousarray(v)) for v in feed.values()]
            ).numpy()
        if got.shape != want.shape:
            return math.inf, 0.0
        d = float(np.abs(got.astype(np.float64) - want).max(initial=0.0))
        max_diff = max(max_diff, d if math.isfinite(d) else math.inf)  # NaN counts as a failure
        agree += int((got.argmax(-1) == want.argmax(-1)).sum())
    return max_diff, agree / n


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example_inputs: dict[str, np.ndarray],
    opset: int = 17,
    parity_inputs: dict[str, np.ndarray] | None = None,
    thresholds: ParityThresholds = ParityThresholds(),
    simplify: bool = True,
) -> ExportResult:
    """Export ``model`` to ``path``, check it, and prove parity with PyTorch.

    ``example_inputs`` maps input names to arrays (batch first) in the order of ``forward``'s
    arguments; integer arrays (token ids, masks) become integer graph inputs.

    >>> export_onnx(student, "student.onnx", {"x": x[:1]}, opset=17, parity_inputs={"x": x_test})
    ... # doctest: +SKIP
    """
    import onnx

    _check_inputs(example_inputs, "example_inputs")
    parity_inputs = parity_inputs or example_inputs
    _check_inputs(parity_inputs, "parity_inputs")
    if list(parity_inputs) != list(example_inputs):
        raise DataError(
            f"parity inputs {list(parity_inputs)} do not match the model inputs "
            f"{list(example_inputs)}"
        )
    model = model.eval()
    names = tuple(example_inputs)
    proto, notes = _trace(model, _as_tensors(example_inputs), names, opset)
    proto = _check_and_infer(proto, "exported graph")
    n_parity = len(next(iter(parity_inputs.values())))
    with tempfile.TemporaryDirectory() as work:
        raw = Path(work) / "raw.onnx"
        onnx.save(proto, str(raw))
        diff, agree = onnx_parity(raw, model, parity_inputs)
        if not _within(diff, agree, thresholds):
            raise ParityError(
                f"{Path(path).name}: ONNX Runtime disagrees with PyTorch (max abs diff {diff:.3g}"
                f" vs allowed {thresholds.max_abs_diff:g}, top-1 agreement {agree:.4f} vs "
                f"required {thresholds.min_top1_agreement:g} on {n_parity} samples); no file "
                "written"
            )
        final, nodes, simplified, note = raw, len(proto.graph.node), False, "not requested"
        if simplify:
            slim = Path(work) / "slim.onnx"
            ok, note, slim_diff, slim_agree, slim_nodes = _simplify(
                raw, slim, model, parity_inputs, thresholds
            )
            if ok:
                final, diff, agree, nodes, simplified = (
                    slim,
                    slim_diff,
                    slim_agree,
                    slim_nodes,
                    True,
                )
        with atomic_path(path, suffix=".onnx") as tmp:
            shutil.copyfile(final, tmp)
    return ExportResult(
        path=str(path),
        opset=opset,
        input_names=names,
        max_abs_diff=diff,
        top1_agreement=agree,
        parity_samples=n_parity,
        input_dtypes=tuple(str(v.dtype) for v in example_inputs.values()),
        nodes=nodes,
        simplified=simplified,
        simplify_note=note,
        notes=tuple(notes),
    )


def export_checkpoint(
    checkpoint: str | Path,
    target: str = "mobile",
    data: str | None = None,
    out: str | Path | None = None,
    simplify: bool = True,
    thresholds: ParityThresholds = ParityThresholds(),
    seed: int = 0,
) -> ExportResult:
    """Export an edgekd safetensors checkpoint at the target's opset, parity-checked on the test
    split of ``data`` (digits by default; it must match the checkpoint's input shape).

    >>> export_checkpoint("runs/mobile/student.safetensors", "mobile")  # doctest: +SKIP
    """
    from edgekd.data import load_data
    from edgekd.students.checkpoint import load_model
    from edgekd.targets import load_target

    profile = load_target(target)
    model = load_model(checkpoint)
    bundle = load_data(data, seed=seed)
    want = tuple(model.edgekd_arch["sample_shape"])
    got = bundle.sample_shapes
    if len(got) != 1 or next(iter(got.values())) != want:
        raise DataError(
            f"{checkpoint}: the model takes one input of shape {want} per sample but data "
            f"'{bundle.name}' has {got}; pass the --data the model was trained on"
        )
    out = Path(out) if out else Path(checkpoint).with_suffix(".onnx")
    return export_onnx(
        model,
        out,
        bundle.example_inputs(1),
        profile.opset,
        parity_inputs=bundle.test.inputs,
        thresholds=thresholds,
        simplify=simplify,
    )


def trace_bytes(model: nn.Module, example_inputs: dict[str, np.ndarray], opset: int) -> bytes:
    """The fp32 ONNX file ``export_onnx`` writes for ``model`` (the same exporter and options,
    simplified by onnxslim where that works), without the checker and the parity run: sizing
    needs a candidate's size and speed, not a proof. The one place a model is traced to ONNX."""
    with torch.no_grad():
        args = _as_tensors(example_inputs)
        proto, _notes = _trace(model.eval(), args, tuple(example_inputs), opset)
    return _slimmed(proto).SerializeToString()


def _slimmed(proto):
    """onnxslim's graph, or ``proto`` itself when onnxslim is missing or fails (``export_onnx``
    keeps the raw graph then too)."""
    try:
        import onnxslim
    except ImportError:
        return proto
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return onnxslim.slim(proto)
    except Exception:  # a simplifier bug must not cost the user a valid export
        return proto


def _as_tensors(inputs: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values())


def _check_inputs(inputs: dict[str, np.ndarray], what: str) -> None:
    if not inputs:
        raise DataError(f"{what}: no inputs given")
    for name, value in inputs.items():
        if not isinstance(value, np.ndarray) or value.ndim < 1 or len(value) == 0:
            raise DataError(f"{what}: input '{name}' must be a non-empty array, batch first")


def _within(diff: float, agree: float, t: ParityThresholds) -> bool:
    return diff <= t.max_abs_diff and agree >= t.min_top1_agreement


def trace_model(model: nn.Module, args: tuple, input_names: tuple[str, ...],
                output_names: tuple[str, ...], dynamic_axes: dict[str, dict[int, str]],
                opset: int):
    """Trace ``model`` with named inputs/outputs and dynamic axes, checked by ``onnx.checker`` and
    strict shape inference: for graphs with several outputs (the LM's logits + KV cache, in
    ``edgekd.lm.export``). Returns the ONNX proto and the tracer's notes."""
    proto, notes = _trace(model, args, input_names, opset, output_names, dynamic_axes)
    return _check_and_infer(proto, "exported graph"), notes


def _trace(model: nn.Module, args: tuple, names: tuple[str, ...], opset: int,
           output_names: tuple[str, ...] = ("logits",),
           dynamic: dict[str, dict[int, str]] | None = None):
    """Run the TorchScript exporter; turn its failures and tracer warnings into ExportErrors."""
    import onnx

    if dynamic is None:
        dynamic = {n: {0: "batch"} for n in names} | {"logits": {0: "batch"}}
    buffer = io.BytesIO()
    with track_modules(model) as stack:
        try:
            with capture_tracer_warnings(stack) as tracer_notes, quiet_native_output():
                # The TorchScript-based exporter: fast, no onnxscript needed, and what every ONNX
                # Runtime quantization recipe is written against.
                torch.onnx.export(
                    model,
                    args,
                    buffer,
                    dynamo=False,
                    input_names=list(names),
                    output_names=list(output_names),
                    dynamic_axes=dynamic,
                    opset_version=opset,
                )
        except Exception as exc:
            raise ExportError(explain_export_failure(model, args, exc, stack, opset)) from None
    for note in tracer_notes:
        if note.control_flow:
            raise ExportError(explain_control_flow(note))
    notes = [f"tracer: {n.message} in {n.where} at {n.source}" for n in tracer_notes]
    return onnx.load_from_string(buffer.getvalue()), notes


def _check_and_infer(proto, what: str):
    """``onnx.checker`` full check, then strict shape inference whose shapes stay in the graph."""
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
        return onnx.shape_inference.infer_shapes(
            proto, check_type=True, strict_mode=True, data_prop=True
        )
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"{what} fails onnx.checker / shape inference: {first}") from None


def _simplify(
    raw: Path,
    dst: Path,
    model: nn.Module,
    inputs: dict[str, np.ndarray],
    thresholds: ParityThresholds,
) -> tuple[bool, str, float, float, int]:
    """onnxslim the graph; keep it only if it passes the checker and the same parity check."""
    import onnx

    try:
        import onnxslim
    except ImportError:
        return False, "onnxslim is not installed; graph kept as exported", 0.0, 0.0, 0
    before = len(onnx.load(str(raw)).graph.node)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slim = onnxslim.slim(onnx.load(str(raw)))  # not _slimmed: its failure is reported here
        slim = _check_and_infer(slim, "simplified graph")
        onnx.save(slim, str(dst))
        diff, agree = onnx_parity(dst, model, inputs)
    except Exception as exc:  # a simplifier bug must not cost the user a valid export
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return False, f"onnxslim failed ({first}); graph kept as exported", 0.0, 0.0, before
    after = len(slim.graph.node)
    if not _within(diff, agree, thresholds):
        return (
            False,
            f"onnxslim output broke parity (max abs diff {diff:.3g}); graph kept as exported",
            diff,
            agree,
            before,
        )
    return True, f"onnxslim: {before} -> {after} nodes, parity kept", diff, agree, after
