"""Child process for peak-memory measurement: load one model, run it, print peak RSS in MiB.

Run as ``python -m edgekd.bench._memprobe SPEC_JSON``. Kept free of heavy imports so that an ONNX
model's figure does not include PyTorch.
"""

from __future__ import annotations

import json
import resource
import sys

import numpy as np


def main(spec: dict) -> float:
    from edgekd.runtimes import open_model

    session = open_model(spec["runtime"], spec["model"], spec["threads"])
    feed = {name: np.zeros(shape, dtype=dtype) for name, (shape, dtype) in spec["inputs"].items()}
    for _ in range(spec.get("runs", 20)):
        session.run(feed)
    return _peak_rss_mb()


def _peak_rss_mb() -> float:
    # VmHWM belongs to this process's address space, which exec() replaced: ru_maxrss would
    # instead carry over the high-water mark of the (large) parent we were forked from.
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1024 if sys.platform != "darwin" else 1024 * 1024  # ru_maxrss: KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


if __name__ == "__main__":
    print(json.dumps({"peak_rss_mb": main(json.loads(sys.argv[1]))}))
