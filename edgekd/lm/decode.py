"""Greedy decoding with a KV cache, the same loop for an exported ONNX LM and a PyTorch one.

The ONNX side (:class:`OnnxLM`) imports neither torch nor onnxruntime: it wraps a session opened
by ``edgekd.runtimes`` and speaks the graph contract ``edgekd.lm.export`` writes:

    inputs   input_ids [batch, sequence] int64,
             past_key_values.{i}.key / .value [batch, kv_heads, past_sequence, head_dim]
    outputs  logits [batch, sequence, vocab],
             present.{i}.key / .value [batch, kv_heads, past_sequence + sequence, head_dim]

(the names Hugging Face Optimum and onnxruntime-genai use). Prefill is the same graph with
``past_sequence = 0``, so one file serves both phases. :class:`TorchLM` puts a PyTorch model
behind the same ``step``/``empty_cache`` interface (importing torch only when it steps), so
:func:`greedy` and the benchmark treat both alike.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekd.errors import BadInputError

INPUT_IDS = "input_ids"
LOGITS = "logits"


def past_names(layer: int) -> tuple[str, str]:
    return f"past_key_values.{layer}.key", f"past_key_values.{layer}.value"


def present_names(layer: int) -> tuple[str, str]:
    return f"present.{layer}.key", f"present.{layer}.value"


@dataclass(frozen=True)
class Continuation:
    """A greedy continuation: the new token ids and the logits that chose each one."""

    prompt: tuple[int, ...]
    tokens: tuple[int, ...]
    step_logits: tuple[np.ndarray, ...]  # [sequence, vocab] for the prefill, then [1, vocab] each


def _check_prompt(prompt: Sequence[int]) -> np.ndarray:
    ids = np.asarray(prompt, dtype=np.int64).reshape(1, -1)
    if ids.shape[1] == 0:
        raise BadInputError("greedy decoding needs a prompt of at least one token")
    return ids


class OnnxLM:
    """An exported LM behind an ONNX Runtime session (anything with ``run(None, feed)`` and
    ``get_inputs()``), decoding one sequence at a time.

    A graph with ``input_ids`` alone (a teacher exported without its cache: ``input_ids`` ->
    ``logits``, see ``edgekd.lm.export.export_teacher``) is run by recomputing: its "cache" is
    the ids read so far, and each step re-reads them all (``recompute`` is True)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        inputs = {i.name: i for i in session.get_inputs()}
        self.layers = sum(1 for name in inputs if name.startswith("past_key_values.")) // 2
        self.recompute = self.layers == 0 and set(inputs) == {INPUT_IDS}
        if INPUT_IDS not in inputs or (self.layers == 0 and not self.recompute):
            raise BadInputError(
                f"ONNX LM: the graph needs inputs '{INPUT_IDS}' and past_key_values.N.key/.value "
                f"(edgekd.lm.export writes them), or '{INPUT_IDS}' alone; got {sorted(inputs)}"
            )
        self.kv_heads = self.head_dim = 0
        self.cache_dtype = np.float32
        if not self.recompute:
            shape = inputs[past_names(0)[0]].shape  # [batch, kv_heads, past_sequence, head_dim]
            self.kv_heads, self.head_dim = int(shape[1]), int(shape[3])
            if "float16" in inputs[past_names(0)[0]].type:
                self.cache_dtype = np.float16
        self._outputs = [LOGITS] + [n for i in range(self.layers) for n in present_names(i)]

    def empty_cache(self, batch: int = 1) -> Any:
        if self.recompute:
            return np.zeros((batch, 0), dtype=np.int64)
        empty = np.zeros((batch, self.kv_heads, 0, self.head_dim), dtype=self.cache_dtype)
        return {name: empty for i in range(self.layers) for name in past_names(i)}

    def step(self, input_ids: np.ndarray, cache: Any) -> tuple[np.ndarray, Any]:
        """Logits for ``input_ids`` [B, T] given the cache, and the cache grown by T positions."""
        if self.recompute:
            ids = np.concatenate([cache, np.asarray(input_ids, dtype=np.int64)], axis=1)
            logits = self.session.run(self._outputs, {INPUT_IDS: ids})[0]
            return logits[:, -input_ids.shape[1]:], ids
        out = self.session.run(self._outputs, {INPUT_IDS: input_ids, **cache})
        new_cache = {}
        for i in range(self.layers):
            key, value = past_names(i)
            new_cache[key], new_cache[value] = out[1 + 2 * i], out[2 + 2 * i]
        return out[0], new_cache

    def greedy(self, prompt: Sequence[int], new_tokens: int) -> Continuation:
        return greedy(self, prompt, new_tokens)


class TorchLM:
    """A PyTorch causal LM (an ``LMStudent``, a ``transformers`` model, or a module mapping
    ``input_ids`` to logits) behind :class:`OnnxLM`'s ``step``/``empty_cache``/``greedy``."""

    def __init__(self, model: Any) -> None:
        self.model = model.eval()

    def empty_cache(self, batch: int = 1) -> Any:
        return None

    def step(self, input_ids: np.ndarray, cache: Any) -> tuple[np.ndarray, Any]:
        import torch

        ids = torch.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64))
        with torch.no_grad():
            logits, cache = _call_torch(self.model, ids, cache)
        return logits.float().numpy(), cache

    def greedy(self, prompt: Sequence[int], new_tokens: int) -> Continuation:
        return greedy(self, prompt, new_tokens)


def takes_cache(model: Any) -> bool:
    """Whether ``model``'s forward takes a KV cache (see :func:`call_with_cache`)."""
    return _cache_keyword(model) is not None


def call_with_cache(model: Any, ids: Any, cache: Any) -> tuple[Any, Any]:
    """``model`` on ``ids`` (a torch tensor) after ``cache`` (None: a prefill): (logits, the
    grown cache); a model without a cache re-reads the prefix, kept as the cache."""
    return _call_torch(model, ids, cache)


def _cache_keyword(model: Any) -> str | None:
    """The keyword a model takes its KV cache by: ``past_key_values`` (the ``LMStudent``
    contract, transformers 4.x) or ``cache`` (transformers 5.x); None for a plain module."""
    params = inspect.signature(model.forward).parameters
    return next((k for k in ("cache", "past_key_values") if k in params), None)


def _call_torch(model: Any, ids: Any, cache: Any) -> tuple[Any, Any]:
    import torch

    keyword = _cache_keyword(model)
    if keyword is None:  # a plain module: ids -> logits, no cache (each step re-reads the prefix)
        full = ids if cache is None else torch.cat([cache, ids], dim=1)
        logits = model(full)
        logits = logits[0] if isinstance(logits, tuple | list) else logits
        return logits[:, -ids.shape[1]:], full
    out = model(ids, **{keyword: cache}, use_cache=True)
    if hasattr(out, "logits"):  # a transformers ModelOutput
        grown = out.get("cache")  # transformers 5; asking for the old name would warn
        return out.logits, grown if grown is not None else out.get("past_key_values")
    return out


def greedy(lm: Any, prompt: Sequence[int], new_tokens: int) -> Continuation:
    """Greedy decoding with the cache on anything with ``step`` and ``empty_cache``."""
    ids = _check_prompt(prompt)
    logits, cache = lm.step(ids, lm.empty_cache())
    steps, tokens = [logits[0]], []
    while len(tokens) < new_tokens:
        tokens.append(int(steps[-1][-1].argmax()))
        if len(tokens) < new_tokens:
            logits, cache = lm.step(np.array([[tokens[-1]]], dtype=np.int64), cache)
            steps.append(logits[0])
    return Continuation(tuple(int(t) for t in ids[0]), tuple(tokens), tuple(steps))


def torch_greedy(model: Any, prompt: Sequence[int], new_tokens: int) -> Continuation:
    """The same loop in PyTorch (the reference the export's parity check compares with)."""
    return greedy(TorchLM(model), prompt, new_tokens)
