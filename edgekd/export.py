"""torch -> ONNX: export with a dynamic batch axis, check the graph, prove parity with PyTorch.

A model that fails the checker or disagrees with PyTorch beyond the thresholds is an error and
leaves no file behind (written under a temporary name, renamed only after every check passed).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.errors import ExportError, ParityError
from edgekd.fileio import atomic_path


@dataclass(frozen=True)
class ParityThresholds:
    max_abs_diff: float = 1e-3
    min_top1_agreement: float = 0.999


@dataclass(frozen=True)
class ExportResult:
    path: str
    opset: int
    input_names: tuple[str, ...]
    max_abs_diff: float
    top1_agreement: float
    parity_samples: int

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def onnx_parity(
    onnx_path: str | Path, model: nn.Module, inputs: dict[str, np.ndarray], batch_size: int = 256
) -> tuple[float, float]:
    """Max abs difference and top-1 agreement of ONNX Runtime (CPU) versus PyTorch."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
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
        max_diff = max(max_diff, float(np.abs(got - want).max()))
        agree += int((got.argmax(-1) == want.argmax(-1)).sum())
    return max_diff, agree / n


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example_inputs: dict[str, np.ndarray],
    opset: int = 17,
    parity_inputs: dict[str, np.ndarray] | None = None,
    thresholds: ParityThresholds = ParityThresholds(),
) -> ExportResult:
    """Export ``model`` to ``path`` and check it.

    >>> export_onnx(student, "student.onnx", {"x": x[:1]}, opset=17, parity_inputs={"x": x_test})
    ... # doctest: +SKIP
    """
    import onnx

    model = model.eval()
    names = tuple(example_inputs)
    args = tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in example_inputs.values())
    dynamic = {n: {0: "batch"} for n in names} | {"logits": {0: "batch"}}
    with atomic_path(path, suffix=".onnx") as tmp:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # The TorchScript-based exporter: fast, no onnxscript needed, and what every
                # ONNX Runtime quantization recipe is written against.
                torch.onnx.export(
                    model,
                    args,
                    str(tmp),
                    dynamo=False,
                    input_names=list(names),
                    output_names=["logits"],
                    dynamic_axes=dynamic,
                    opset_version=opset,
                )
        except Exception as exc:
            raise ExportError(_explain_export_failure(model, exc)) from None
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except Exception as exc:
            raise ExportError(
                f"exported graph fails onnx.checker: {str(exc).splitlines()[0]}"
            ) from None
        parity_inputs = parity_inputs or example_inputs
        diff, agree = onnx_parity(tmp, model, parity_inputs)
        if diff > thresholds.max_abs_diff or agree < thresholds.min_top1_agreement:
            raise ParityError(
                f"{Path(path).name}: ONNX Runtime disagrees with PyTorch (max abs diff {diff:.3g} "
                f"> {thresholds.max_abs_diff:g} or top-1 agreement {agree:.4f} < "
                f"{thresholds.min_top1_agreement}); no file written"
            )
    n = len(next(iter(parity_inputs.values())))
    return ExportResult(str(path), opset, names, diff, agree, n)


def _explain_export_failure(model: nn.Module, exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    hint = ""
    if "Unsupported" in text or "not supported" in text:
        hint = (
            " (hint: lower-level ops or a newer --opset may export; see README 'Export problems')"
        )
    elif "data-dependent" in text.lower() or "control flow" in text.lower():
        hint = " (hint: replace Python control flow on tensor values with torch.where)"
    return f"ONNX export of {type(model).__name__} failed: {text}{hint}"
