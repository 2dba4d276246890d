"""Runtimes: one file per way of running a model, behind one small interface.

``open_model(runtime, model, threads)`` returns a :class:`Session` whose ``provider`` says what
actually ran (ONNX Runtime falls back to CPU silently when a GPU provider cannot load; each runtime
reports the provider the session really uses, never the one that was asked for) and whose
``device`` says where that provider runs, so no figure from a CPU run is ever labelled GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edgekd.registry import Registry


class Session(Protocol):
    provider: str  # what actually runs, e.g. "CPUExecutionProvider", "torch-cuda"
    device: str  # "cpu" or "gpu": where ``provider`` runs (not where it was asked to run)
    input_names: tuple[str, ...]
    notes: list[str]  # e.g. "requested CUDAExecutionProvider, ran on CPUExecutionProvider"

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """Return the first output for the named inputs."""
        ...

    def gpu_memory_mb(self) -> float | None:
        """Peak GPU memory of this process in MiB; None when no GPU ran or it cannot be read."""
        ...


def _always_available() -> str:
    return ""


@dataclass(frozen=True)
class Runtime:
    name: str
    formats: tuple[str, ...]  # "onnx", "torch"
    device: str  # "cpu" or "gpu": what the runtime is for; a session may still fall back
    available: Callable[[], bool]
    open: Callable[..., Session]  # (model, threads) -> Session
    description: str = ""
    # Why ``available()`` is False, in one sentence for the report ("" when it is available).
    why_unavailable: Callable[[], str] = _always_available


RUNTIMES: Registry[Runtime] = Registry("runtime", __name__)


def register_runtime(runtime: Runtime) -> Runtime:
    return RUNTIMES.register(runtime.name, runtime)


def get_runtime(name: str) -> Runtime:
    return RUNTIMES.get(name)


def all_runtimes() -> list[Runtime]:
    return list(RUNTIMES.all().values())


def open_model(runtime: str, model: Any, threads: int = 1) -> Session:
    return get_runtime(runtime).open(model, threads)
