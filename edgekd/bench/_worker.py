"""One benchmark process: open one model on one runtime, time it, read its memory, maybe predict.

Run as ``python -m edgekd.bench._worker SPEC.json``; writes its result to ``spec["out"]``. A fresh
process per measurement (pyperf's design) gives each process its own luck (CPU frequency, cache and
memory placement, neighbours), so the parent sees how far results move between processes, and keeps
one model's allocations out of another's memory figure. Order inside the process:

1. open the session and run the timed feed once (a model that cannot run fails here, clearly);
2. latency samples at the target's batch size (``measure_latency``: warm-up, calibration);
3. peak RSS (VmHWM) and GPU memory: the process has loaded the model and run it at the target batch
   and nothing bigger, which is the figure a device pays;
4. only in the first process of each model: throughput at a larger batch, then logits over the test
   split (written as .npy) for accuracy and fidelity.

With ``spec["partner"]`` (a second model: the gate's paired rounds, latency only) both models are
opened and timed in turns (``measure_interleaved``), so the machine's drift falls on both alike.

torch is imported only for torch models, so an ONNX model's memory figure does not include it;
nor is the ``onnx`` package (a second of start-up): the parent checked the file's safety and sends
its SHA-256, which the worker checks before it opens the same bytes (``_model``).
"""

from __future__ import annotations

import json
import sys
import time
import traceback

import numpy as np


def _load(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _load_rows(paths: dict[str, str]) -> dict[str, np.ndarray]:
    """The test split's arrays, mapped (read as the batches are predicted, never whole)."""
    return {k: np.load(p, mmap_mode="r", allow_pickle=False) for k, p in paths.items()}


def _predict(session, inputs: dict[str, np.ndarray], batch: int, fixed: bool) -> np.ndarray:
    """Logits over ``inputs`` in batches; a fixed-batch model gets its last batch padded."""
    n = len(next(iter(inputs.values())))
    outs = []
    for start in range(0, n, batch):
        part = {k: np.ascontiguousarray(v[start : start + batch]) for k, v in inputs.items()}
        got = len(next(iter(part.values())))
        if fixed and got < batch:
            pad = batch - got
            part = {k: np.concatenate([v, np.repeat(v[-1:], pad, 0)]) for k, v in part.items()}
        outs.append(np.asarray(session.run(part))[:got])
    return np.concatenate(outs).astype(np.float64)


def _model(spec: dict):
    """The model to open: an ONNX file the parent checked is opened as ``CheckedOnnx`` once its
    bytes prove unchanged; anything else as given (the runtime checks it)."""
    return _model_at(spec["model"], spec.get("sha256"))


def _model_at(model: str, sha256: str | None):
    if not sha256 or not model.lower().endswith(".onnx"):
        return model
    from edgekd.bench.digest import file_sha256
    from edgekd.errors import BadInputError
    from edgekd.runtimes.ort_cpu import CheckedOnnx

    if file_sha256(model) != sha256:
        raise BadInputError(f"{model}: the file changed while it was being benchmarked")
    return CheckedOnnx(model)


def _open(spec: dict, model, feed: dict[str, np.ndarray]):
    """The session, run once on ``feed``: a model that cannot run fails here, clearly."""
    from edgekd.errors import BadInputError, EdgekdError
    from edgekd.runtimes import open_model

    try:
        session = open_model(spec["runtime"], model, spec["threads"])
        session.run(feed)
    except EdgekdError:
        raise
    except Exception as exc:  # the runtime refused this model or these inputs: the user's input
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BadInputError(f"{spec['runtime']} cannot run this model: {first}") from None
    return session


def _paired(spec: dict, session, feed: dict[str, np.ndarray]) -> dict:
    """Latency of the model and its partner, timed in turns in this process."""
    from edgekd.bench.harness import measure_interleaved

    partner = spec["partner"]
    other_feed = _load(partner["feed"])
    other = _open(spec, _model_at(partner["model"], partner.get("sha256")), other_feed)
    runs = [lambda: session.run(feed), lambda: other.run(other_feed)]
    cpu_timer = time.thread_time_ns if session.device == "cpu" else None
    meta = {**spec.get("metadata", {}), "provider": session.provider, "device": session.device,
            "process": spec.get("process", 0), "paired_with": partner["model"]}  # fmt: skip
    mine, theirs = measure_interleaved(runs, metadata=meta, cpu_timer=cpu_timer, **spec["harness"])
    theirs_meta = {**theirs.metadata, **partner.get("metadata", {}), "paired_with": spec["model"]}
    theirs = type(theirs)(theirs.samples_ms, theirs.loops, theirs.warmup, theirs_meta)
    return {"provider": session.provider, "device": session.device, "samples": mine.to_dict(),
            "partner_samples": theirs.to_dict()}  # fmt: skip


def main(spec: dict) -> dict:
    for entry in reversed(spec.get("sys_path", [])):
        if entry not in sys.path:
            sys.path.insert(0, entry)  # so a pkg.module:factory resolves as it did in the parent
    from edgekd.bench._memprobe import _peak_rss_mb
    from edgekd.bench.harness import measure_latency, measure_throughput

    feed = _load(spec["feed"])
    session = _open(spec, _model(spec), feed)
    if spec.get("partner"):
        return _paired(spec, session, feed)
    h = spec["harness"]
    meta = {
        **spec.get("metadata", {}),
        "provider": session.provider,
        "device": session.device,
        "process": spec.get("process", 0),
    }
    # CPU runtimes: record the thread's CPU share per sample (edgekd.bench.contention). A GPU
    # runtime's thread sleeps while the GPU works, so a share would say nothing there.
    cpu_timer = time.thread_time_ns if session.device == "cpu" else None
    samples = measure_latency(lambda: session.run(feed), metadata=meta, cpu_timer=cpu_timer, **h)
    result = {
        "provider": session.provider,
        "device": session.device,
        "notes": list(session.notes),
        "samples": samples.to_dict(),
        "peak_rss_mb": _peak_rss_mb(),
        "gpu_memory_mb": session.gpu_memory_mb(),
        "throughput": [],
    }
    for t in spec.get("throughput", []):
        big = _load(t["feed"])
        r = measure_throughput(lambda big=big: session.run(big), t["batch_size"], **t["harness"])
        samples_n = len(r.pop("samples")["samples_ms"])
        result["throughput"].append({**r, "n": samples_n, "processes": 1})
    predict = spec.get("predict")
    if predict:
        inputs = _load_rows(predict["inputs"])
        logits = _predict(session, inputs, predict["batch"], predict["fixed"])
        np.save(predict["out"], logits)
    return result


if __name__ == "__main__":
    from edgekd.errors import EdgekdError

    spec = json.loads(open(sys.argv[1]).read())
    try:
        out = main(spec)
    except EdgekdError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Exception:
        traceback.print_exc()
        sys.exit(1)
    with open(spec["out"], "w") as fh:
        json.dump(out, fh)
