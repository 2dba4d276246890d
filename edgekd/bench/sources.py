"""The models ``edgekd bench`` accepts, and what a benchmark must know about each before running it.

A model spec is one of:

* ``path/to/model.onnx``: an ONNX file, checked by the safety layer (external data stays inside the
  model's folder) before anything else reads it;
* ``path/to/model.safetensors``: an edgekd checkpoint, whose header records the architecture
  (``edgekd.students.checkpoint``); no code is executed;
* ``pkg.module:factory``: a function that returns a ``torch.nn.Module``, imported and called with
  no arguments. Importing a module runs its code: name only modules you trust (your own).

``resolve_model`` turns a spec into a ``ModelSource`` (name, format, parameters, size, precision and
input shapes) without running the model; worker processes rebuild torch models with
``load_torch_model``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgekd.errors import BadInputError

if TYPE_CHECKING:
    from edgekd.safety.onnx_files import OnnxFacts

# ONNX operators that only appear in quantized graphs.
_QUANT_OPS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "MatMulInteger",
    "ConvInteger",
    "QGemm",
}


@dataclass(frozen=True)
class InputSpec:
    """One model input: ``batch`` is the fixed batch size, or None when the axis is dynamic;
    ``sample_shape`` holds None for a dynamic dimension other than the batch."""

    name: str
    batch: int | None
    sample_shape: tuple[int | None, ...]
    dtype: str  # numpy dtype name


@dataclass(frozen=True)
class ModelSource:
    """A resolved model spec: everything the benchmark needs before it runs the model."""

    name: str
    spec: str  # what a worker process opens: a file path or "pkg.module:factory"
    format: str  # "onnx" | "torch"
    kind: str  # "onnx" | "checkpoint" | "factory"
    params: int
    size_bytes: int
    precision: str  # "fp32" | "fp16" | "int8"
    inputs: tuple[InputSpec, ...]  # empty when a torch model's input shape is unknown
    size_note: str = ""


def resolve_model(spec: str) -> ModelSource:
    """Resolve one model spec (see the module docstring); bad specs raise ``BadInputError``.

    >>> resolve_model("runs/mobile/student.onnx").params  # doctest: +SKIP
    19338
    """
    text = str(spec)
    lower = text.lower()
    if lower.endswith(".onnx"):
        return _onnx_source(Path(text))
    if lower.endswith(".safetensors"):
        return _checkpoint_source(Path(text))
    if lower.endswith((".pt", ".pth", ".bin", ".ckpt")):
        raise BadInputError(
            f"{text}: a {Path(text).suffix} file holds weights without their architecture; give "
            "the model as pkg.module:factory (a function that builds it and loads the weights), "
            "an edgekd .safetensors checkpoint, or an ONNX file"
        )
    from edgekd.usercode import parse_factory

    if parse_factory(text) is not None:
        return _factory_source(text)
    raise BadInputError(
        f"{text!r}: not a model spec (expected a .onnx file, an edgekd .safetensors checkpoint, "
        "or pkg.module:factory)"
    )


# --- ONNX -----------------------------------------------------------------------------------------


# TensorProto.DataType -> numpy dtype name (onnx.helper.tensor_dtype_to_np_dtype's table for the
# types a feed can hold), so that reading a model's inputs needs no ``onnx`` import.
_NP_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32",
              7: "int64", 8: "object", 9: "bool", 10: "float16", 11: "float64", 12: "uint32",
              13: "uint64", 14: "complex64", 15: "complex128", 16: "bfloat16"}  # fmt: skip
_INT8, _UINT8, _FLOAT, _FLOAT16 = 3, 2, 1, 10


def onnx_input_specs(facts: OnnxFacts, path: str | Path = "") -> tuple[InputSpec, ...]:
    """Graph inputs that are not initializers, with their shapes and numpy dtypes."""
    initializers = {t.name for t in facts.initializers}
    specs = []
    for vi in facts.inputs:
        if vi.name in initializers:
            continue
        dtype = _NP_DTYPES.get(vi.elem_type or 0)
        if dtype is None:
            raise BadInputError(
                f"{path}: input {vi.name!r} has ONNX element type {vi.elem_type}, which edgekd "
                "cannot feed"
            )
        if not vi.dims:
            specs.append(InputSpec(vi.name, None, (), dtype))
        else:
            specs.append(InputSpec(vi.name, vi.dims[0], tuple(vi.dims[1:]), dtype))
    return tuple(specs)


def _onnx_precision(facts: OnnxFacts) -> str:
    if any(op in _QUANT_OPS for op in facts.op_types):
        return "int8"
    types = [t.data_type for t in facts.initializers]
    if any(t in (_INT8, _UINT8) for t in types):
        return "int8"
    if types and types.count(_FLOAT16) > types.count(_FLOAT):
        return "fp16"
    return "fp32"


def _onnx_source(path: Path) -> ModelSource:
    from edgekd.safety import read_onnx_facts

    # malformed -> BadInputError, unsafe external data -> UnsafeInputError
    facts = read_onnx_facts(path)
    # Parameters: elements of every non-scalar initializer (scalars are quantization scales,
    # zero points and constants, not learned weights).
    params = sum(int(np.prod(t.dims)) for t in facts.initializers if len(t.dims) > 0)
    size = path.stat().st_size
    external = set(facts.external_files)
    size += sum((path.parent / loc).stat().st_size for loc in external)
    inputs = onnx_input_specs(facts, path)
    if not inputs:
        raise BadInputError(f"{path}: the model has no inputs to feed")
    return ModelSource(
        name=path.stem,
        spec=str(path),
        format="onnx",
        kind="onnx",
        params=params,
        size_bytes=size,
        precision=_onnx_precision(facts),
        inputs=inputs,
        size_note="file size" + (" including external data" if external else ""),
    )


# --- PyTorch --------------------------------------------------------------------------------------


def _torch_facts(model) -> tuple[int, str, tuple[InputSpec, ...]]:
    import torch

    params = sum(p.numel() for p in model.parameters())
    dtypes = {p.dtype for p in model.parameters()}
    precision = "fp16" if dtypes == {torch.float16} else "fp32"
    arch = getattr(model, "edgekd_arch", None)
    inputs: tuple[InputSpec, ...] = ()
    if isinstance(arch, dict) and "sample_shape" in arch:
        name = getattr(model, "edgekd_input_names", ("x",))[0]
        inputs = (InputSpec(name, None, tuple(int(d) for d in arch["sample_shape"]), "float32"),)
    return params, precision, inputs


def _checkpoint_source(path: Path) -> ModelSource:
    from edgekd.students.checkpoint import load_model

    if not path.is_file():
        raise BadInputError(f"{path}: checkpoint not found")
    params, precision, inputs = _torch_facts(load_model(path))
    return ModelSource(
        path.stem,
        str(path),
        "torch",
        "checkpoint",
        params,
        path.stat().st_size,
        precision,
        inputs,
        size_note="file size",
    )


def _factory_source(spec: str) -> ModelSource:
    model = load_torch_model(spec)
    params, precision, inputs = _torch_facts(model)
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return ModelSource(
        spec.rsplit(":", 1)[1],
        spec,
        "torch",
        "factory",
        params,
        size,
        precision,
        inputs,
        size_note="bytes of the state dict (a factory has no file)",
    )


def load_torch_model(spec: str):
    """Rebuild a torch model from an edgekd ``.safetensors`` checkpoint or a factory spec."""
    import torch

    if spec.lower().endswith(".safetensors"):
        from edgekd.students.checkpoint import load_model

        return load_model(spec)
    from edgekd.usercode import call_factory, parse_factory

    if parse_factory(spec) is None:
        raise BadInputError(
            f"{spec!r}: not a torch model spec (.safetensors or pkg.module:factory)"
        )
    model = call_factory(spec, "model")
    if not isinstance(model, torch.nn.Module):
        raise BadInputError(
            f"{spec}: the factory returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model.eval()
