"""Benchmark one model: latency, peak memory, size, accuracy and fidelity on the test split."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from edgekd.bench.accuracy import classification_metrics, embedding_metrics, predict
from edgekd.bench.harness import measure_latency
from edgekd.bench.memory import peak_rss_mb
from edgekd.data import Split
from edgekd.report import ModelResult
from edgekd.runtimes import get_runtime
from edgekd.runtimes.ort_cpu import host_threads


@dataclass(frozen=True)
class ModelRef:
    """A model to benchmark: a file (ONNX or edgekd safetensors checkpoint) and how to run it."""

    name: str
    path: str
    runtime: str  # registry key, e.g. "ort_cpu", "torch_cpu"
    precision: str = "fp32"
    role: str = "student"
    params: int = 0


def bench_model(
    ref: ModelRef,
    test: Split,
    threads: int,
    batch_size: int,
    teacher_logits: np.ndarray | None = None,
    min_time_s: float = 0.5,
    task: str = "classification",
    model: object | None = None,
) -> tuple[ModelResult, np.ndarray]:
    """Latency, memory, size and quality of one model on ``test``.

    ``task="embedding"`` scores vectors (cosine to the teacher, nearest-neighbour agreement, which
    also fills ``agreement_with_teacher``) instead of logits. ``model``, when given, is an
    in-process model to run instead of opening ``ref.path`` (a user's teacher, which a fresh
    process cannot rebuild safely): its peak memory is not measured.
    """
    runtime = get_runtime(ref.runtime)
    session = runtime.open(ref.path if model is None else model, threads)
    feed = {k: v[:batch_size] for k, v in test.inputs.items()}
    samples = measure_latency(
        lambda: session.run(feed),
        min_time_s=min_time_s,
        metadata={"runtime": ref.runtime, "provider": session.provider, "threads": threads},
    )
    summary = samples.summary()
    logits = predict(session, test)
    if task == "embedding":
        fidelity = embedding_metrics(logits, teacher_logits)
        metrics = {
            "accuracy": None,
            "top5_accuracy": None,
            "agreement_with_teacher": fidelity["nn_agreement"],
            "kl_to_teacher": None,
        }
    else:
        fidelity = {"cosine_to_teacher": None}
        metrics = classification_metrics(logits, test.y, teacher_logits)
    notes = [summary.warning] if summary.warning else []
    if model is None:
        memory = peak_rss_mb(ref.runtime, ref.path, feed, host_threads(threads))
    else:
        memory = None
        notes.append("peak memory not measured: the model runs in this process")
    result = ModelResult(
        name=ref.name,
        path=ref.path,
        format="onnx" if ref.path.endswith(".onnx") else "torch",
        precision=ref.precision,
        provider=session.provider,
        params=ref.params,
        size_bytes=os.path.getsize(ref.path) if os.path.isfile(ref.path) else 0,
        latency_ms=summary.to_dict(),
        peak_rss_mb=memory,
        accuracy=metrics["accuracy"],
        agreement_with_teacher=metrics["agreement_with_teacher"],
        role=ref.role,
        runtime=ref.runtime,
        top5_accuracy=metrics["top5_accuracy"],
        kl_to_teacher=metrics["kl_to_teacher"],
        latency_samples_ms=list(samples.samples_ms),
        loops=samples.loops,
        threads=host_threads(threads),
        batch_size=batch_size,
        notes=notes,
        cosine_to_teacher=fidelity["cosine_to_teacher"],
    )
    return result, logits
