"""GPU facts shared by the GPU runtimes: does an ONNX Runtime provider really work, and how much
GPU memory does this process hold.

Availability is decided by trying, not by reading a list: ``get_available_providers()`` names the
providers compiled into the installed wheel, not the ones whose CUDA / cuDNN / TensorRT libraries
load on this machine. So a provider counts as available only when a session on a one-node model
actually gets it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache


def _probe_model() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@cache
def ort_provider_status(provider: str) -> str:
    """ "" when ``provider`` really runs here, else one sentence saying why not."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    listed = ort.get_available_providers()
    if provider not in listed:
        return (
            f"{provider} is not in this onnxruntime build (available: {', '.join(listed)}); "
            "install onnxruntime-gpu"
        )
    from edgekd.runtimes.ort_cpu import OrtSession

    try:
        session = OrtSession(_probe_model(), 1, [provider, "CPUExecutionProvider"])
    except Exception as exc:  # a provider that fails to initialise raises from the constructor
        return f"{provider} failed to start a session ({type(exc).__name__}: {exc})".split("\n")[0]
    if session.provider != provider:
        return (
            f"{provider} is in this onnxruntime build, but a session fell back to "
            f"{session.provider} (CUDA, cuDNN or TensorRT libraries missing, or no GPU)"
        )
    return ""


def process_gpu_memory_mb() -> float | None:
    """GPU memory this process holds now, in MiB, from NVML (pynvml) or ``nvidia-smi``.

    ONNX Runtime's CUDA allocator keeps what it has grown to, so after the runs this is the peak.
    None when neither source is present or this process is not listed.
    """
    pid = os.getpid()
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            total = 0
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if proc.pid == pid and proc.usedGpuMemory is not None:
                        total += proc.usedGpuMemory
            return total / 2**20 if total else None
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no pynvml, no driver, or an NVML call this driver lacks: try nvidia-smi
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    used = [
        float(fields[1])
        for fields in (line.split(",") for line in out.splitlines())
        if len(fields) == 2 and fields[0].strip() == str(pid) and fields[1].strip().isdigit()
    ]
    return sum(used) if used else None  # nvidia-smi reports MiB
