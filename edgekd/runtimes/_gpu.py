"""Whether an ONNX Runtime GPU provider really works here, for the GPU runtimes (``ort_cuda``,
``ort_tensorrt``). The GPU memory a process holds is ``edgekd.hostinfo.process_gpu_memory_mb``.

Availability is decided by trying, not by reading a list: ``get_available_providers()`` names the
providers compiled into the installed wheel, not the ones whose CUDA / cuDNN / TensorRT libraries
load on this machine. So a provider counts as available only when a session on a one-node model
actually gets it.
"""

from __future__ import annotations

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
