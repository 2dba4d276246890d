"""ONNX Runtime on the CPU execution provider, with the target's thread count."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgekd.runtimes import Runtime, register_runtime


class OrtSession:
    def __init__(self, path: str | Path, threads: int, providers: list[str]) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        # What really runs: ORT drops providers it cannot load without raising.
        self.provider = self._sess.get_providers()[0]
        self.input_names = tuple(i.name for i in self._sess.get_inputs())
        self._run = self._sess.run

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self._run(None, feed)[0]


def host_threads(requested: int) -> int:
    """The target's thread count, capped at the host's cores (oversubscription only adds noise)."""
    return max(1, min(requested, os.cpu_count() or 1))


register_runtime(
    Runtime(
        name="ort_cpu",
        formats=("onnx",),
        device="cpu",
        available=lambda: True,
        open=lambda model, threads: OrtSession(
            model, host_threads(threads), ["CPUExecutionProvider"]
        ),
        description="ONNX Runtime, CPUExecutionProvider",
    )
)
