"""``benchmark``: measure models (and their teacher) for a target and return a report.

The library verb behind ``edgekd bench``. It resolves model specs (``edgekd.bench.sources``), picks
runtimes, says plainly which requested runtime is unavailable here (and measures nothing under its
name), measures everything in fresh interleaved processes (``edgekd.bench.runner``), and records the
host, the thread settings and the measurement settings with the figures. It judges nothing: that is
``edgekd gate``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edgekd.bench.runner import BenchSettings, ModelRef, check_runtime, measure_models
from edgekd.bench.sources import ModelSource, resolve_model
from edgekd.errors import BadInputError
from edgekd.hostinfo import host_info, host_threads, usable_cores
from edgekd.results import Report
from edgekd.runtimes import get_runtime
from edgekd.targets import TargetProfile, load_target

if TYPE_CHECKING:
    from edgekd.data import Split

DEFAULT_RUNTIME = {"onnx": "ort_cpu", "torch": "torch_cpu"}


def _ref(source: ModelSource, runtime: str, role: str) -> ModelRef:
    # The default CPU runtime keeps the plain name (baselines match models by name); any other
    # runtime is part of the name, so "student@ort_cuda" and "student" never get mixed up.
    name = source.name if runtime == DEFAULT_RUNTIME[source.format] else f"{source.name}@{runtime}"
    notes = (f"size: {source.size_note}",) if source.size_note != "file size" else ()
    return ModelRef(
        name=name,
        path=source.spec,
        runtime=runtime,
        precision=source.precision,
        role=role,
        params=source.params,
        size_bytes=source.size_bytes,
        inputs=source.inputs,
        notes=notes,
    )


def _runtimes_for(source: ModelSource, requested: Sequence[str] | None) -> tuple[list[str], str]:
    if not requested:
        return [DEFAULT_RUNTIME[source.format]], ""
    fitting = [r for r in requested if source.format in get_runtime(r).formats]
    if fitting:
        return fitting, ""
    fallback = DEFAULT_RUNTIME[source.format]
    return [fallback], (
        f"{source.name}: none of the requested runtimes ({', '.join(requested)}) runs "
        f"{source.format} models; measured on {fallback}"
    )


def check_out_path(out: str | os.PathLike[str]) -> None:
    """Refuse an ``--out`` that cannot take the report, before anything is measured: a folder,
    a file in a folder that does not exist, or one this user cannot write."""
    if str(out).strip() == "":
        raise BadInputError("--out is empty: give a file name for the report")
    path = Path(out)
    if path.is_dir():
        raise BadInputError(f"--out {str(out)!r}: a folder, not a file name for the report")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise BadInputError(f"--out {out}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise BadInputError(f"--out {out}: not writable here (permission denied)")


def thread_settings(threads: int) -> dict:
    """The thread counts that shape a benchmark figure, as this run set them (training's torch
    threads are another matter: the report's ``training.threads``)."""
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return {
        "target_threads": threads,
        "threads_used": host_threads(threads),
        "cpus_usable": usable_cores(),  # affinity capped by the cgroup CPU quota
        "ort_intra_op_threads": host_threads(threads),
        "ort_inter_op_threads": 1,
        # Kept for old readers: the count a torch-eager benchmark would use, the same as ONNX
        # Runtime's intra-op count above; not the threads training ran with.
        "torch_threads": host_threads(threads),
        **{k.lower(): v for k, v in env.items()},
    }


def _test_data(data: str | None, seed: int, image_size: int | None) -> tuple[Split | None, dict]:
    """``--data``'s test split (None: random inputs) and what the report says about it."""
    if data is None:
        return None, {"name": "random", "note": "random inputs (no --data): no accuracy"}
    from edgekd.data import load_data
    from edgekd.data.readers.image_folder import describe_transform

    bundle = load_data(data, seed=seed, image_size=image_size)
    test = bundle.test
    data_info = {
        "name": bundle.name,
        "split_note": bundle.split_note,
        "test": test.n,
        "test_fingerprint": test.fingerprint(),
        "num_classes": bundle.num_classes,
    }
    if image_size is not None:  # as distill records it
        data_info["image_transform"] = describe_transform(image_size)
    return test, data_info


def benchmark(
    models: Sequence[str],
    target: str | TargetProfile = "mobile",
    data: str | None = None,
    teacher: str | None = None,
    runtimes: Sequence[str] | None = None,
    processes: int = 3,
    settings: BenchSettings | None = None,
    seed: int = 0,
    image_size: int | None = None,
) -> Report:
    """Benchmark ``models`` (and ``teacher``) for ``target``; returns the report.

    ``models`` are specs (``.onnx``, edgekd ``.safetensors``, ``pkg.module:factory``); ``data``
    is ``--data`` (its test split is used), or None for random inputs and no accuracy. ``runtimes``
    are registry keys (default: ``ort_cpu`` for ONNX, ``torch_cpu`` for torch); a runtime that is
    unavailable here is reported as such and measures nothing. ``processes`` overrides
    ``settings.processes``. ``image_size`` (``--image-size``): a folder's images resized and
    centre-cropped as ``distill --image-size`` did.

    >>> report = benchmark(["student.onnx"], "mobile", teacher="teacher.onnx")  # doctest: +SKIP
    >>> report.model("student").latency_ms["p50"]  # doctest: +SKIP
    0.0123
    """
    started = time.perf_counter()
    if not models:
        raise BadInputError("give at least one model to benchmark")
    profile = target if isinstance(target, TargetProfile) else load_target(target)
    base = settings or BenchSettings()
    settings = dataclasses.replace(base, processes=processes)
    for r in runtimes or ():
        get_runtime(r)  # unknown names fail here, before anything is measured

    entries = [(resolve_model(teacher), "teacher")] if teacher else []
    entries += [(resolve_model(m), "student") for m in models]
    refs: list[ModelRef] = []
    warnings: list[str] = []
    unavailable: list[dict] = []
    for source, role in entries:
        names, why = _runtimes_for(source, runtimes)
        if why:
            warnings.append(why)
        for runtime in names:
            ref = _ref(source, runtime, role)
            reason = check_runtime(ref)
            if reason:
                unavailable.append({"model": ref.name, "runtime": runtime, "reason": reason})
                warnings.append(
                    f"{source.name}: runtime {runtime} requested but unavailable here: {reason}. "
                    f"No {runtime} figures are reported."
                )
                continue
            refs.append(ref)
    if not refs:
        raise BadInputError(
            "nothing could be measured: "
            + "; ".join(f"{u['runtime']}: {u['reason']}" for u in unavailable)
        )

    test, data_info = _test_data(data, seed, image_size)
    reference = next((r.name for r in refs if r.role == "teacher"), None)
    results, _ = measure_models(
        refs, test, profile.threads, profile.batch_size, settings, reference=reference
    )
    for r in results:
        warnings += [f"{r.name}: {n}" for n in r.notes if not n.startswith("size:")]
    teacher_info = {}
    if teacher:
        t = next(r for r in results if r.role == "teacher")
        teacher_info = {"source": teacher, "name": t.name, "params": t.params}
    return Report(
        target=profile.to_dict(),
        host={
            **host_info(),
            "threads": thread_settings(profile.threads),
            "load_average": _load_average(),
        },
        models=results,
        data=data_info,
        teacher=teacher_info,
        warnings=warnings,
        bench={
            **settings.to_dict(),
            "runtimes_requested": list(runtimes or []),
            "unavailable": unavailable,
            "models": list(models),
        },
        timings_s={"bench": round(time.perf_counter() - started, 3)},
    )


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None
