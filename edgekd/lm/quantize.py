"""Quantizing an exported LM: weight-only int4/int8 MatMuls (``MatMulNBits``) and dynamic int8,
then the accuracy-aware choice on perplexity.

Weight-only: every MatMul whose weight is a 2-D initializer becomes ONNX Runtime's
``com.microsoft.MatMulNBits`` (weights in blocks of ``block_size`` along K, one float scale per
block, symmetric by default), the recipe of ONNX Runtime's own ``MatMulNBitsQuantizer`` in its
QOperator format. In the installed ONNX Runtime (1.32) that quantizer's module imports
``onnx_ir``, which is not among edgekd's dependencies, so the rewrite is done here with the same
C++ packing kernels it calls (``quantize_matmul_4bits`` / ``quantize_matmul_8bits``): the bytes are
those the quantizer would write. Activations stay float: decoding at batch 1 is bound by reading
weights, so shrinking them is what buys speed (Frantar et al., GPTQ, 2023; Lin et al., AWQ, 2024).

Dynamic int8 (``quantize_dynamic``) quantizes weights per channel and activations per call.

The choice (:func:`choose_lm_variant`): the fastest variant (decode tokens/s) whose perplexity
stays within ``max_increase`` (a fraction) of the fp32 model's; fp32 is always a candidate, as in
the classifier's selection (``edgekd.quantize.select``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.errors import BadInputError
from edgekd.fileio import atomic_path

MODES = ("int4", "int8", "dynamic_int8")


@dataclass(frozen=True)
class LMQuantConfig:
    """One LM quantization: ``mode`` in ``MODES``; ``block_size`` for the weight-only modes.

    >>> LMQuantConfig("int4").name
    'int4-b32'
    """

    mode: str
    block_size: int = 32
    symmetric: bool = True
    # MatMulNBits' compute type for activations: 0 = unset (fp32 compute), 4 = int8 compute
    # (activations quantized per block). 4 by default: measured here (ORT 1.32, x86-64, 1 thread,
    # load ~11 on 2 cores; benchmarks/lm_quant.py's student) int8 weights at level 0 decoded ~7x
    # slower than fp32 (no fast kernel for that pair), at level 4 ~2x faster; int4 ~1.3x faster at
    # 4 than at 0. The perplexity check of the choice catches the accuracy it costs.
    accuracy_level: int = 4
    # Also quantize the embedding table the Gather reads (GatherBlockQuantized, same bits and
    # blocks): in a small LM it is the largest tensor left in fp32.
    embeddings: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise BadInputError(f"LM quantization mode must be one of {', '.join(MODES)}, got "
                                f"{self.mode!r}")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise BadInputError(f"LM quantization block_size must be a power of 2 >= 16, got "
                                f"{self.block_size}")
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            raise BadInputError(f"accuracy_level must be 0..4, got {self.accuracy_level}")

    @property
    def name(self) -> str:
        if self.mode == "dynamic_int8":
            return self.mode
        return (f"{self.mode}-b{self.block_size}" + ("" if self.symmetric else "-asym")
                + ("" if self.embeddings else "-fp32emb"))

    @property
    def bits(self) -> int:
        return 4 if self.mode == "int4" else 8

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _pack(weight: np.ndarray, bits: int, block_size: int, symmetric: bool):
    """(packed [N, blocks, blob], scales [N, blocks], zero points) for a ``[K, N]`` weight."""
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits

    rows, cols = weight.shape
    kpack = 8 // bits
    blocks = -(-rows // block_size)
    weight = np.pad(weight, ((0, blocks * block_size - rows), (0, 0)))
    weight = np.ascontiguousarray(weight, dtype=np.float32)
    packed = np.zeros((cols, blocks, block_size // kpack), dtype=np.uint8)
    zero_points = np.zeros((cols, -(-blocks // kpack)), dtype=np.uint8)
    scales = np.zeros((cols, blocks), dtype=np.float32)
    kernel = quantize_matmul_4bits if bits == 4 else quantize_matmul_8bits
    kernel(packed, weight, scales, zero_points, block_size, cols, rows, symmetric)
    return packed, scales, zero_points


def _projection(node) -> bool:
    """A MatMul, or the Gemm ``edgekd.lm.export`` writes for the tied output projection
    (``transB=1``, no bias, no scaling): both are ``x @ W`` with a constant ``W``."""
    if node.op_type == "MatMul":
        return True
    if node.op_type != "Gemm" or len(node.input) != 2:
        return False
    attrs = {a.name: (a.i if a.type == a.INT else a.f) for a in node.attribute}
    return (attrs.get("transB") == 1 and not attrs.get("transA")
            and attrs.get("alpha", 1.0) == 1.0)


def _matmul_nbits(node, w: np.ndarray, weight_name: str, config: LMQuantConfig):
    """A ``MatMulNBits`` node for ``x @ w`` (``w`` is ``[K, N]``) and its new initializers."""
    from onnx import helper, numpy_helper

    packed, scales, zps = _pack(w, config.bits, config.block_size, config.symmetric)
    stem = f"{weight_name}_Q{config.bits}"
    new = [numpy_helper.from_array(packed, stem), numpy_helper.from_array(scales, f"{stem}_scales")]
    if not config.symmetric:
        new.append(numpy_helper.from_array(zps, stem + "_zero_points"))
    attrs = {"K": w.shape[0], "N": w.shape[1], "bits": config.bits,
             "block_size": config.block_size}
    if config.accuracy_level:
        attrs["accuracy_level"] = config.accuracy_level
    made = helper.make_node("MatMulNBits", [node.input[0], *[t.name for t in new]],
                            list(node.output), name=f"{node.name}_Q{config.bits}",
                            domain="com.microsoft", **attrs)
    return made, new


def quantize_table(table: np.ndarray, bits: int, block_size: int):
    """Symmetric blockwise quantization of a ``[V, D]`` table along D, stored as
    ``GatherBlockQuantized`` reads uint8 data: 4-bit codes two to a byte (low nibble first) offset
    by 8, 8-bit codes offset by 128 (its implied zero points). Returns (data, scales)."""
    rows, cols = table.shape
    qmax = (1 << (bits - 1)) - 1
    blocks = table.reshape(rows, cols // block_size, block_size).astype(np.float32)
    scales = np.abs(blocks).max(axis=-1) / qmax
    scales = np.where(scales > 0, scales, 1.0).astype(np.float32)  # an all-zero block stays 0
    codes = np.clip(np.round(blocks / scales[..., None]), -qmax - 1, qmax).astype(np.int16)
    codes = (codes + (1 << (bits - 1))).astype(np.uint8).reshape(rows, cols)
    if bits == 4:
        codes = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)
    return codes, scales


def _gather_quantized(node, table: np.ndarray, table_name: str, config: LMQuantConfig):
    """A ``GatherBlockQuantized`` node for an embedding lookup, and its new initializers."""
    from onnx import helper, numpy_helper

    data, scales = quantize_table(table, config.bits, config.block_size)
    stem = f"{table_name}_G{config.bits}"
    new = [numpy_helper.from_array(data, stem), numpy_helper.from_array(scales, f"{stem}_scales")]
    made = helper.make_node("GatherBlockQuantized", [new[0].name, node.input[1], new[1].name],
                            list(node.output), name=f"{node.name}_G{config.bits}",
                            domain="com.microsoft", gather_axis=0, quantize_axis=1,
                            block_size=config.block_size, bits=config.bits)
    return made, new


def _rewrite(node, inits: dict, config: LMQuantConfig):
    """(the new node, its initializers) for a node worth quantizing, else None."""
    import onnx
    from onnx import numpy_helper

    if _projection(node):
        weight = inits.get(node.input[1])
        if weight is None or len(weight.dims) != 2 or weight.data_type != onnx.TensorProto.FLOAT:
            return None
        w = numpy_helper.to_array(weight)
        if node.op_type == "Gemm":  # the tied output projection reads the table [N, K] as stored
            w = np.ascontiguousarray(w.T)
        return _matmul_nbits(node, w, weight.name, config)
    if node.op_type == "Gather" and config.embeddings and node.input[0] in inits:
        table = inits[node.input[0]]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if (axis == 0 and len(table.dims) == 2 and table.data_type == onnx.TensorProto.FLOAT
                and table.dims[1] % config.block_size == 0):
            return _gather_quantized(node, numpy_helper.to_array(table), table.name, config)
    return None


def _weight_only(config: LMQuantConfig, src: Path, dst: Path) -> int:
    """Rewrite MatMuls (and the tied output Gemm) with constant 2-D float weights into
    MatMulNBits, and the embedding Gather into GatherBlockQuantized; drop the float weights no
    node reads any more. Returns how many MatMuls were rewritten."""
    import onnx
    from onnx import helper

    model = onnx.load(str(src))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    nodes, done = [], 0
    for node in graph.node:
        rewritten = _rewrite(node, inits, config)
        if rewritten is None:
            nodes.append(node)
            continue
        nodes.append(rewritten[0])
        graph.initializer.extend(rewritten[1])
        done += rewritten[0].op_type == "MatMulNBits"
    del graph.node[:]
    graph.node.extend(nodes)
    read = {name for node in graph.node for name in node.input} | {i.name for i in graph.input}
    kept = [t for t in graph.initializer if t.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(dst))
    return done


def _dynamic_int8(src: Path, dst: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # the quantizer logs every skipped node
    try:
        quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"])
    finally:
        logging.disable(previous)


def quantize_lm(src: str | Path, config: LMQuantConfig, dst: str | Path) -> Path:
    """Quantize the exported LM at ``src`` into ``dst`` (atomically).

    >>> quantize_lm("student.onnx", LMQuantConfig("int4"), "student-int4.onnx")  # doctest: +SKIP
    """
    src = Path(src)
    if not src.is_file():
        raise BadInputError(f"{src}: ONNX model not found")
    with atomic_path(dst, suffix=".onnx") as tmp:
        if config.mode == "dynamic_int8":
            _dynamic_int8(src, tmp)
        elif _weight_only(config, src, tmp) == 0:
            raise BadInputError(f"{src}: no MatMul with a constant 2-D weight to quantize")
    return Path(dst)


@dataclass(frozen=True)
class LMVariant:
    """One model measured for the choice: its file, size, perplexity and decode speed."""

    name: str
    path: str
    size_bytes: int
    perplexity: float
    decode_tokens_per_s: float

    def __post_init__(self) -> None:
        if not self.perplexity >= 1.0:  # also rejects NaN
            raise BadInputError(f"{self.name}: perplexity must be >= 1, got {self.perplexity}")


@dataclass(frozen=True)
class LMSelection:
    chosen: LMVariant
    variants: tuple[LMVariant, ...]
    max_increase: float
    reason: str


def choose_lm_variant(variants: Sequence[LMVariant], max_increase: float,
                      reference: str = "fp32") -> LMSelection:
    """The fastest variant whose perplexity is at most ``(1 + max_increase)`` times the
    reference's (the fp32 model); ties go to the smaller file."""
    if not (max_increase >= 0 and math.isfinite(max_increase)):
        raise BadInputError(f"max perplexity increase must be >= 0, got {max_increase}")
    by_name = {v.name: v for v in variants}
    if reference not in by_name:
        raise BadInputError(f"LM quantization choice: no reference variant {reference!r}")
    limit = by_name[reference].perplexity * (1 + max_increase)
    fits = [v for v in variants if v.perplexity <= limit]
    chosen = max(fits, key=lambda v: (v.decode_tokens_per_s, -v.size_bytes))
    others = [v.name for v in variants if v not in fits]
    reason = (f"{chosen.name}: the fastest ({chosen.decode_tokens_per_s:.1f} tokens/s) within "
              f"perplexity {limit:.3f} ({reference} x {1 + max_increase:g})")
    if others:
        reason += f"; over the limit: {', '.join(others)}"
    return LMSelection(chosen, tuple(variants), max_increase, reason)


def select_lm_quantization(fp32_path: str | Path, out_dir: str | Path,
                           configs: Sequence[LMQuantConfig],
                           measure: Callable[[str, Path], LMVariant],
                           max_increase: float) -> LMSelection:
    """Quantize ``fp32_path`` with each config into ``out_dir`` (``<stem>-<name>.onnx``), measure
    every variant and fp32 with ``measure(name, path)`` (e.g. ``edgekd.lm.bench``), and choose."""
    fp32_path, out_dir = Path(fp32_path), Path(out_dir)
    variants = [measure("fp32", fp32_path)]
    for config in configs:
        path = out_dir / f"{fp32_path.stem}-{config.name}.onnx"
        quantize_lm(fp32_path, config, path)
        variants.append(measure(config.name, path))
    return choose_lm_variant(variants, max_increase)


def file_size(path: str | Path) -> int:
    return Path(path).stat().st_size

