"""ONNX Runtime on the CPU execution provider, with the target's thread count.

``OrtSession`` is shared by the GPU execution providers (``ort_cuda``, ``ort_tensorrt``): it asks
for a list of providers and then reads back the one the session really got, because ONNX Runtime
drops a provider it cannot load with nothing more than a Python warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.hostinfo import host_threads, process_gpu_memory_mb
from edgekd.runtimes import Runtime, register_runtime

# Execution providers that run on an accelerator; anything else is reported as a CPU figure.
GPU_PROVIDERS = frozenset(
    {
        "CUDAExecutionProvider",
        "TensorrtExecutionProvider",
        "ROCMExecutionProvider",
        "MIGraphXExecutionProvider",
        "DmlExecutionProvider",
    }
)


def open_session(
    model: str | Path | bytes,
    threads: int | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    optimize: bool = True,
) -> Any:
    """An ``onnxruntime.InferenceSession``, quiet, with ``threads`` intra-op threads (ORT's own
    default when None) and one inter-op thread: the one place edgekd opens a session. Code that
    needs the session itself (parity checks, ONNX teachers, per-operator timing) calls this;
    benchmarks go through ``get_runtime(...).open``. A user's file is safety-checked by the caller
    (``OrtSession`` below, ``edgekd.safety`` for teachers) before it gets here."""
    import onnxruntime as ort  # lazy: importing edgekd must stay cheap

    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # ONNX Runtime's own log (its red "[E:onnxruntime:...]" lines) would precede edgekd's one-line
    # error for the same failure: fatal only. The default logger too, which speaks before a
    # session's own options apply (while a model is being loaded or allocated).
    opts.log_severity_level = 4
    ort.set_default_logger_severity(4)
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    with warnings.catch_warnings():
        # "Specified provider ... is not in available provider names": callers that care read
        # back the provider the session really got, and report the fallback themselves.
        warnings.simplefilter("ignore", UserWarning)
        return ort.InferenceSession(
            model if isinstance(model, bytes) else str(model),
            sess_options=opts,
            providers=list(providers),
        )


class CheckedOnnx(str):
    """A path to an ONNX file that this run already safety-checked (``edgekd.safety``), and whose
    bytes the caller has since verified unchanged (``edgekd.bench.digest``): ``OrtSession`` opens
    it without checking again. The check reads and walks the whole file (``edgekd.safety``); the
    parent does it once per model instead of once per process."""


class OrtSession:
    def __init__(self, model: str | Path | bytes, threads: int, providers: list[str]) -> None:
        if not isinstance(model, bytes | CheckedOnnx):
            from edgekd.safety import check_onnx_for_ort

            # ONNX Runtime opens external-data files itself: check them before it does.
            check_onnx_for_ort(model)
        self._sess = open_session(model, threads, providers)
        # What really runs: ORT drops providers it cannot load without raising.
        self.provider = self._sess.get_providers()[0]
        self.device = "gpu" if self.provider in GPU_PROVIDERS else "cpu"
        self.notes: list[str] = []
        if self.provider != providers[0]:
            self.notes.append(f"requested {providers[0]}, ran on {self.provider}")
        self.input_names = tuple(i.name for i in self._sess.get_inputs())
        self._run = self._sess.run

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self._run(None, feed)[0]

    def gpu_memory_mb(self) -> float | None:
        if self.device != "gpu":
            return None
        return process_gpu_memory_mb()


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
