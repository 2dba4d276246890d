"""Benchmarking language models: quality on held-out blocks, speed at batch 1, peak memory, and
greedy continuations for a side-by-side table.

Per model (the teacher in PyTorch, in ONNX where it exports; each student variant):

- ``perplexity`` on held-out token blocks (each block predicts its own next tokens), and, against
  the teacher on the same blocks, next-token ``top1_agreement`` and ``kl_to_teacher``
  (``edgekd.lm.metrics``). The blocks are streamed: for each block the teacher runs once and every
  model after it, so no model's logits over the whole set are ever held in memory.
- ``ttft_ms``: the prefill of ``prompt_tokens`` tokens (a fresh, empty cache), which yields the
  first new token; ``decode_ms_per_token``: each following step with the KV cache; and
  ``decode_tokens_per_s = 1000 / p50 decode ms``. Both are timed per call over several greedy
  runs (``LatencySamples``: p50, p95 and whether the spread is trustworthy). Each run's samples
  are also kept apart (``ttft_runs``, ``decode_runs`` in report.json, one ``LatencySamples`` per
  run), so ``edgekd gate --baseline`` compares them with the classifier gate's statistics across
  runs (``edgekd.gate.compare``). An ONNX model's runs are each a fresh process
  (``python -m edgekd.lm._timeprobe``; metadata ``"unit": "process"``), as the classifier bench's
  are, because runs within one process share its luck; a PyTorch model's (the teacher) are
  repeats within this process (``"unit": "repeat"``).
- ``peak_memory_mb``: peak resident memory of a fresh process that loads the ONNX model and fills
  its KV cache to ``context_tokens`` (``python -m edgekd.lm._memprobe``); PyTorch models get
  none (their process would count PyTorch itself).
- greedy continuations of the same prompts, token ids (``side_by_side`` turns decoded texts into
  a Markdown table for report.md).

ONNX sessions come from ``edgekd.runtimes`` (the one place that opens them); this module imports
torch only for PyTorch models.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.bench.stats import LatencySamples, pooled
from edgekd.errors import BadInputError
from edgekd.lm.decode import OnnxLM, TorchLM
from edgekd.lm.metrics import log_softmax
from edgekd.lm.quantize import LMVariant
from edgekd.results import Line


def open_onnx_lm(path: str | Path, threads: int = 1) -> OnnxLM:
    """An exported LM on ONNX Runtime's CPU provider, safety-checked, with ``threads`` threads."""
    from edgekd.hostinfo import host_threads
    from edgekd.runtimes.ort_cpu import open_session
    from edgekd.safety import check_onnx_for_ort

    check_onnx_for_ort(path)
    return OnnxLM(open_session(path, host_threads(threads)))


# --- quality --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LMQuality:
    perplexity: float
    top1_agreement: float | None  # None for the teacher itself, or without a teacher
    kl_to_teacher: float | None
    tokens: int


def _block_logits(lm: Any, block: np.ndarray) -> np.ndarray:
    return lm.step(block[None, :-1], lm.empty_cache())[0][0]


def quality(models: Mapping[str, Any], blocks: np.ndarray, teacher: Any = None
            ) -> dict[str, LMQuality]:
    """Perplexity of each model (anything with ``step``/``empty_cache``) on ``blocks``
    (``[N, T + 1]`` token ids: positions 0..T-1 predict 1..T), and top-1 agreement and KL with
    ``teacher`` on the same positions (None where the vocabularies differ)."""
    blocks = np.asarray(blocks, dtype=np.int64)
    if blocks.ndim != 2 or blocks.shape[0] == 0 or blocks.shape[1] < 2:
        raise BadInputError(f"held-out blocks must be [N >= 1, T + 1 >= 2] token ids, got shape "
                            f"{blocks.shape}")
    sums = {name: [0.0, 0.0, 0.0] for name in models}  # nll, agreeing positions, kl
    compared = {name: teacher is not None for name in models}  # False: vocabularies differ
    for block in blocks:
        targets = block[1:]
        t_logp = log_softmax(_block_logits(teacher, block)) if teacher is not None else None
        for name, lm in models.items():
            logp = log_softmax(_block_logits(lm, block))
            if logp.shape[0] != len(targets) or targets.max() >= logp.shape[-1]:
                raise BadInputError(f"{name}: logits {logp.shape} do not fit blocks of "
                                    f"{len(targets)} targets with ids up to {targets.max()}")
            sums[name][0] -= float(np.take_along_axis(logp, targets[:, None], -1).sum())
            compared[name] = compared[name] and t_logp is not None and t_logp.shape == logp.shape
            if compared[name]:
                sums[name][1] += float((logp.argmax(-1) == t_logp.argmax(-1)).sum())
                p_t = np.exp(t_logp)
                with np.errstate(invalid="ignore"):
                    sums[name][2] += float(np.where(p_t > 0, p_t * (t_logp - logp), 0).sum())
    n = blocks.shape[0] * (blocks.shape[1] - 1)
    return {name: LMQuality(float(np.exp(s[0] / n)), s[1] / n if compared[name] else None,
                            s[2] / n if compared[name] else None, n) for name, s in sums.items()}


# --- speed ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LMSpeed:
    """Timings of ``time_decoding`` (or ``time_in_processes``): ``ttft`` and ``decode`` pool
    every run's samples; ``ttft_runs`` and ``decode_runs`` keep them per run (the gate's unit of
    comparison)."""

    ttft: LatencySamples
    decode: LatencySamples
    prompt_tokens: int
    ttft_runs: tuple[LatencySamples, ...] = ()
    decode_runs: tuple[LatencySamples, ...] = ()

    @property
    def ttft_ms(self) -> float:
        return self.ttft.summary().p50

    @property
    def decode_ms_per_token(self) -> float:
        return self.decode.summary().p50

    @property
    def decode_tokens_per_s(self) -> float:
        return 1000.0 / self.decode_ms_per_token


def time_decoding(lm: Any, prompt_tokens: int, new_tokens: int = 16, runs: int = 5,
                  vocab_size: int = 2, seed: int = 0, prefills: int = 1) -> LMSpeed:
    """Time ``runs`` greedy generations of ``new_tokens`` after a random prompt of
    ``prompt_tokens`` ids: each run times ``prefills`` prefills from an empty cache (each a
    time-to-first-token sample) and then each later step (a decode sample); one warm-up
    generation first, untimed."""
    if prompt_tokens < 1 or new_tokens < 2 or runs < 1 or prefills < 1:
        raise BadInputError("time_decoding needs prompt_tokens >= 1, new_tokens >= 2, runs >= 1, "
                            "prefills >= 1")
    prompt = np.random.default_rng(seed).integers(0, vocab_size, (1, prompt_tokens))
    meta = {"prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "runs": runs,
            "prefills": prefills, "unit": "repeat"}  # fmt: skip
    ttft_runs, decode_runs = [], []
    for run in range(runs + 1):
        firsts, steps = [], []
        for _ in range(prefills):
            start = time.perf_counter_ns()
            logits, cache = lm.step(prompt, lm.empty_cache())
            firsts.append(time.perf_counter_ns() - start)
        token = np.array([[int(logits[0, -1].argmax())]], dtype=np.int64)
        for _ in range(new_tokens - 1):
            start = time.perf_counter_ns()
            logits, cache = lm.step(token, cache)
            steps.append(time.perf_counter_ns() - start)
            token = np.array([[int(logits[0, -1].argmax())]], dtype=np.int64)
        if run:  # run 0 warms caches and the allocator up
            here = {**meta, "repeat": run}
            ttft_runs.append(_samples(firsts, here))
            decode_runs.append(_samples(steps, here))
    return LMSpeed(_pooled(ttft_runs, meta), _pooled(decode_runs, meta), prompt_tokens,
                   tuple(ttft_runs), tuple(decode_runs))


def _samples(nanoseconds: list[int], meta: dict[str, Any]) -> LatencySamples:
    return LatencySamples(tuple(max(v / 1e6, 1e-6) for v in nanoseconds), metadata=meta)


def _pooled(runs: Sequence[LatencySamples], meta: dict[str, Any]) -> LatencySamples:
    return dataclasses.replace(pooled(runs), metadata=meta)


def time_in_processes(path: str | Path, prompt_tokens: int, new_tokens: int = 16,
                      processes: int = 3, vocab_size: int = 2, prefills: int = 1,
                      threads: int = 1) -> LMSpeed:
    """``time_decoding`` of the ONNX LM at ``path`` with each of its ``processes`` runs in a
    fresh process (``python -m edgekd.lm._timeprobe``), one after another."""
    if processes < 1:
        raise BadInputError(f"LM timing needs processes >= 1, got {processes}")
    spec = {"model": str(path), "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
            "vocab_size": vocab_size, "prefills": prefills, "threads": threads}  # fmt: skip
    meta = {"prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "runs": processes,
            "prefills": prefills, "unit": "process"}  # fmt: skip
    ttft_runs, decode_runs = [], []
    for i in range(processes):
        out = _child("edgekd.lm._timeprobe", spec, f"LM timing of {path}")
        ttft_runs.append(_relabel(out["ttft"], {**meta, "process": i + 1}))
        decode_runs.append(_relabel(out["decode"], {**meta, "process": i + 1}))
    return LMSpeed(_pooled(ttft_runs, meta), _pooled(decode_runs, meta), prompt_tokens,
                   tuple(ttft_runs), tuple(decode_runs))


def _relabel(stored: dict[str, Any], meta: dict[str, Any]) -> LatencySamples:
    return dataclasses.replace(LatencySamples.from_dict(stored), metadata=meta)


def _child(module: str, spec: dict[str, Any], what: str) -> dict[str, Any]:
    """The last stdout line (JSON) of ``python -m module SPEC``; RuntimeError with its last
    error line if it fails."""
    proc = subprocess.run([sys.executable, "-m", module, json.dumps(spec)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{what} failed: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- memory ---------------------------------------------------------------------------------------

def peak_memory_mb(path: str | Path, context_tokens: int, threads: int = 1) -> float:
    """Peak RSS (MiB) of a fresh process that opens the ONNX LM at ``path`` and fills its KV
    cache to ``context_tokens`` (a prefill of all but one position, then one decode step)."""
    spec = {"model": str(path), "context_tokens": int(context_tokens), "threads": threads}
    return float(_child("edgekd.lm._memprobe", spec, f"LM memory probe for {path}")["peak_rss_mb"])


def variant_meter(blocks: np.ndarray, prompt_tokens: int = 32, new_tokens: int = 16,
                  runs: int = 3, threads: int = 1) -> Callable[[str, Path], LMVariant]:
    """``measure(name, path)`` for ``edgekd.lm.quantize.select_lm_quantization``: a variant's
    perplexity on ``blocks`` and its decode tokens/s at batch 1.

    >>> select_lm_quantization("s.onnx", "out", configs, variant_meter(blocks), 0.05)
    ... # doctest: +SKIP
    """
    vocab = int(np.asarray(blocks).max()) + 1

    def measure(name: str, path: Path) -> LMVariant:
        lm = open_onnx_lm(path, threads)
        score = quality({name: lm}, blocks)[name]
        speed = time_decoding(lm, prompt_tokens, new_tokens, runs, vocab)
        return LMVariant(name, str(path), Path(path).stat().st_size, score.perplexity,
                         speed.decode_tokens_per_s)

    return measure


# --- one model, and the side-by-side table -------------------------------------------------------

@dataclass(frozen=True)
class LMBenchResult:
    """One model's row of the LM benchmark (figures measured here; None = not measured)."""

    name: str
    format: str  # "onnx" or "torch"
    path: str
    size_bytes: int | None
    perplexity: float
    top1_agreement: float | None
    kl_to_teacher: float | None
    ttft_ms: float
    ttft_p95_ms: float
    decode_ms_per_token: float
    decode_p95_ms: float
    decode_tokens_per_s: float
    peak_memory_mb: float | None
    prompt_tokens: int
    context_tokens: int
    continuations: tuple[tuple[int, ...], ...]
    # per run (``LatencySamples.to_dict``): what ``edgekd gate --baseline`` compares
    ttft_runs: tuple[dict, ...] = ()
    decode_runs: tuple[dict, ...] = ()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _count(value: int | Mapping[str, int], name: str, default: int) -> int:
    """``value`` itself, or its count for model ``name`` (``default`` when it has none)."""
    return int(value.get(name, default)) if isinstance(value, Mapping) else int(value)


def bench_lm(models: Mapping[str, Any], blocks: np.ndarray, prompts: Sequence[Sequence[int]],
             teacher: str | None = None, prompt_tokens: int = 32, context_tokens: int = 128,
             new_tokens: int = 16, runs: int | Mapping[str, int] = 3, threads: int = 1,
             measure_memory: bool = True, prefills: int | Mapping[str, int] = 4,
             fresh_processes: bool = True) -> list[LMBenchResult]:
    """Benchmark every model (name -> ONNX path or PyTorch module); ``teacher`` names the one
    the others are compared with. Each of ``runs`` repeats times ``prefills`` prefills and one
    generation of ``new_tokens`` (``time_decoding``): an ONNX model's each in a fresh process
    (``time_in_processes``) unless ``fresh_processes`` is False; a PyTorch model's in this one.
    ``runs`` and ``prefills`` are one count for every model or a count per model name (a name
    not in the mapping gets this function's default).

    >>> bench_lm({"teacher": hf_model, "student": "s.onnx"}, blocks, [[1, 2]],
    ...          teacher="teacher")  # doctest: +SKIP
    """
    if teacher is not None and teacher not in models:
        raise BadInputError(f"LM bench: teacher {teacher!r} is not among the models")
    lms = {name: _open(m, threads) for name, m in models.items()}
    vocab = int(np.asarray(blocks).max()) + 1
    scores = quality(lms, blocks, lms[teacher] if teacher else None)
    rows = []
    for name, model in models.items():
        lm, q = lms[name], scores[name]
        is_file = isinstance(model, str | Path)
        n_runs, n_prefills = _count(runs, name, 3), _count(prefills, name, 4)
        speed = (time_in_processes(model, prompt_tokens, new_tokens, n_runs, vocab, n_prefills,
                                   threads)
                 if is_file and fresh_processes else
                 time_decoding(lm, prompt_tokens, new_tokens, n_runs, vocab, prefills=n_prefills))
        memory = (peak_memory_mb(model, context_tokens, threads)
                  if is_file and measure_memory else None)
        own = name == teacher
        rows.append(LMBenchResult(
            name=name, format="onnx" if is_file else "torch", path=str(model) if is_file else "",
            size_bytes=Path(model).stat().st_size if is_file else None,
            perplexity=q.perplexity, top1_agreement=None if own else q.top1_agreement,
            kl_to_teacher=None if own else q.kl_to_teacher, ttft_ms=speed.ttft_ms,
            ttft_p95_ms=speed.ttft.summary().p95, decode_ms_per_token=speed.decode_ms_per_token,
            decode_p95_ms=speed.decode.summary().p95,
            decode_tokens_per_s=speed.decode_tokens_per_s, peak_memory_mb=memory,
            prompt_tokens=prompt_tokens, context_tokens=context_tokens,
            continuations=tuple(lm.greedy(p, new_tokens).tokens for p in prompts),
            ttft_runs=tuple(r.to_dict() for r in speed.ttft_runs),
            decode_runs=tuple(r.to_dict() for r in speed.decode_runs)))
    return rows


def _open(model: Any, threads: int) -> Any:
    if isinstance(model, str | Path):
        return open_onnx_lm(model, threads)
    return TorchLM(model)


def side_by_side(prompts: Sequence[str], continuations: Mapping[str, Sequence[str]]) -> str:
    """A Markdown table: one row per prompt, one column per model's (decoded) continuation."""
    names = list(continuations)
    for name, texts in continuations.items():
        if len(texts) != len(prompts):
            raise BadInputError(f"{name}: {len(texts)} continuations for {len(prompts)} prompts")

    def cell(text: str) -> str:
        return " ".join(text.split()).replace("|", "\\|") or " "

    head = "| prompt | " + " | ".join(names) + " |"
    rule = "|---" * (len(names) + 1) + "|"
    body = ["| " + " | ".join([cell(p)] + [cell(continuations[n][i]) for n in names]) + " |"
            for i, p in enumerate(prompts)]
    return "\n".join([head, rule, *body])


def budget_lines(row: LMBenchResult, budget: Any, teacher_perplexity: float | None) -> list[Line]:
    """The set lines of a target's ``LMBudget`` with ``row``'s measured figures: decode and
    time to first token at p95 on this host (``absolute``, as the classifier's latency line),
    peak memory, file size, and the perplexity increase over the teacher (``relative``). A figure
    that was not measured is None (the gate cannot decide that line)."""
    mib = 2**20
    size = None if row.size_bytes is None else row.size_bytes / mib
    increase = (row.perplexity / teacher_perplexity - 1) if teacher_perplexity else None
    figures = (("decode_ms_per_token", row.decode_p95_ms, "ms", "absolute"),
               ("ttft_ms", row.ttft_p95_ms, "ms", "absolute"),
               ("memory_mb", row.peak_memory_mb, "MB", "absolute"),
               ("model_size_mb", size, "MB", "absolute"),
               ("perplexity_increase", increase, "", "relative"))
    return [Line(name, value, getattr(budget, name), unit, kind)
            for name, value, unit, kind in figures if getattr(budget, name)]
