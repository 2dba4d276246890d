"""The host a measurement runs on: metadata recorded with every report (a number without its
machine is not a result), the cores this process may really use (CPU affinity and the cgroup CPU
quota, not ``os.cpu_count()``), the thread count a run may use, and the GPU memory this process
holds.
"""

from __future__ import annotations

import math
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
        "usable_cores": usable_cores(),
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
    """The target's thread count, capped at the cores this process may use (oversubscription only
    adds noise)."""
    return max(1, min(requested, usable_cores()))


# Where the cgroup file systems are mounted; tests point ``usable_cores`` at a fake tree.
CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")


def usable_cores(
    cgroup_root: str | os.PathLike[str] = CGROUP_ROOT,
    self_cgroup: str | os.PathLike[str] = SELF_CGROUP,
) -> int:
    """The cores this process may really use: its CPU affinity, capped by the cgroup CPU quota
    (a container given 1.5 CPUs of a 64-core host gets 1); at least 1.

    >>> usable_cores() >= 1
    True
    """
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:  # macOS, Windows: no affinity call; the machine's count is all there is to know
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, self_cgroup)
    if quota is not None:
        # Rounded down: threads beyond the quota are throttled in every period, which costs more
        # than the fraction of a core they would add.
        cores = min(cores, math.floor(quota))
    return max(1, cores)


def cgroup_cpu_quota(
    cgroup_root: str | os.PathLike[str] = CGROUP_ROOT,
    self_cgroup: str | os.PathLike[str] = SELF_CGROUP,
) -> float | None:
    """CPUs per period the cgroup quota gives this process (the tightest along its cgroup path,
    cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``); None: no quota."""
    root = Path(cgroup_root)
    paths = _own_cgroup_paths(Path(self_cgroup))
    limits = []
    # v2 (unified) files at the root, or under "unified" on a hybrid v1/v2 host
    for base in (root, root / "unified"):
        limits += _along(base, paths.get("", "/"), _cpu_max)
    for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):  # v1: the cpu controller's mount
        limits += _along(root / name, paths.get("cpu", "/"), _cfs_quota)
    return min(limits) if limits else None


def _own_cgroup_paths(self_cgroup: Path) -> dict[str, str]:
    """This process's cgroup path per controller ("" for v2) from ``/proc/self/cgroup``."""
    try:
        text = self_cgroup.read_text()
    except OSError:
        return {}
    paths = {}
    for line in text.splitlines():
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _along(base: Path, own: str, read) -> list[float]:
    """Limits found in ``base``/``own`` and each folder above it up to ``base`` (nested quotas
    all apply). Inside a container the path is often not there: then ``base`` alone."""
    limits = []
    folder = base / own.strip("/")
    while True:
        limit = read(folder)
        if limit is not None:
            limits.append(limit)
        if folder == base or base not in folder.parents:
            return limits
        folder = folder.parent


def _cpu_max(folder: Path) -> float | None:
    """cgroup v2 ``cpu.max``: "QUOTA PERIOD" or "max PERIOD"."""
    try:
        quota, _, period = (folder / "cpu.max").read_text().strip().partition(" ")
        return None if quota == "max" else int(quota) / int(period or 100000)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _cfs_quota(folder: Path) -> float | None:
    """cgroup v1 ``cpu.cfs_quota_us`` (-1: none) over ``cpu.cfs_period_us``."""
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


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
