"""Measure models in fresh processes: latency, memory, throughput, accuracy and fidelity.

Each model is measured in ``processes`` fresh worker processes (``edgekd.bench._worker``), run one
at a time and interleaved across models (A B C, then C B A, ...) so that a drift of the machine
touches every model alike. On a shared machine one process's median can sit 10-70% away from the
next one's while each process's own samples agree closely; samples from one process cannot show
that, so the report keeps every process's raw samples (``latency_processes``) and the gate compares
processes, not only samples. The pooled samples give the summary (``latency_ms``) and the absolute
budget check (a p95 upper bound at 95% needs 72 samples, hence ``min_samples``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.bench.accuracy import classification_metrics, embedding_metrics, predict
from edgekd.bench.contention import MIN_CPU_SHARE, CleanRuns, clean_runs
from edgekd.bench.digest import file_sha256
from edgekd.bench.feeds import fixed_batch, map_data, random_inputs, take_batch
from edgekd.bench.harness import measure_latency, throughput_row
from edgekd.bench.memory import peak_rss_mb
from edgekd.bench.sources import InputSpec, onnx_input_specs
from edgekd.bench.stats import (
    LatencySamples,
    LatencySummary,
    pooled,
    process_medians,
    samples_needed,
)
from edgekd.data import Split
from edgekd.errors import BadInputError, DataError
from edgekd.hostinfo import host_threads
from edgekd.progress import status
from edgekd.results import ModelResult
from edgekd.runtimes import get_runtime

# The package's parent folder, so a worker imports this edgekd even when the caller found it only
# through its own sys.path.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
WORKER_TIMEOUT_S = 900
PAIRED_SECONDS = 0.5  # timed seconds per model in a paired process (``PairedProcesses``)


@dataclass(frozen=True)
class BenchSettings:
    """How hard to measure. Times are per process; ``min_samples`` is pooled over processes.

    processes       fresh processes per model (>= 2 lets the gate see process-to-process drift)
    min_samples     pooled samples per model; 72 lets ``check_absolute`` bound a p95 at 95%
    seconds_per_process  timed seconds in each process (after warm-up and calibration)
    max_time_s      per-process cap on one latency measurement (see ``measure_latency``)
    warmup          untimed calls before calibration, in every process
    sample_min_s    each sample lasts at least this long (loop count calibrated to it)
    large_batch     the larger batch for throughput (0: skip it)
    extra_processes  at most this many more processes per model replace contended ones (whose
                    samples mostly waited for the CPU; see ``edgekd.bench.contention``)
    """

    processes: int = 3
    min_samples: int = samples_needed(0.95)
    seconds_per_process: float = 0.25
    max_time_s: float = 10.0
    warmup: int = 10
    # Half a millisecond, not the harness's 2 ms: on a busy Linux host the scheduler hands out
    # slices of a few ms, and at a load of 4.5 on 2 cores 2-ms samples were cut (descheduled) in
    # 4-82% of cases against 3-14% for 0.5-ms ones; the timer's cost is still < 0.1% of a sample.
    sample_min_s: float = 0.0005
    large_batch: int = 32
    extra_processes: int = 3

    def __post_init__(self) -> None:
        if (
            min(self.processes, self.min_samples) < 1
            or min(self.warmup, self.large_batch, self.extra_processes) < 0
        ):
            raise BadInputError(
                "bench settings: processes and min_samples must be >= 1; warmup, large_batch and "
                "extra_processes >= 0"
            )
        for name, value, least in (
            ("seconds_per_process (bench --min-time)", self.seconds_per_process, ">= 0"),
            ("max_time_s", self.max_time_s, "> 0"),
            ("sample_min_s", self.sample_min_s, "> 0"),
        ):
            if not (math.isfinite(value) and (value >= 0 if least == ">= 0" else value > 0)):
                raise BadInputError(
                    f"bench settings: {name} must be a finite number of seconds {least}, "
                    f"got {value}"
                )

    def harness(self) -> dict[str, Any]:
        return {
            "warmup": self.warmup,
            "min_samples": math.ceil(self.min_samples / self.processes),
            "min_time_s": self.seconds_per_process,
            "max_time_s": self.max_time_s,
            "sample_min_s": self.sample_min_s,
        }

    def to_dict(self) -> dict[str, Any]:
        # report.json's bench section keeps its key (a contract): min_time_s, per process
        d = asdict(self)
        d["min_time_s"] = d.pop("seconds_per_process")
        return d


@dataclass(frozen=True)
class ModelRef:
    """A model to benchmark on one runtime: a file (ONNX, edgekd checkpoint) or a factory spec."""

    name: str
    path: str
    runtime: str  # registry key, e.g. "ort_cpu", "torch_cpu"
    precision: str = "fp32"
    role: str = "student"
    params: int = 0
    size_bytes: int | None = None  # None: the file's size
    inputs: tuple[InputSpec, ...] = ()  # empty: read from the ONNX file, or taken from the data
    notes: tuple[str, ...] = field(default=())

    @property
    def format(self) -> str:
        return "onnx" if self.path.lower().endswith(".onnx") else "torch"


@dataclass
class _Job:
    ref: ModelRef
    inputs: tuple[InputSpec, ...]
    feed: str
    large: str | None
    large_batch: int
    predict: dict | None
    sha256: str | None = None  # of the model file, checked by every worker before it opens it
    runs: list[dict] = field(default_factory=list)
    first: dict = field(default_factory=dict)


def _g6(v: float) -> float:
    # Six significant figures (a nanosecond at 1 ms) keep a committed baseline report small.
    return float(f"{v:.6g}")


def _save(folder: Path, name: str, arrays: dict[str, np.ndarray]) -> str:
    path = folder / f"{name}.npz"
    np.savez(path, **arrays)
    return str(path)


def _save_rows(
    folder: Path, name: str, arrays: dict[str, np.ndarray], chunk_bytes: int = 8 << 20
) -> dict[str, str]:
    """Each array as its own ``.npy``, written a chunk of rows at a time: a streamed image folder
    (``edgekd.data.stream.LazyRows``) is decoded chunk by chunk and never held whole, so peak
    memory does not grow with the test split. Workers map the files (``_worker._load_rows``)."""
    from edgekd.data.mapped import row_chunks

    paths = {}
    for i, (key, rows) in enumerate(arrays.items()):
        path = folder / f"{name}-{i}.npy"
        dtype = np.dtype(rows.dtype)
        header = {
            "descr": np.lib.format.dtype_to_descr(dtype),
            "fortran_order": False,
            "shape": tuple(rows.shape),
        }
        with open(path, "wb") as fh:
            np.lib.format.write_array_header_2_0(fh, header)
            for chunk in row_chunks(rows, chunk_bytes):  # a LazyRows slice is decoded here
                fh.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())
        paths[key] = str(path)
    return paths


def _prepare(
    i: int, ref: ModelRef, test: Split | None, batch: int, s: BenchSettings, folder: Path
) -> _Job:
    inputs = ref.inputs
    # Workers open the file only if its bytes still hash to this (a file swapped between this
    # hash and the check below is the race edgekd.safety names as its limit).
    sha256 = file_sha256(ref.path)
    if ref.format == "onnx":
        from edgekd.safety import read_onnx_facts

        # Once here, so that no worker checks again; read from the wire format, without the
        # onnx package (whose import was most of a benchmark's start-up).
        facts = read_onnx_facts(ref.path)
        if not inputs:
            inputs = onnx_input_specs(facts, ref.path)
    fixed = fixed_batch(inputs)
    if fixed is not None and fixed != batch:
        raise DataError(
            f"{ref.name}: the model's batch axis is fixed at {fixed} but the target runs batch "
            f"{batch}; export it with a dynamic batch axis"
        )
    if test is not None:
        samples = map_data(ref.name, inputs, test.inputs)
        feed = take_batch(samples, batch)
        predict = {
            "inputs": _save_rows(folder, f"test{i}", samples),
            "batch": fixed or 256,
            "fixed": fixed is not None,
            "out": str(folder / f"logits{i}.npy"),
        }
    else:
        samples = random_inputs(ref.name, inputs, max(batch, s.large_batch))
        feed, predict = take_batch(samples, batch), None
    large_batch = s.large_batch if s.large_batch > batch else (2 * batch if s.large_batch else 0)
    large = None
    if large_batch and fixed is None:
        large = _save(folder, f"large{i}", take_batch(samples, large_batch))
    feed_path = _save(folder, f"feed{i}", feed)
    return _Job(ref, inputs, feed_path, large, large_batch, predict, sha256)


def _run_worker(spec: dict, folder: Path, tag: str) -> dict:
    spec_path = folder / f"spec-{tag}.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "edgekd.bench._worker", str(spec_path)],
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT_S,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            f"benchmark process for {spec['model']} ran over {WORKER_TIMEOUT_S} s"
        ) from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        if proc.returncode == 2:  # the worker met bad input: say so as bad input
            raise BadInputError(f"{spec['model']} on {spec['runtime']}: {last.split(': ', 1)[-1]}")
        raise RuntimeError(f"benchmark process for {spec['model']} failed: {last}")
    return json.loads(Path(spec["out"]).read_text())


def _spec(
    job: _Job, threads: int, s: BenchSettings, folder: Path, process: int
) -> tuple[dict, str]:
    tag = f"{job.ref.name}-{process}".replace(os.sep, "_")
    spec = {
        "runtime": job.ref.runtime,
        "model": job.ref.path,
        "threads": threads,
        "feed": job.feed,
        "harness": s.harness(),
        "process": process,
        "out": str(folder / f"out-{tag}.json"),
        "sha256": job.sha256,
        "sys_path": [p for p in sys.path if p],
        "metadata": {"model": job.ref.name, "runtime": job.ref.runtime, "threads": threads},
    }
    if process == 0:
        if job.large:
            small = {**s.harness(), "min_samples": 10, "min_time_s": s.seconds_per_process / 2}
            spec["throughput"] = [
                {"batch_size": job.large_batch, "feed": job.large, "harness": small}
            ]
        spec["predict"] = job.predict
    return spec, tag


def _runs(job: _Job) -> list[LatencySamples]:
    return [LatencySamples.from_dict(r["samples"]) for r in job.runs]


def _measure_once(job: _Job, threads: int, s: BenchSettings, folder: Path, process: int) -> None:
    status(f"benchmarking {job.ref.name} ({job.ref.runtime}), process {process + 1}")
    spec, tag = _spec(job, threads, s, folder, process)
    out = _run_worker(spec, folder, tag)
    job.runs.append(out)
    if process == 0:
        job.first = out


def measure_models(
    refs: list[ModelRef],
    test: Split | None,
    threads: int,
    batch_size: int,
    settings: BenchSettings = BenchSettings(),
    teacher_logits: np.ndarray | None = None,
    reference: str | None = None,
) -> tuple[list[ModelResult], dict[str, np.ndarray]]:
    """Measure every ref; returns the results (in ``refs`` order) and each model's test logits.

    ``test`` None means random inputs (no accuracy). Fidelity (agreement, KL) is against
    ``teacher_logits`` or, when None, the logits of the ref named ``reference``, which itself is
    reported with agreement 1 and KL 0.

    >>> refs = [ModelRef("s", "s.onnx", "ort_cpu")]
    >>> results, _ = measure_models(refs, None, threads=4, batch_size=1)  # doctest: +SKIP
    """
    threads = host_threads(threads)
    names = [r.name for r in refs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise BadInputError(f"two models share the name {dupes[0]!r}: names must be unique")
    with tempfile.TemporaryDirectory(prefix="edgekd-bench-") as tmp:
        folder = Path(tmp)
        jobs = [_prepare(i, r, test, batch_size, settings, folder) for i, r in enumerate(refs)]
        for p in range(settings.processes):
            # ABBA order across rounds: no model always runs first, after the machine has been idle.
            for job in jobs if p % 2 == 0 else reversed(jobs):
                _measure_once(job, threads, settings, folder, p)
        # A process whose samples mostly waited for the CPU timed the neighbours: measure that
        # model again in a fresh process, up to ``extra_processes`` times (all runs are kept).
        p = settings.processes
        while True:
            short = [
                j
                for j in jobs
                if len(j.runs) < settings.processes + settings.extra_processes
                and clean_runs(_runs(j)).contended > len(j.runs) - settings.processes
            ]
            if not short:
                break
            for job in short:
                _measure_once(job, threads, settings, folder, p)
            p += 1
        logits = {j.ref.name: np.load(j.predict["out"]) for j in jobs if j.predict is not None}
    if teacher_logits is None and reference is not None:
        teacher_logits = logits.get(reference)
    results = [
        _result(j, test, threads, batch_size, logits.get(j.ref.name), teacher_logits, reference)
        for j in jobs
    ]
    return results, logits


class ExtraProcesses:
    """More fresh processes of one model, latency only, one per call: how the gate measures a
    regression until it is decided (``edgekd.gate.remeasure``).

    Each call runs the same worker as ``measure_models`` (same harness settings, threads and
    batch) and returns its ``LatencySamples``. Inputs are random, of the model's input shapes:
    the latency of the models edgekd benchmarks does not depend on the values. Close it (or use
    it in a ``with``) to remove its temporary folder.

    >>> ref = ModelRef("s", "s.onnx", "ort_cpu")
    >>> with ExtraProcesses(ref, 1, 1, BenchSettings()) as more:  # doctest: +SKIP
    ...     runs = [more(), more()]
    """

    def __init__(self, ref: ModelRef, threads: int, batch_size: int, settings: BenchSettings):
        self._tmp = tempfile.TemporaryDirectory(prefix="edgekd-more-")
        self._folder = Path(self._tmp.name)
        self._settings = dataclasses.replace(settings, large_batch=0)
        self._threads = threads
        try:
            self._job = _prepare(0, ref, None, batch_size, self._settings, self._folder)
        except BaseException:
            self._tmp.cleanup()
            raise
        self.processes = 0

    def __call__(self) -> LatencySamples:
        self.processes += 1  # process numbers >= 1 measure latency only
        spec, tag = _spec(self._job, self._threads, self._settings, self._folder, self.processes)
        out = _run_worker(spec, self._folder, tag)
        return LatencySamples.from_dict(out["samples"])

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> ExtraProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PairedProcesses:
    """Fresh processes that each time two models in turns (latency only): how the gate's paired
    rounds measure a model and its baseline's model under the same load (``edgekd.gate.remeasure``).

    Each call runs bench's worker once with both models open (``measure_interleaved``) and
    returns (current, baseline) ``LatencySamples``. Random inputs, as ``ExtraProcesses``.

    >>> with PairedProcesses(cur_ref, base_ref, 1, 1, BenchSettings()) as pair:  # doctest: +SKIP
    ...     current, baseline = pair()
    """

    def __init__(
        self,
        current: ModelRef,
        baseline: ModelRef,
        threads: int,
        batch_size: int,
        settings: BenchSettings,
    ):
        self._tmp = tempfile.TemporaryDirectory(prefix="edgekd-pairs-")
        self._folder = Path(self._tmp.name)
        # Longer than a bench process: the ratio of two models timed in turns gains from every
        # sample (drift cancels in it), while a round's cost is mostly the process's start.
        seconds = max(settings.seconds_per_process, PAIRED_SECONDS)
        self._settings = dataclasses.replace(settings, large_batch=0, seconds_per_process=seconds)
        self._threads = threads
        try:
            self._jobs = [
                _prepare(i, ref, None, batch_size, self._settings, self._folder)
                for i, ref in enumerate((current, baseline))
            ]
        except BaseException:
            self._tmp.cleanup()
            raise
        self.processes = 0

    def __call__(self) -> tuple[LatencySamples, LatencySamples]:
        self.processes += 1  # process numbers >= 1 measure latency only
        cur, base = self._jobs
        spec, tag = _spec(cur, self._threads, self._settings, self._folder, self.processes)
        spec["partner"] = {
            "model": base.ref.path,
            "sha256": base.sha256,
            "feed": base.feed,
            "metadata": {"model": base.ref.name, "runtime": base.ref.runtime},
        }
        out = _run_worker(spec, self._folder, f"pair-{tag}")
        return (
            LatencySamples.from_dict(out["samples"]),
            LatencySamples.from_dict(out["partner_samples"]),
        )

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> PairedProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _result(
    job: _Job,
    test: Split | None,
    threads: int,
    batch_size: int,
    logits: np.ndarray | None,
    teacher_logits: np.ndarray | None,
    reference: str | None,
) -> ModelResult:
    ref = job.ref
    runs = _runs(job)
    clean = clean_runs(runs)
    summary, latency = _latency(runs, clean)
    notes = _notes(job, summary, clean, latency)
    device = "gpu" if all(r["device"] == "gpu" for r in job.runs) else "cpu"
    gpu = [r["gpu_memory_mb"] for r in job.runs if r["gpu_memory_mb"] is not None]
    if device == "gpu" and not gpu:
        notes.append("GPU memory not measured (needs pynvml or nvidia-smi)")
    metrics = _metrics(logits, test, teacher_logits, is_ref=ref.name == reference)
    throughput = [
        {**throughput_row(summary, batch_size), "n": summary.n, "processes": len(runs)}
    ] + job.first["throughput"]
    return ModelResult(
        name=ref.name,
        path=ref.path,
        format=ref.format,
        precision=ref.precision,
        provider=job.first["provider"],
        params=ref.params,
        size_bytes=ref.size_bytes if ref.size_bytes is not None else os.path.getsize(ref.path),
        latency_ms=latency,
        peak_rss_mb=max(r["peak_rss_mb"] for r in job.runs),
        **metrics,  # accuracy, top5_accuracy, agreement_with_teacher, kl_to_teacher
        role=ref.role,
        runtime=ref.runtime,
        latency_samples_ms=[_g6(v) for r in runs for v in r.samples_ms],
        loops=max(r.loops for r in runs),
        threads=threads,
        batch_size=batch_size,
        notes=notes,
        device=device,
        gpu_memory_mb=max(gpu) if gpu else None,
        latency_processes=[
            {**r.to_dict(), "samples_ms": [_g6(v) for v in r.samples_ms]} for r in runs
        ],
        throughput=throughput,
        sha256=job.sha256,
    )


def _latency(runs: list[LatencySamples], clean: CleanRuns) -> tuple[LatencySummary, dict]:
    """The pooled summary and the report's ``latency_ms`` section, with the spread of processes."""
    # The headline figures come from the clean samples (see edgekd.bench.contention); every raw
    # sample stays in latency_processes / latency_samples_ms.
    basis = clean.runs or runs
    summary = pooled(basis).summary()
    medians = process_medians(basis).tolist()
    latency = {
        **summary.to_dict(),
        "processes": len(runs),
        "process_p50": medians,
        "process_spread": max(medians) / min(medians) - 1.0,
        "basis": "clean samples" if clean.runs else "all samples (every process was contended)",
        "descheduled_fraction": (
            clean.descheduled / clean.samples if clean.measured_shares else None
        ),
        "contended_processes": clean.contended,
    }
    return summary, latency


def _notes(job: _Job, summary: LatencySummary, clean: CleanRuns, latency: dict) -> list[str]:
    """What a reader of the figures should know: noise, a busy host, a fixed batch axis."""
    medians, spread = latency["process_p50"], latency["process_spread"]
    notes = list(job.ref.notes)
    for note in job.first["notes"]:
        notes.append(note)
    if summary.warning:
        notes.append(f"latency: {summary.warning}")
    if job.large is None and job.large_batch:
        notes.append("larger-batch throughput not measured: the model's batch axis is fixed")
    if clean.descheduled > 0.1 * clean.samples:
        notes.append(
            f"latency: the host was busy: {clean.note()} (the thread held its CPU < "
            f"{MIN_CPU_SHARE:.0%} of the sample); they are left out of the figures and the gate"
        )
    if latency["processes"] > 1 and spread > 0.10:
        notes.append(
            f"latency: process medians differ by {spread:.0%} (from {min(medians):.4g} to "
            f"{max(medians):.4g} ms): the machine is noisy; compare runs with care"
        )
    providers = {r["provider"] for r in job.runs}
    if len(providers) > 1:
        notes.append(f"processes ran on different providers: {', '.join(sorted(providers))}")
    return notes


def _metrics(
    logits: np.ndarray | None,
    test: Split | None,
    teacher_logits: np.ndarray | None,
    is_ref: bool = False,
) -> dict[str, float | None]:
    """Accuracy and fidelity of classification logits; all None without logits or test data.

    The reference model is the teacher the others are compared with: agreement 1 and KL 0.
    """
    if logits is None or test is None:
        return dict.fromkeys(
            ("accuracy", "top5_accuracy", "agreement_with_teacher", "kl_to_teacher")
        )
    metrics = classification_metrics(logits, test.y, None if is_ref else teacher_logits)
    if is_ref:
        metrics.update(agreement_with_teacher=1.0, kl_to_teacher=0.0)
    return metrics


def bench_model(
    ref: ModelRef,
    test: Split,
    threads: int,
    batch_size: int,
    teacher_logits: np.ndarray | None = None,
    min_time_s: float = 0.5,
    processes: int = 3,
) -> tuple[ModelResult, np.ndarray]:
    """One model, measured on its own (``measure_models`` interleaves several: prefer it)."""
    settings = BenchSettings(processes=processes, seconds_per_process=min_time_s / processes)
    results, logits = measure_models([ref], test, threads, batch_size, settings, teacher_logits)
    return results[0], logits[ref.name]


def check_runtime(ref: ModelRef) -> str:
    """ "" when ``ref`` can run on its runtime here, else why not (for the report)."""
    runtime = get_runtime(ref.runtime)
    if ref.format not in runtime.formats:
        raise BadInputError(
            f"{ref.name}: runtime {ref.runtime} runs {', '.join(runtime.formats)} models, not "
            f"{ref.format}"
        )
    if runtime.available():
        return ""
    return runtime.why_unavailable() or f"runtime {ref.runtime} is not available here"


def bench_model_in_process(
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
        metrics = _metrics(logits, test, teacher_logits)
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
        **metrics,  # accuracy, top5_accuracy, agreement_with_teacher, kl_to_teacher
        role=ref.role,
        runtime=ref.runtime,
        latency_samples_ms=list(samples.samples_ms),
        loops=samples.loops,
        threads=host_threads(threads),
        batch_size=batch_size,
        notes=notes,
        cosine_to_teacher=fidelity["cosine_to_teacher"],
    )
    return result, logits
