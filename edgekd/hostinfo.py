"""The host a measurement runs on: metadata recorded with every report (a number without its
machine is not a result), the thread count a run may use, and the GPU memory this process holds.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

# Flags that decide whether int8 kernels are fast (x86 VNNI / AMX, ARM dot product).
INT8_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_int8",
    "asimddp",
    "i8mm",
    "sve",
)


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _cpuinfo() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), []
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Hardware", "CPU part") and model in ("", platform.machine()):
            model = value.strip()
        if key in ("flags", "Features") and not flags:
            flags = value.split()
    return model, flags


def int8_support(flags: list[str] | None = None) -> str:
    """A one-line description of the CPU's int8 instruction support, as detected."""
    if flags is None:
        flags = _cpuinfo()[1]
    have = [f for f in INT8_FLAGS if f in flags]
    if "amx_int8" in have:
        return "AMX-INT8 + " + ("AVX512-VNNI" if "avx512_vnni" in have else "VNNI")
    if "avx512_vnni" in have:
        return "AVX512-VNNI"
    if "avx_vnni" in have:
        return "AVX-VNNI"
    if "asimddp" in have:
        return "ARM dot product (SDOT/UDOT)" + (" + I8MM" if "i8mm" in have else "")
    if "avx2" in have:
        return "AVX2 only (no VNNI: int8 GEMM is not much faster than fp32)"
    return "none detected"


@cache
def host_info() -> dict:
    model, flags = _cpuinfo()
    governor = None
    gov = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    if gov.is_file():
        governor = gov.read_text().strip()
    return {
        "cpu_model": model,
        "cpu_flags": [f for f in INT8_FLAGS if f in flags],
        "int8_support": int8_support(flags),
        "cores": os.cpu_count(),
        "frequency_governor": governor,
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "onnx": _version("onnx"),
        "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
        "numpy": _version("numpy"),
        "edgekd": _version("edgekd"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def host_threads(requested: int) -> int:
    """The target's thread count, capped at the host's cores (oversubscription only adds noise)."""
    return max(1, min(requested, os.cpu_count() or 1))


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
