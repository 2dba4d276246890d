"""Peak resident memory of a fresh process that loads and runs one model.

A fresh process per model keeps one model's allocations (and PyTorch's import) out of another's
figure. The figure includes the runtime's own footprint, which a device pays too;
``runtime_baseline_mb`` is that footprint alone (sizing adds it to every memory estimate).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from edgekd.cache import cache_dir, cache_key
from edgekd.fileio import write_text_atomic


def peak_rss_mb(
    runtime: str, model: str, inputs: dict[str, np.ndarray], threads: int = 1, runs: int = 20
) -> float:
    spec = {
        "runtime": runtime,
        "model": str(model),
        "threads": threads,
        "runs": runs,
        "inputs": {k: [list(v.shape), str(v.dtype)] for k, v in inputs.items()},
    }
    proc = subprocess.run(
        [sys.executable, "-m", "edgekd.bench._memprobe", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"memory probe for {model} failed: {last}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"])


# Used only if measuring fails: ORT 1.32, Python 3.11, x86-64 Linux, tiny model, fresh process.
RUNTIME_BASELINE_FALLBACK_MB = 56.0


def runtime_baseline_mb() -> float:
    """Peak RSS of a fresh process that loads ONNX Runtime and runs a one-node model: measured
    once per ONNX Runtime and Python version, then cached."""
    import platform

    import onnxruntime as ort

    key = cache_key(ort=ort.__version__, python=platform.python_version(), os=platform.platform())
    path = cache_dir() / f"ort-baseline-{key}.json"
    if path.is_file():
        try:
            return float(json.loads(path.read_text())["peak_rss_mb"])
        except (ValueError, KeyError, OSError):
            pass  # a damaged cache entry: measure again
    value = _measure_baseline_mb()
    write_text_atomic(path, json.dumps({"peak_rss_mb": value}))
    return value


def _measure_baseline_mb() -> float:
    import tempfile
    from pathlib import Path

    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tiny.onnx"
        onnx.save(model, path)
        try:
            return peak_rss_mb("ort_cpu", str(path), {"x": np.zeros((1, 4), np.float32)})
        except (RuntimeError, OSError, ValueError):
            return RUNTIME_BASELINE_FALLBACK_MB
