"""Quantization with ONNX Runtime: one frozen config type per mode, one handler per config type.

    quantize("student.onnx", Int8StaticConfig(calibration="minmax"), "student-int8.onnx", calib)

Modes:
    Int8DynamicConfig  weights int8 ahead of time, activations quantized per call (no calibration)
    Int8StaticConfig   weights and activations int8 from calibration; QDQ format
                       (QuantizeLinear/DequantizeLinear pairs that ONNX Runtime fuses into integer
                       kernels) or QOperator format (QLinearConv, QGemm, ...), per-channel or
                       per-tensor weights, MinMax / Entropy / Percentile calibration
    Fp16Config         weights and compute in float16 (GPU targets), inputs and outputs kept fp32

Every config type subclasses :class:`QuantConfig` and lists its own search grid
(:meth:`QuantConfig.grid`), as torchao's configs subclass ``AOBaseConfig``; ``@handles`` registers
its handler. A new mode is one config class and one handler: the search
(:mod:`edgekd.quantize.select`) and the tests find it through :data:`HANDLERS`.
:func:`config_from_dict` reads back what :meth:`QuantConfig.to_dict` wrote (report.json's
``export.quantization.*.config``).

Every mode takes ``nodes_to_exclude``: nodes (by name in the pre-processed graph) left in fp32.
The model is pre-processed with ONNX Runtime's ``quant_pre_process`` (shape inference + graph
optimisation) before quantizing; :func:`preprocess` is public so that a caller quantizing many
variants does it once and names nodes in the graph the handlers see.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from edgekd.errors import BadInputError
from edgekd.fileio import atomic_path

CALIBRATIONS = ("minmax", "entropy", "percentile")
QUANT_FORMATS = ("qdq", "qoperator")


class SearchSpace(Protocol):
    """What a config type's grid reads from the search (``select.QuantSearch``; a protocol here
    so that the configs do not import the search that uses them). Read-only, as QuantSearch is
    frozen."""

    @property
    def modes(self) -> tuple[str, ...]: ...

    @property
    def granularities(self) -> tuple[str, ...]: ...

    @property
    def calibrations(self) -> tuple[str, ...]: ...

    @property
    def num_samples(self) -> int: ...


def _check_nodes(nodes: tuple[str, ...]) -> None:
    if not all(isinstance(n, str) and n for n in nodes):
        raise BadInputError(f"nodes_to_exclude must be non-empty node names, got {nodes!r}")


@dataclass(frozen=True)
class QuantConfig:
    """One quantization mode's settings; subclass it, once per mode, as a frozen dataclass.

    A subclass declares a ``nodes_to_exclude: tuple[str, ...] = ()`` field (checked here), sets
    ``precision`` and ``modes`` (its names in ``QuantSearch.modes``), names each variant
    (``name``) and lists the variants the search tries (``grid``) and the tests run
    (``examples``). Its handler is registered with ``@handles(SubClass)``.
    """

    precision: ClassVar[str] = ""  # "int8" | "fp16": matched against the target's precisions
    needs_calibration: ClassVar[bool] = False
    modes: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        _check_nodes(self.nodes_to_exclude)

    @property
    def name(self) -> str:
        """The variant's label: file names, report rows and the chosen variant use it."""
        raise NotImplementedError

    def _suffix(self) -> str:
        n = len(self.nodes_to_exclude)
        return f"-excl{n}" if n else ""

    def to_dict(self) -> dict[str, Any]:
        """``{"type": <class name>, <field>: <value>, ...}``; :func:`config_from_dict` reads it."""
        return {"type": type(self).__name__, **dataclasses.asdict(self)}

    @classmethod
    def grid(cls, search: SearchSpace) -> tuple[QuantConfig, ...]:
        """The variants of this mode that ``search`` asks for (none unless a mode is named)."""
        return ()

    @classmethod
    def examples(cls) -> tuple[QuantConfig, ...]:
        """One config per variant of this mode, for the tests (each runs on a small model)."""
        return (cls(),)


@dataclass(frozen=True)
class Int8DynamicConfig(QuantConfig):
    """Weights int8 ahead of time, activations quantized per call (no calibration data)."""

    per_channel: bool = False
    reduce_range: bool = False  # 7-bit weights: avoids u8s8 saturation on x86 without VNNI
    nodes_to_exclude: tuple[str, ...] = ()

    precision = "int8"
    modes = ("dynamic",)

    @property
    def name(self) -> str:
        return "int8-dynamic" + ("-perchannel" if self.per_channel else "") + self._suffix()

    @classmethod
    def grid(cls, search: SearchSpace) -> tuple[Int8DynamicConfig, ...]:
        if "dynamic" not in search.modes:
            return ()
        return tuple(cls(per_channel=g == "per-channel") for g in search.granularities)

    @classmethod
    def examples(cls) -> tuple[Int8DynamicConfig, ...]:
        return (cls(), cls(per_channel=True))


@dataclass(frozen=True)
class Int8StaticConfig(QuantConfig):
    """Weights and activations int8, activation ranges from calibration on real inputs."""

    per_channel: bool = True
    calibration: str = "minmax"
    num_samples: int = 256
    quant_format: str = "qdq"
    reduce_range: bool = False
    nodes_to_exclude: tuple[str, ...] = ()

    precision = "int8"
    needs_calibration = True
    modes = QUANT_FORMATS  # the search names static modes by their format

    def __post_init__(self) -> None:
        if self.calibration not in CALIBRATIONS:
            raise BadInputError(
                f"calibration {self.calibration!r} unknown "
                f"(expected one of {', '.join(CALIBRATIONS)})"
            )
        if self.quant_format not in QUANT_FORMATS:
            raise BadInputError(
                f"quant_format must be 'qdq' or 'qoperator', got {self.quant_format!r}"
            )
        if self.num_samples < 1:
            raise BadInputError(f"num_samples must be >= 1, got {self.num_samples}")
        super().__post_init__()

    @property
    def name(self) -> str:
        granularity = "perchannel" if self.per_channel else "pertensor"
        return f"int8-{self.quant_format}-{granularity}-{self.calibration}" + self._suffix()

    @classmethod
    def grid(cls, search: SearchSpace) -> tuple[Int8StaticConfig, ...]:
        """Format x granularity x calibration, in that order (the order variants are reported)."""
        return tuple(
            cls(
                per_channel=granularity == "per-channel",
                calibration=calibration,
                num_samples=search.num_samples,
                quant_format=fmt,
            )
            for fmt in QUANT_FORMATS
            if fmt in search.modes
            for granularity in search.granularities
            for calibration in search.calibrations
        )

    @classmethod
    def examples(cls) -> tuple[Int8StaticConfig, ...]:
        """64 calibration samples: quick."""
        return (
            *(cls(calibration=c, num_samples=64) for c in CALIBRATIONS),
            cls(per_channel=False, num_samples=64),
            cls(quant_format="qoperator", num_samples=64),
            cls(quant_format="qoperator", per_channel=False, num_samples=64),
        )


@dataclass(frozen=True)
class Fp16Config(QuantConfig):
    """Weights and arithmetic in float16; graph inputs and outputs stay float32."""

    keep_io_types: bool = True
    nodes_to_exclude: tuple[str, ...] = ()
    op_block_list: tuple[str, ...] = field(default=())  # () = ONNX Runtime's default block list

    precision = "fp16"
    modes = ("fp16",)

    @property
    def name(self) -> str:
        return "fp16" + self._suffix()

    @classmethod
    def grid(cls, search: SearchSpace) -> tuple[Fp16Config, ...]:
        return (cls(),) if "fp16" in search.modes else ()


Handler = Callable[[QuantConfig, Path, Path, "dict[str, np.ndarray] | None"], None]
HANDLERS: dict[type[QuantConfig], Handler] = {}


def handles(config_type: type[QuantConfig]) -> Callable[[Handler], Handler]:
    """Register the handler that quantizes with ``config_type`` (one per type, as torchao's
    ``register_quantize_module_handler``)."""
    if not issubclass(config_type, QuantConfig):
        raise TypeError(f"{config_type.__name__} is not a QuantConfig")

    def wrap(fn: Handler) -> Handler:
        HANDLERS[config_type] = fn
        return fn

    return wrap


def config_from_dict(d: Mapping[str, Any]) -> QuantConfig:
    """The config that :meth:`QuantConfig.to_dict` wrote, e.g. report.json's
    ``export.quantization.variants[i].config``, so that a chosen variant can be made again.

    >>> config_from_dict({"type": "Int8DynamicConfig", "per_channel": True}).name
    'int8-dynamic-perchannel'
    """
    known = {t.__name__: t for t in HANDLERS}
    values = dict(d)
    type_name = values.pop("type", None)
    config_type = known.get(type_name)
    if config_type is None:
        raise BadInputError(
            f"quantization config type {type_name!r} unknown (known: {', '.join(known)})"
        )
    fields = {f.name for f in dataclasses.fields(config_type)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise BadInputError(f"{type_name} has no field(s) {', '.join(unknown)}")
    # JSON has no tuples: tuple fields (node names, op lists) come back as lists.
    return config_type(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over named arrays, in small batches."""

    def __init__(self, inputs: dict[str, np.ndarray], limit: int, batch: int = 32) -> None:
        n = min(limit, len(next(iter(inputs.values()))))
        self._feeds = iter(
            [{k: v[i : min(i + batch, n)] for k, v in inputs.items()} for i in range(0, n, batch)]
        )

    def get_next(self):
        return next(self._feeds, None)


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """ONNX Runtime's quantizer logs advice through the root logger and its histogram
    calibrators print progress; keep both off the console (and out of ``--json`` output)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


@handles(Int8DynamicConfig)
def _dynamic(config: Int8DynamicConfig, src: Path, dst: Path, calibration) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Dynamic quantization rewrites Gemm as MatMul + Add named "<gemm>_MatMul" before it looks
    # at nodes_to_exclude, so an excluded Gemm must be named both ways.
    exclude = [n for name in config.nodes_to_exclude for n in (name, f"{name}_MatMul")]
    quantize_dynamic(
        str(src),
        str(dst),
        per_channel=config.per_channel,
        reduce_range=config.reduce_range,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=exclude,
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
        reduce_range=config.reduce_range,
        # u8 activations / s8 weights: the combination ONNX Runtime's x86 and ARM kernels favour.
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=method,
        nodes_to_exclude=list(config.nodes_to_exclude),
    )


def fp16_converter():
    """ONNX Runtime's float16 converter, or a clear error saying it is missing."""
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError:
        raise BadInputError(
            "fp16 conversion needs onnxruntime.transformers.float16 (ships with onnxruntime); "
            "it is not importable here"
        ) from None
    return convert_float_to_float16


@handles(Fp16Config)
def _fp16(config: Fp16Config, src: Path, dst: Path, calibration) -> None:
    import onnx

    convert = fp16_converter()
    kwargs = {"op_block_list": list(config.op_block_list)} if config.op_block_list else {}
    model = convert(
        onnx.load(str(src)),
        keep_io_types=config.keep_io_types,
        node_block_list=list(config.nodes_to_exclude) or None,
        **kwargs,
    )
    onnx.save(model, str(dst))


def quantize(
    model_path: str | Path,
    config: QuantConfig,
    out_path: str | Path,
    calibration: dict[str, np.ndarray] | None = None,
    preprocessed: bool = False,
) -> Path:
    """Quantize ``model_path`` with ``config`` into ``out_path`` (atomically).

    ``preprocessed=True`` when ``model_path`` already went through :func:`preprocess` (node names
    in ``nodes_to_exclude`` are names in the pre-processed graph).

    >>> quantize("m.onnx", Int8DynamicConfig(), "m-int8.onnx")  # doctest: +SKIP
    """
    handler = HANDLERS.get(type(config))
    if handler is None:
        raise BadInputError(f"no quantization handler for {type(config).__name__}")
    model_path = Path(model_path)
    if not model_path.is_file():
        raise BadInputError(f"{model_path}: ONNX model not found")
    with tempfile.TemporaryDirectory() as work:
        src = model_path if preprocessed else preprocess(model_path, Path(work) / "pre.onnx")
        if config.nodes_to_exclude:
            _check_node_names(src, config.nodes_to_exclude)
        with atomic_path(out_path, suffix=".onnx") as tmp, _quiet_quantizer():
            handler(config, src, tmp, calibration)
    return Path(out_path)


def _check_node_names(model_path: Path, names: tuple[str, ...]) -> None:
    import onnx

    known = {n.name for n in onnx.load(str(model_path), load_external_data=False).graph.node}
    missing = [n for n in names if n not in known]
    if missing:
        raise BadInputError(
            f"{model_path}: nodes_to_exclude names nodes not in the graph: {', '.join(missing)}"
        )


def preprocess(src: str | Path, dst: str | Path) -> Path:
    """ONNX Runtime's ``quant_pre_process``: shape inference and graph optimisation."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with _quiet_quantizer():
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
    except Exception:
        # Symbolic shape inference fails on some graphs; quantizing the raw graph still works.
        shutil.copyfile(src, dst)
    return Path(dst)
