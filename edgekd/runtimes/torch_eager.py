"""PyTorch eager mode on the CPU (and on CUDA when a GPU really is present).

The model is an ``nn.Module`` or a spec that ``edgekd.bench.sources.load_torch_model`` rebuilds: an
edgekd ``.safetensors`` checkpoint or ``pkg.module:factory``.
"""

from __future__ import annotations

import numpy as np

from edgekd.hostinfo import host_threads
from edgekd.runtimes import Runtime, register_runtime


class TorchSession:
    def __init__(self, model, threads: int, device: str = "cpu") -> None:
        import torch

        if not isinstance(model, torch.nn.Module):
            from edgekd.bench.sources import load_torch_model

            model = load_torch_model(str(model))
        # torch's thread count is process-wide: restored when the session goes away, so that
        # benchmarking one model does not slow down (or speed up) whatever runs next.
        self._previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        self._torch = torch
        self._device = torch.device(device)
        self.model = model.eval().to(self._device)
        self.provider = "torch-cuda" if device == "cuda" else "torch-cpu"
        self.device = "gpu" if device == "cuda" else "cpu"
        self.notes: list[str] = []
        self.input_names = tuple(getattr(model, "edgekd_input_names", ("x",)))
        if self._device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self._device)

    def close(self) -> None:
        if self._previous_threads:
            self._torch.set_num_threads(self._previous_threads)
            self._previous_threads = 0

    def __del__(self) -> None:
        self.close()

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            args = [torch.from_numpy(v).to(self._device) for v in feed.values()]
            out = self.model(*args)
            if self._device.type == "cuda":
                # CUDA launches are asynchronous: without this the timer would see launch cost only.
                torch.cuda.synchronize()
            return out.cpu().numpy()

    def gpu_memory_mb(self) -> float | None:
        if self._device.type != "cuda":
            return None
        # What PyTorch's caching allocator handed out at its peak since the session opened.
        return self._torch.cuda.max_memory_allocated(self._device) / 2**20


def _cuda_status() -> str:
    import torch

    if torch.cuda.is_available():
        return ""
    if torch.version.cuda is None:
        return f"this PyTorch ({torch.__version__}) is a CPU-only build"
    return f"PyTorch {torch.__version__} has CUDA {torch.version.cuda} but sees no usable GPU"


register_runtime(
    Runtime(
        name="torch_cpu",
        formats=("torch",),
        device="cpu",
        available=lambda: True,
        open=lambda model, threads: TorchSession(model, host_threads(threads), "cpu"),
        description="PyTorch eager, CPU",
    )
)

register_runtime(
    Runtime(
        name="torch_cuda",
        formats=("torch",),
        device="gpu",
        available=lambda: _cuda_status() == "",
        open=lambda model, threads: TorchSession(model, host_threads(threads), "cuda"),
        description="PyTorch eager, CUDA (only when torch.cuda.is_available())",
        why_unavailable=_cuda_status,
    )
)
