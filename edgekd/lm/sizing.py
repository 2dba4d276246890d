"""Sizing an LM student to a target's language-model budget lines (``[lm]`` in a profile).

What one student costs on the device, estimated from its shape and the device figures (every
figure here is an estimate and labelled so; ``edgekd.lm.bench`` measures):

- **decode, per token** (batch 1, worst case: the KV cache full at ``context_tokens``): a roofline
  (Williams et al., CACM 2009) of the bytes read, every MatMul weight once plus the whole KV
  cache, over ``memory_bandwidth_gbs``, against the FLOPs (2 per MatMul weight, 4 x dim per
  cached position and layer for the attention) over the device's throughput; decoding is
  memory-bound on every profile we ship (Pope et al., "Efficiently Scaling Transformer
  Inference", 2022), plus the runtime's per-call and per-kernel costs.
- **time to first token**: the same roofline for the prefill of ``prompt_tokens`` (compute-bound:
  each weight is read once and used ``prompt_tokens`` times).
- **memory at the context length**: the weights as deployed + the fp32 KV cache at
  ``context_tokens`` + the largest activation (a prefill's logits); the runtime's own memory is
  not included (it is measured by the benchmark, not modelled).
- **file size**: every MatMul weight and the embedding table at ``weight_bits`` (the weight-only
  variants: ``MatMulNBits`` and ``GatherBlockQuantized``, plus a scale per block of 32) + the
  fp32 norms; a fp32 export stores a tied table once (the output Gemm reads it), a quantized one
  twice (two layouts).
  The graph itself (nodes, shapes) adds about 100 KB, which only matters for the tiniest students.

The search (:func:`size_lm_student`) walks a grid of widths and depths (head dim 64 where the
width allows, 32 below; Llama's SwiGLU width 8/3 x dim rounded to 32; grouped-query attention with
half as many KV heads from 4 heads up) and keeps the largest student whose every set line fits;
at equal size the deeper one wins (MobileLLM, Liu et al. 2024: deep and thin is better below a
billion parameters).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from edgekd.errors import BadInputError
from edgekd.lm.student import LMStudentConfig
from edgekd.results import Line
from edgekd.targets import DeviceSpec, LMBudget, TargetProfile

DIMS = (64, 96, 128, 192, 256, 384, 512, 640, 768)
LAYERS = (2, 3, 4, 6, 8, 10, 12, 16)
# Kernels one decoder layer launches after ONNX Runtime's fusions (norms, 4 attention MatMuls,
# rotary, scores, softmax, 3 FFN MatMuls, SiLU, residual adds): a rough count for the overhead.
KERNELS_PER_LAYER = 20
FP32_BYTES = 4
SCALE_BITS = 1  # MatMulNBits: a 32-bit scale per block of 32 weights (edgekd.lm.quantize)


@dataclass(frozen=True)
class LMEstimate:
    """A student's estimated cost on a device (every figure an estimate)."""

    params: int
    decode_ms_per_token: float
    ttft_ms: float
    memory_mb: float
    model_size_mb: float
    weight_bits: int

    def lines(self, budget: LMBudget) -> list[Line]:
        """The set lines of ``budget`` with this estimate's figures (kind ``"estimate"``)."""
        figures = (("decode_ms_per_token", self.decode_ms_per_token, "ms"),
                   ("ttft_ms", self.ttft_ms, "ms"), ("memory_mb", self.memory_mb, "MB"),
                   ("model_size_mb", self.model_size_mb, "MB"))
        return [Line(name, value, getattr(budget, name), unit, "estimate")
                for name, value, unit in figures if getattr(budget, name)]


def matmul_params(c: LMStudentConfig) -> int:
    """Weights every token multiplies by: the layers' MatMuls and the output projection (the
    embedding gather is a lookup, not a MatMul)."""
    per_layer = 2 * c.dim * c.dim + 2 * c.dim * c.kv_dim + 3 * c.dim * c.ffn_hidden
    return c.n_layers * per_layer + c.vocab_size * c.dim  # + the output projection


def file_bytes(c: LMStudentConfig, weight_bits: int) -> int:
    """The exported file's weight bytes at ``weight_bits`` for the MatMuls (32 = fp32)."""
    norms = (2 * c.n_layers + 1) * c.dim * FP32_BYTES
    table = c.vocab_size * c.dim  # the Gather's table
    matmul = matmul_params(c)
    if weight_bits >= 16:
        if c.tie_embeddings:
            matmul -= table  # the output Gemm reads the Gather's table (edgekd.lm.export)
        return (matmul + table) * weight_bits // 8 + norms
    # Weight-only variants: MatMuls and the table quantized, one fp32 scale per block of 32 (one
    # more bit per weight); a tied table is stored twice (MatMulNBits' and the Gather's layout).
    return (matmul + table) * (weight_bits + SCALE_BITS) // 8 + norms


def _roofline_ms(flops: float, bytes_read: float, device: DeviceSpec, weight_bits: int) -> float:
    rate = device.int8_gops if weight_bits <= 8 and device.int8_gops else device.fp32_gflops
    compute = flops / (rate * 1e9) if rate else 0.0
    memory = bytes_read / (device.memory_bandwidth_gbs * 1e9) if device.memory_bandwidth_gbs else 0
    return 1e3 * max(compute, memory)


def estimate_lm(c: LMStudentConfig, device: DeviceSpec, weight_bits: int = 32,
                prompt_tokens: int = 64, context_tokens: int | None = None) -> LMEstimate:
    """Estimated decode, time to first token, memory and size of student ``c`` on ``device``.

    >>> from edgekd.targets import load_target
    >>> c = LMStudentConfig(vocab_size=8000, dim=256, n_layers=6, n_heads=4, n_kv_heads=2,
    ...                     ffn_hidden=704, context=512)
    >>> round(estimate_lm(c, load_target("mobile").device, 8).model_size_mb, 1)
    9.2
    """
    if weight_bits not in (4, 8, 16, 32):
        raise BadInputError(f"weight_bits must be 4, 8, 16 or 32, got {weight_bits}")
    context = context_tokens or c.context
    matmul = matmul_params(c)
    overhead_ms = (device.call_overhead_us + KERNELS_PER_LAYER * c.n_layers
                   * device.op_overhead_us) / 1e3
    weights_read = matmul * weight_bits / 8
    kv_full = c.kv_cache_bytes(context)
    decode_flops = 2 * matmul + 4 * c.n_layers * context * c.dim
    decode = _roofline_ms(decode_flops, weights_read + kv_full, device, weight_bits) + overhead_ms
    # Prefill: every weight used by every prompt token, attention over a causal triangle.
    prefill_flops = 2 * matmul * prompt_tokens + 2 * c.n_layers * prompt_tokens ** 2 * c.dim
    ttft = _roofline_ms(prefill_flops, weights_read + c.kv_cache_bytes(prompt_tokens), device,
                        weight_bits) + overhead_ms
    size = file_bytes(c, weight_bits)
    logits = max(prompt_tokens, 1) * c.vocab_size * FP32_BYTES
    memory = size + kv_full + logits
    return LMEstimate(c.param_count(), decode, ttft, memory / 2**20, size / 2**20, weight_bits)


def _heads(dim: int) -> tuple[int, int]:
    head_dim = 64 if dim >= 256 and dim % 64 == 0 else 32
    n_heads = max(1, dim // head_dim)
    return n_heads, (n_heads // 2 if n_heads >= 4 else n_heads)


def candidates(vocab_size: int, context: int, dims: Sequence[int] = DIMS,
               layers: Sequence[int] = LAYERS) -> list[LMStudentConfig]:
    """The search grid, largest first (deeper first at equal size)."""
    out = []
    for dim in dims:
        n_heads, n_kv = _heads(dim)
        ffn = max(32, round(8 * dim / 3 / 32) * 32)
        for n_layers in layers:
            out.append(LMStudentConfig(vocab_size=vocab_size, dim=dim, n_layers=n_layers,
                                       n_heads=n_heads, n_kv_heads=n_kv, ffn_hidden=ffn,
                                       context=context))
    return sorted(out, key=lambda c: (c.param_count(), c.n_layers), reverse=True)


class TrainingLimit(Protocol):
    """What training can afford (``edgekd.lm.affordable.TrainingCap``): whether a student's
    training fits the budget, and the words for its estimate."""

    def affords(self, config: LMStudentConfig) -> bool: ...

    def describe(self, config: LMStudentConfig) -> str: ...

    def to_dict(self, config: LMStudentConfig) -> dict: ...


@dataclass(frozen=True)
class LMSizing:
    """The chosen student, its estimate and lines, and the words for the choice. ``limits``:
    what each limit alone admits (params) and which one chose the student (``chosen_by``)."""

    config: LMStudentConfig
    estimate: LMEstimate
    lines: tuple[Line, ...]
    fits: bool
    considered: int
    reason: str
    limits: dict | None = None


def size_lm_student(budget: LMBudget, device: DeviceSpec, vocab_size: int, context: int,
                    weight_bits: int = 32, max_params: int | None = None,
                    dims: Sequence[int] = DIMS, layers: Sequence[int] = LAYERS,
                    grid: Sequence[LMStudentConfig] | None = None,
                    training: TrainingLimit | None = None) -> LMSizing:
    """The largest student of the grid whose every set line of ``budget`` fits on ``device``,
    with at most ``max_params`` parameters (a share of the teacher) and whose training
    ``training`` affords; when none fits, the smallest, with ``fits=False`` and the lines it
    breaks. ``grid``: these candidates, largest first, instead of ``dims`` x ``layers`` (a
    teacher's width: ``edgekd.lm.init``). The reason names the limit that chose the student.

    >>> from edgekd.targets import load_target
    >>> t = load_target("mobile")
    >>> size_lm_student(t.lm, t.device, vocab_size=8000, context=256, weight_bits=8,
    ...                 max_params=5_000_000).config.dim
    256
    """
    context = budget.context_tokens or context
    prompt = budget.prompt_tokens or min(64, context)
    full = list(grid) if grid is not None else candidates(vocab_size, context, dims, layers)

    def fits_device(c: LMStudentConfig) -> bool:
        return all(line.passed for line in estimate_lm(c, device, weight_bits, prompt,
                                                       context).lines(budget))  # fmt: skip

    def share(c: LMStudentConfig) -> bool:
        return max_params is None or c.param_count() <= max_params

    def affords(c: LMStudentConfig) -> bool:
        return training is None or training.affords(c)

    shared = [c for c in full if share(c)] or full[-1:]  # a tiny teacher: the smallest
    admitted = [c for c in shared if affords(c)]
    over = not admitted  # even the smallest cannot train in time: kept, and said
    admitted = admitted or shared[-1:]
    chosen = next((c for c in admitted if fits_device(c)), None)
    if chosen is None:
        return _nothing_fits(admitted[-1], len(full), budget, device, weight_bits, prompt,
                             context)  # fmt: skip
    est = estimate_lm(chosen, device, weight_bits, prompt, context)
    limits = _limits(full, chosen, fits_device, share, affords, max_params, training)
    if over:
        limits.update(chosen_by="training", over_budget=True)
        why = ("no student's training fits the training budget, so the smallest: "
               f"{training.describe(chosen)}")  # fmt: skip
    else:
        why = _chosen_by_words(limits, chosen, training)
    reason = (f"the largest of {len(full)} LM students that fits every set line"
              f"{' and what training affords' if training else ''} ({chosen.param_count():,} "
              f"params, dim {chosen.dim}, {chosen.n_layers} layers, estimates at {weight_bits}-bit "
              f"weights); {why}")  # fmt: skip
    return LMSizing(chosen, est, tuple(est.lines(budget)), True, len(admitted), reason, limits)


LIMIT_WORDS = {"device": "the device budget", "teacher_share": "the teacher share",
               "training": "the training budget"}  # fmt: skip


def _limits(full, chosen, fits_device, share, affords, max_params, training) -> dict:
    """The largest student each limit admits alone (params; None: no such limit or none), and
    the limit that chose: the one admitting the fewest (device, share, training on a tie)."""
    alone = {
        "device": next((c for c in full if fits_device(c)), None),
        "teacher_share": next((c for c in full if share(c)), None) if max_params else None,
        "training": next((c for c in full if affords(c)), None) if training else None,
    }
    params = {k: (c.param_count() if c is not None else None) for k, c in alone.items()}
    bounding = [k for k, p in params.items() if p is not None]
    chosen_by = min(bounding, key=lambda k: params[k]) if bounding else "device"
    if params[chosen_by] is not None and params[chosen_by] > chosen.param_count():
        chosen_by = "together"  # each admits more alone; only their intersection binds
    out: dict = {"chosen_by": chosen_by, **{f"{k}_max_params": p for k, p in params.items()},
                 "max_params": max_params}  # fmt: skip
    if training is not None:
        out["training"] = training.to_dict(chosen)
    return out


def _chosen_by_words(limits: dict, chosen: LMStudentConfig, training) -> str:
    by = limits["chosen_by"]
    words = (f"chosen by {LIMIT_WORDS[by]}" if by in LIMIT_WORDS
             else "chosen by the limits together")  # fmt: skip
    others = [f"{LIMIT_WORDS[k]} alone admits {limits[f'{k}_max_params']:,}"
              for k in LIMIT_WORDS if k != by and limits[f"{k}_max_params"] is not None]
    if training is not None:
        words += f" ({training.describe(chosen)})"
    return words + ("; " + ", ".join(others) + " params" if others else "")


def _nothing_fits(config, considered, budget, device, weight_bits, prompt, context):
    """The smallest candidate, with the lines it breaks."""
    est = estimate_lm(config, device, weight_bits, prompt, context)
    lines = est.lines(budget)
    broken = "; ".join(line.describe() for line in lines if not line.passed)
    return LMSizing(config, est, tuple(lines), False, considered,
                    f"no LM student fits; the smallest breaks {broken}", {"chosen_by": "device"})


def deploy_weight_bits(profile: TargetProfile) -> int:
    """The weight width sizing assumes for ``profile``: 8 where it runs int8 (int8 weight-only or
    dynamic; int4 is smaller still, so an int8-sized student fits either way), else 32."""
    return 8 if "int8" in profile.precisions else 32


def size_lm_to_target(profile: TargetProfile, vocab_size: int, context: int | None = None,
                      max_params: int | None = None) -> LMSizing:
    """:func:`size_lm_student` for a whole profile: its ``[lm]`` lines, device and precisions.

    >>> from edgekd.targets import load_target
    >>> size_lm_to_target(load_target("iot"), 8000).fits  # doctest: +SKIP
    True
    """
    lm = profile.lm
    if not lm.is_set():
        raise BadInputError(
            f"target {profile.name!r} has no [lm] budget lines; add an [lm] table to its profile "
            "(see targets/mobile.toml) to size a language model"
        )
    context = context or lm.context_tokens or 256
    return size_lm_student(lm, profile.device, vocab_size, context,
                           deploy_weight_bits(profile), max_params)
