"""PyTorch eager mode on the CPU (and on CUDA when a GPU really is present)."""

from __future__ import annotations

import numpy as np

from edgekd.runtimes import Runtime, register_runtime
from edgekd.runtimes.ort_cpu import host_threads


class TorchSession:
    def __init__(self, model, threads: int, device: str = "cpu") -> None:
        import torch

        from edgekd.checkpoint import load_model

        if not isinstance(model, torch.nn.Module):
            model = load_model(model)
        # torch's thread count is process-wide: restored when the session goes away, so that
        # benchmarking one model does not slow down (or speed up) whatever runs next.
        self._previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        self._torch = torch
        self._device = torch.device(device)
        self.model = model.eval().to(self._device)
        self.provider = "torch-cuda" if device == "cuda" else "torch-cpu"
        self.input_names = tuple(getattr(model, "edgekd_input_names", ("x",)))

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
                torch.cuda.synchronize()
            return out.cpu().numpy()


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


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
        available=_cuda_available,
        open=lambda model, threads: TorchSession(model, threads, "cuda"),
        description="PyTorch eager, CUDA (only when torch.cuda.is_available())",
    )
)
