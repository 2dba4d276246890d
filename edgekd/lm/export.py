"""An LM student -> one ONNX file with a KV cache, parity-proven against PyTorch.

One graph serves prefill and decode (the choice onnxruntime-genai and Optimum's "merged" decoders
make): ``past_key_values.{i}.key/.value`` in, ``present.{i}.key/.value`` out, and a prefill is a
call with a past of length 0 (see ``edgekd.lm.decode`` for the contract). One file keeps the
weights once on disk and in memory, which two graphs (prefill, decode) would not without shared
external data.

Parity: for each prompt, greedy decoding runs in PyTorch and in ONNX Runtime through the same loop
(``edgekd.lm.decode``); every step's logits (the prefill's and each decode step's) must agree
within ``ParityThresholds.max_abs_diff`` and the continuations must be identical token for token.
Anything else raises ``ParityError`` (exit 6) and writes nothing: the file is built in a
temporary folder and renamed into place only after the checks pass.

The teacher (:func:`export_teacher`) is exported for the benchmark only, as a prefill graph
without a cache (``input_ids`` -> ``logits``): transformers 5's cache classes branch on tensor
values and do not trace. Decoding that graph recomputes the prefix at each step
(``edgekd.lm.decode.OnnxLM``'s recompute mode), so its decode speed is not what a cached export
would reach. A teacher that does not export, or exports without parity, is reported with the
reason in one line and benched in PyTorch only: the run goes on.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.errors import BadInputError, EdgekdError, ParityError
from edgekd.export import ParityThresholds, trace_model
from edgekd.fileio import atomic_path
from edgekd.lm.decode import (
    INPUT_IDS,
    LOGITS,
    Continuation,
    OnnxLM,
    past_names,
    present_names,
    torch_greedy,
)


@dataclass(frozen=True)
class LMExportResult:
    path: str
    opset: int
    layers: int
    kv_heads: int
    head_dim: int
    max_abs_diff: float
    prompts: int
    new_tokens: int
    greedy_identical: bool
    nodes: int
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _FlatCache(nn.Module):
    """``(input_ids, k0, v0, k1, v1, ...) -> (logits, k0', v0', ...)``: the tracer wants flat
    tensors, the student takes a tuple of pairs."""

    def __init__(self, model: nn.Module, layers: int) -> None:
        super().__init__()
        self.model, self.layers = model, layers

    def forward(self, input_ids: torch.Tensor, *flat: torch.Tensor):
        past = tuple((flat[2 * i], flat[2 * i + 1]) for i in range(self.layers))
        logits, present = self.model(input_ids, past_key_values=past, use_cache=True)
        return (logits, *[t for pair in present for t in pair])


def kv_layout(model: nn.Module) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) from the model's ``config`` (an ``LMStudentConfig``, or any
    object with ``n_layers``, ``n_kv_heads`` and ``head_dim``)."""
    config = getattr(model, "config", None)
    try:
        return int(config.n_layers), int(config.n_kv_heads), int(config.head_dim)
    except AttributeError:
        raise BadInputError(
            "LM export: the model needs a .config with n_layers, n_kv_heads and head_dim "
            "(an LMStudent has one)"
        ) from None


def _trace_lm(model: nn.Module, layout: tuple[int, int, int], opset: int):
    layers, kv_heads, head_dim = layout
    # Traced with a past of 3 and a sequence of 2, so that neither axis is specialised away (a
    # trace at length 0 or 1 could fold a shape into a constant).
    ids = torch.zeros((1, 2), dtype=torch.long)
    past = [torch.zeros((1, kv_heads, 3, head_dim)) for _ in range(2 * layers)]
    inputs = (INPUT_IDS, *[n for i in range(layers) for n in past_names(i)])
    outputs = (LOGITS, *[n for i in range(layers) for n in present_names(i)])
    dynamic = {INPUT_IDS: {0: "batch", 1: "sequence"}, LOGITS: {0: "batch", 1: "sequence"}}
    dynamic |= {n: {0: "batch", 2: "past_sequence"} for n in inputs[1:]}
    dynamic |= {n: {0: "batch", 2: "total_sequence"} for n in outputs[1:]}
    with torch.no_grad():
        return trace_model(_FlatCache(model.eval(), layers), (ids, *past), inputs, outputs,
                           dynamic, opset)


def share_tied_table(proto) -> int:
    """Point an output MatMul over a transposed copy of a Gather's table at the table itself.

    The tracer folds ``embed.weight.T`` into a second initializer for the tied output projection,
    so a fp32 file would hold the largest tensor of a small LM twice. A 2-D ``MatMul(h, W.T)``
    whose weight equals a Gather's table transposed becomes ``Gemm(h, W, transB=1)`` and the copy
    goes. Returns how many MatMuls were rewritten; the graph is parity-checked after this.
    """
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in graph.value_info}
    tables = {}
    for node in graph.node:
        if node.op_type == "Gather" and node.input[0] in inits:
            tables[node.input[0]] = numpy_helper.to_array(inits[node.input[0]])
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    rewritten = 0
    for i, node in enumerate(graph.node):
        weight = inits.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or ranks.get(node.input[0]) != 2 or uses[weight.name] != 1:
            continue
        w = numpy_helper.to_array(weight)
        table = next((n for n, t in tables.items() if t.shape == w.T.shape
                      and np.array_equal(t, w.T)), None)
        if table is None:
            continue
        graph.node[i].CopyFrom(helper.make_node("Gemm", [node.input[0], table], list(node.output),
                                                name=node.name.replace("MatMul", "Gemm"),
                                                transB=1))
        graph.initializer.remove(weight)
        rewritten += 1
    return rewritten


def _max_diff(a: Continuation, b: Continuation) -> float:
    if len(a.step_logits) != len(b.step_logits):
        return float("inf")
    worst = 0.0
    for x, y in zip(a.step_logits, b.step_logits, strict=True):
        if x.shape != y.shape:
            return float("inf")
        d = float(np.abs(x.astype(np.float64) - y).max(initial=0.0))
        worst = max(worst, d if np.isfinite(d) else float("inf"))  # NaN is a failure
    return worst


def lm_parity(onnx_path: str | Path, model: nn.Module, prompts: Sequence[Sequence[int]],
              new_tokens: int) -> tuple[float, bool]:
    """Worst logit difference over every step of every prompt, and whether each greedy
    continuation is the same in ONNX Runtime as in PyTorch."""
    from edgekd.runtimes.ort_cpu import open_session

    onnx_lm = OnnxLM(open_session(onnx_path))
    worst, same = 0.0, True
    for prompt in prompts:
        want, got = torch_greedy(model, prompt, new_tokens), onnx_lm.greedy(prompt, new_tokens)
        worst = max(worst, _max_diff(got, want))
        same = same and got.tokens == want.tokens
    return worst, same


def _write_if_parity(proto, model: nn.Module, path: str | Path, prompts: Sequence[Sequence[int]],
                     new_tokens: int, thresholds: ParityThresholds) -> tuple[float, bool]:
    """Parity of the graph ``proto`` against ``model`` (:func:`lm_parity`); the graph is written
    to ``path`` (atomically) only when it is within ``thresholds``. Returns (max abs logit diff,
    continuations identical): the caller says what a failure means."""
    import onnx

    with tempfile.TemporaryDirectory() as work:
        raw = Path(work) / "lm.onnx"
        onnx.save(proto, str(raw))
        diff, same = lm_parity(raw, model, prompts, new_tokens)
        if diff <= thresholds.max_abs_diff and same:
            with atomic_path(path, suffix=".onnx") as tmp:
                shutil.copyfile(raw, tmp)
    return diff, same


def _check_prompts(prompts: Sequence[Sequence[int]], new_tokens: int) -> None:
    if not prompts or any(len(p) == 0 for p in prompts):
        raise BadInputError("LM export: parity needs at least one non-empty prompt")
    if new_tokens < 1:
        raise BadInputError(f"LM export: new_tokens must be at least 1, got {new_tokens}")


def export_lm(model: nn.Module, path: str | Path, prompts: Sequence[Sequence[int]],
              opset: int = 17, new_tokens: int = 8,
              thresholds: ParityThresholds | None = None) -> LMExportResult:
    """Export ``model`` (the ``LMStudent`` forward contract) with a KV cache to ``path``, proving
    parity on greedy continuations of ``prompts`` (token-id lists).

    >>> export_lm(student, "student.onnx", [[1, 2, 3], [7, 8]])  # doctest: +SKIP
    """

    _check_prompts(prompts, new_tokens)
    thresholds = thresholds or ParityThresholds()
    layout = kv_layout(model)
    proto, notes = _trace_lm(model, layout, opset)
    if share_tied_table(proto):
        notes = [*notes, "tied output projection reads the embedding table (Gemm, transB)"]
    diff, same = _write_if_parity(proto, model, path, prompts, new_tokens, thresholds)
    if diff > thresholds.max_abs_diff or not same:
        raise ParityError(
            f"{Path(path).name}: ONNX Runtime disagrees with PyTorch on greedy decoding with "
            f"the KV cache (max abs logit diff {diff:.3g} vs allowed "
            f"{thresholds.max_abs_diff:g}; continuations identical: {same}; {len(prompts)} "
            f"prompts x {new_tokens} tokens); no file written"
        )
    return LMExportResult(
        path=str(path), opset=opset, layers=layout[0], kv_heads=layout[1], head_dim=layout[2],
        max_abs_diff=diff, prompts=len(prompts), new_tokens=new_tokens, greedy_identical=same,
        nodes=len(proto.graph.node), notes=tuple(notes),
    )


# --- the teacher, for the benchmark ---------------------------------------------------------------


@dataclass(frozen=True)
class TeacherExport:
    """The teacher's cache-free ONNX graph, or why there is none (``path`` None)."""

    path: str | None
    reason: str  # what was exported, or why not (one line)
    max_abs_diff: float | None = None
    greedy_identical: bool | None = None
    nodes: int = 0
    opset: int = 17

    @property
    def exported(self) -> bool:
        return self.path is not None

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "exported": self.exported}


class _CausalLogits(nn.Module):
    """A ``transformers`` causal LM as ``input_ids -> logits`` with no cache, for tracing.

    The causal mask is built here (additive, [B, 1, T, T]) and passed as a 4-D mask, which
    transformers takes as given: its own mask code compares shapes in Python ``if``s, which the
    tracer would freeze at the traced length."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        future = positions[None, :] > positions[:, None]
        mask = torch.zeros(future.shape, device=input_ids.device).masked_fill(
            future, torch.finfo(torch.float32).min
        )
        mask = mask[None, None].expand(input_ids.shape[0], 1, -1, -1)
        return self.model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits


def _teacher_graph(module: nn.Module) -> tuple[nn.Module, Any]:
    """(the module to trace, a function that undoes what was changed on the teacher)."""
    model = getattr(module, "model", None)  # edgekd.lm.teacher.HFLogits wraps a transformers LM
    if model is None or not hasattr(model, "set_attn_implementation"):
        return module, lambda: None
    # eager attention: the SDPA integration branches on tensor values too
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    return _CausalLogits(model), lambda: model.set_attn_implementation(before)


def export_teacher(module: nn.Module, path: str | Path, prompts: Sequence[Sequence[int]],
                   opset: int = 17, new_tokens: int = 4,
                   thresholds: ParityThresholds | None = None) -> TeacherExport:
    """The teacher ``module`` (ids -> logits, or an ``HFLogits``) as a cache-free ONNX graph at
    ``path``, parity-checked on greedy continuations of ``prompts`` (every step's logits within
    ``thresholds``, identical tokens). Never raises for a teacher that does not export: the
    result says why (see the module docstring).

    >>> export_teacher(teacher.module, "teacher.onnx", [[1, 2, 3]]).exported  # doctest: +SKIP
    True
    """

    _check_prompts(prompts, new_tokens)
    thresholds = thresholds or ParityThresholds()
    module.eval()
    graph, restore = _teacher_graph(module)
    try:
        with torch.no_grad():
            proto, _ = trace_model(graph, (torch.zeros((1, 3), dtype=torch.long),), (INPUT_IDS,),
                                   (LOGITS,), {INPUT_IDS: {0: "batch", 1: "sequence"},
                                               LOGITS: {0: "batch", 1: "sequence"}}, opset)
    except (EdgekdError, RuntimeError, TypeError, ValueError) as exc:
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return TeacherExport(None, f"the teacher does not export to ONNX: {why}", opset=opset)
    finally:
        restore()
    diff, same = _write_if_parity(proto, module, path, prompts, new_tokens, thresholds)
    if diff > thresholds.max_abs_diff or not same:
        return TeacherExport(
            None, f"the teacher's ONNX graph disagrees with PyTorch (max abs logit diff "
            f"{diff:.3g} vs allowed {thresholds.max_abs_diff:g}; continuations identical: "
            f"{same}): benched in PyTorch only", diff, same, len(proto.graph.node), opset)
    return TeacherExport(
        str(path), "prefill graph without a KV cache (decoding recomputes the prefix)", diff,
        same, len(proto.graph.node), opset)


def cached_teacher_export(module: nn.Module, prompts: Sequence[Sequence[int]]) -> TeacherExport:
    """:func:`export_teacher` into edgekd's cache, keyed by the teacher's weights: a teacher is
    traced once, not on every run (a 135M teacher's graph is ~0.5 GB, too much to copy into
    each run folder). The outcome, exported or not, is cached beside it."""
    import json

    from edgekd.cache import cache_dir, cache_key
    from edgekd.fileio import write_json_atomic
    from edgekd.teacher.outputs import weights_hash

    key = cache_key(teacher=weights_hash(module), torch=torch.__version__, v=1)
    path, outcome = cache_dir() / f"lm-teacher-{key}.onnx", cache_dir() / f"lm-teacher-{key}.json"
    if outcome.is_file():
        try:
            known = json.loads(outcome.read_text(encoding="utf-8"))
            known.pop("exported", None)
            result = TeacherExport(**known)
            if result.path is None or Path(result.path).is_file():
                return result
        except (OSError, ValueError, TypeError):
            pass  # a damaged entry is redone, not trusted
    result = export_teacher(module, path, prompts)
    write_json_atomic(outcome, result.to_dict())
    return result
