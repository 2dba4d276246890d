"""Peak resident memory of a fresh process that loads and runs one model.

A fresh process per model keeps one model's allocations (and PyTorch's import) out of another's
figure. The figure includes the runtime's own footprint, which a device pays too.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np


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
