"""ONNX Runtime on the CUDA execution provider (CPU for the nodes CUDA cannot run).

Available only when a session really gets ``CUDAExecutionProvider``; a session that falls back
reports ``CPUExecutionProvider`` and a note, and its figures are CPU figures.
"""

from __future__ import annotations

from edgekd.hostinfo import host_threads
from edgekd.runtimes import Runtime, register_runtime
from edgekd.runtimes._gpu import ort_provider_status
from edgekd.runtimes.ort_cpu import OrtSession

PROVIDER = "CUDAExecutionProvider"

register_runtime(
    Runtime(
        name="ort_cuda",
        formats=("onnx",),
        device="gpu",
        available=lambda: ort_provider_status(PROVIDER) == "",
        open=lambda model, threads: OrtSession(
            model, host_threads(threads), [PROVIDER, "CPUExecutionProvider"]
        ),
        description="ONNX Runtime, CUDAExecutionProvider (only where a session really gets it)",
        why_unavailable=lambda: ort_provider_status(PROVIDER),
    )
)
