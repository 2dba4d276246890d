"""Quantization with ONNX Runtime: one frozen config type per mode, one handler per config type.

    quantize("student.onnx", Int8StaticConfig(calibration="minmax"), "student-int8.onnx", calib)

Static int8 uses the QDQ format (QuantizeLinear/DequantizeLinear pairs around each op), which
ONNX Runtime fuses into integer kernels where the CPU has them; dynamic int8 quantizes weights
ahead of time and activations at run time. The model is pre-processed with ONNX Runtime's
``quant_pre_process`` (shape inference + graph optimisation) before either.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.errors import BadInputError
from edgekd.fileio import atomic_path

CALIBRATIONS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class Int8DynamicConfig:
    """Weights int8 ahead of time, activations quantized per call (no calibration data)."""

    per_channel: bool = False

    @property
    def name(self) -> str:
        return "int8-dynamic"


@dataclass(frozen=True)
class Int8StaticConfig:
    """Weights and activations int8, activation ranges from calibration on real inputs."""

    per_channel: bool = True
    calibration: str = "minmax"
    num_samples: int = 256
    quant_format: str = "qdq"

    def __post_init__(self) -> None:
        if self.calibration not in CALIBRATIONS:
            raise BadInputError(
                f"calibration {self.calibration!r} unknown "
                f"(expected one of {', '.join(CALIBRATIONS)})"
            )
        if self.quant_format not in ("qdq", "qoperator"):
            raise BadInputError(
                f"quant_format must be 'qdq' or 'qoperator', got {self.quant_format!r}"
            )
        if self.num_samples < 1:
            raise BadInputError(f"num_samples must be >= 1, got {self.num_samples}")

    @property
    def name(self) -> str:
        return f"int8-static-{self.quant_format}"


QuantConfig = Int8DynamicConfig | Int8StaticConfig
HANDLERS: dict[type, Callable[..., None]] = {}


def handles(config_type: type):
    def wrap(fn):
        HANDLERS[config_type] = fn
        return fn

    return wrap


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over named arrays, one sample at a time."""

    def __init__(self, inputs: dict[str, np.ndarray], limit: int) -> None:
        n = min(limit, len(next(iter(inputs.values()))))
        self._feeds = iter([{k: v[i : i + 1] for k, v in inputs.items()} for i in range(n)])

    def get_next(self):
        return next(self._feeds, None)


@handles(Int8DynamicConfig)
def _dynamic(config: Int8DynamicConfig, src: Path, dst: Path, calibration) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src), str(dst), per_channel=config.per_channel, weight_type=QuantType.QInt8
    )


@handles(Int8StaticConfig)
def _static(config: Int8StaticConfig, src: Path, dst: Path, calibration) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if calibration is None:
        raise BadInputError("static int8 quantization needs calibration data (--data)")
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[config.calibration]
    fmt = QuantFormat.QDQ if config.quant_format == "qdq" else QuantFormat.QOperator
    quantize_static(
        str(src),
        str(dst),
        _Reader(calibration, config.num_samples),
        quant_format=fmt,
        per_channel=config.per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=method,
    )


def quantize(
    model_path: str | Path,
    config: QuantConfig,
    out_path: str | Path,
    calibration: dict[str, np.ndarray] | None = None,
) -> Path:
    """Quantize ``model_path`` with ``config`` into ``out_path`` (atomically)."""
    handler = HANDLERS.get(type(config))
    if handler is None:
        raise BadInputError(f"no quantization handler for {type(config).__name__}")
    model_path = Path(model_path)
    if not model_path.is_file():
        raise BadInputError(f"{model_path}: ONNX model not found")
    with tempfile.TemporaryDirectory() as work:
        pre = Path(work) / "pre.onnx"
        _preprocess(model_path, pre)
        with atomic_path(out_path, suffix=".onnx") as tmp:
            handler(config, pre, tmp, calibration)
    return Path(out_path)


def _preprocess(src: Path, dst: Path) -> None:
    import shutil

    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
    except Exception:
        # Symbolic shape inference fails on some graphs; quantizing the raw graph still works.
        shutil.copyfile(src, dst)
