"""ONNX Runtime on the TensorRT execution provider, with CUDA and then CPU for what it cannot take.

Available only when a session really gets ``TensorrtExecutionProvider``. The session reports the
first provider it actually holds: a TensorRT load failure shows as CUDA (still a GPU figure, but
labelled CUDA), a full fallback as CPU. Nodes TensorRT declines inside a graph it did take run on
CUDA/CPU without changing that label; the first runs (engine build) fall in the warm-up.
"""

from __future__ import annotations

from edgekd.hostinfo import host_threads
from edgekd.runtimes import Runtime, register_runtime
from edgekd.runtimes._gpu import ort_provider_status
from edgekd.runtimes.ort_cpu import OrtSession

PROVIDER = "TensorrtExecutionProvider"

register_runtime(
    Runtime(
        name="ort_tensorrt",
        formats=("onnx",),
        device="gpu",
        available=lambda: ort_provider_status(PROVIDER) == "",
        open=lambda model, threads: OrtSession(
            model,
            host_threads(threads),
            [PROVIDER, "CUDAExecutionProvider", "CPUExecutionProvider"],
        ),
        description="ONNX Runtime, TensorrtExecutionProvider (only where a session really gets it)",
        why_unavailable=lambda: ort_provider_status(PROVIDER),
    )
)
