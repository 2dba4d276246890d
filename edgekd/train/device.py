"""Where training runs and in what precision: ``--device`` and ``--precision`` resolved, the
autocast context and gradient scaler they imply, and the words the report uses for them.

``--device auto`` is CUDA when ``torch.cuda.is_available()`` says so, else the CPU; ``cuda`` or
``cuda:N`` on a machine without one is refused in one line. ``--precision auto`` is fp32 on the
CPU (so that CPU runs stay bit-identical to what they always were) and, on CUDA, bf16 autocast
where the GPU supports it, else fp16 autocast with a gradient scaler (fp16's narrow exponent
range underflows small gradients without one). Weights stay fp32 in every case: autocast only
chooses the precision of each operation.

Docs: https://pytorch.org/docs/stable/amp.html
"""

from __future__ import annotations

import contextlib
import itertools
import platform
import re
from typing import Any

import torch
from torch import nn

from edgekd.errors import BadInputError

DEVICES = ("auto", "cpu", "cuda", "cuda:N")  # for help texts; cuda:N is any index
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def valid_device_spec(spec: str) -> bool:
    """Whether ``spec`` is auto, cpu, cuda or cuda:N (what ``--device`` accepts)."""
    return bool(_DEVICE.fullmatch(spec))


def resolve_device(spec: str = "auto") -> torch.device:
    """The device ``--device spec`` means on this machine.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if not valid_device_spec(spec):
        raise BadInputError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise BadInputError(
            f"--device {spec}: no CUDA GPU is usable here (torch.cuda.is_available() is False, "
            f"torch {torch.__version__}); use --device cpu or --device auto"
        )
    device = torch.device("cuda" if spec == "auto" else spec)
    index = 0 if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise BadInputError(
            f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return torch.device("cuda", index)


def training_device(spec: str, dist: Any = None) -> torch.device:
    """The device ``--device spec`` trains on; under ``dist`` (a ``DistContext``) on CUDA, the
    worker's own GPU (its local rank's)."""
    if dist is not None and dist.device.type == "cuda":
        return dist.device
    return resolve_device(spec)


def resolve_precision(spec: str, device: torch.device) -> str:
    """fp32, bf16 or fp16: what ``--precision spec`` means on ``device``."""
    if spec not in PRECISIONS:
        raise BadInputError(f"--precision must be one of {', '.join(PRECISIONS)}, got {spec!r}")
    if spec == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if spec == "fp16" and device.type != "cuda":
        # A gradient scaler on the CPU is new and slow in PyTorch; bf16 needs none.
        raise BadInputError("--precision fp16 needs a CUDA device; on the CPU use bf16 or fp32")
    if spec == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise BadInputError(
            f"--precision bf16: {torch.cuda.get_device_name(device)} does not support bfloat16; "
            "use fp16 or auto"
        )
    return spec


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward passes and the loss; nothing at all for fp32, so that
    fp32 runs execute exactly the operations they always did."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def gradient_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """The loss scaler fp16 needs (its state goes into the training checkpoint); None otherwise."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def module_device(module: Any) -> torch.device:
    """Where ``module``'s first parameter or buffer lives (the CPU for a module without any, e.g.
    an ONNX teacher behind a module interface)."""
    if isinstance(module, nn.Module):
        first = next(itertools.chain(module.parameters(), module.buffers()), None)
        if first is not None:
            return first.device
    return torch.device("cpu")


class OnDevice:
    """Moves modules to ``device`` when made (before the optimizer and DDP see them) and back to
    where each was when the ``with`` block it is entered in ends."""

    def __init__(self, device: torch.device, *modules: nn.Module | None) -> None:
        self.moved = []
        for module in modules:
            if not isinstance(module, nn.Module):
                continue
            home = module_device(module)
            try:
                module.to(device)
            except (RuntimeError, NotImplementedError):
                continue  # a teacher that cannot move (an exported program) runs where it is
            self.moved.append((module, home))

    def __enter__(self) -> OnDevice:
        return self

    def __exit__(self, *exc) -> None:
        for module, home in self.moved:
            module.to(home)


def reset_peak_memory(device: torch.device) -> None:
    """Start counting peak device memory from here (CUDA only)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def describe_device(device: torch.device, precision: str) -> dict[str, Any]:
    """The report's words for where training ran: the device, its type and name, the precision
    used and the peak memory allocated there since :func:`reset_peak_memory` (None on the CPU,
    where the run's peak RSS is the figure that matters)."""
    cuda = device.type == "cuda"
    return {
        "device": str(device),
        "device_type": device.type,
        "device_name": torch.cuda.get_device_name(device)
        if cuda
        else (platform.processor() or platform.machine()),
        "precision": precision,
        "peak_device_memory_bytes": int(torch.cuda.max_memory_allocated(device)) if cuda else None,
    }
