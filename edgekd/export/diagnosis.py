"""Why an ONNX export failed, in words: the module and operator at fault, and a hint.

The TorchScript exporter reports an unsupported operator by its ATen name only
(``Exporting the operator 'aten::i0' to ONNX opset version 17 is not supported``) and lets Python
control flow on tensor values through with a ``TracerWarning``, silently baking one branch into the
graph. Forward hooks keep a stack of the modules being run, so that a warning or an operator call
can be pinned to the module that made it; a ``TorchFunctionMode`` replays the forward to find
which module calls the operator the exporter refused.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

# Tensor -> Python conversions: a branch or a value taken from data is frozen by tracing.
_CONTROL_FLOW = ("__bool__",)
_UNSUPPORTED = re.compile(r"operator '([\w:.]+)'")


@dataclass
class ModuleStack:
    """The qualified names of the modules currently inside ``forward``, innermost last."""

    model: nn.Module
    names: list[str] = field(default_factory=list)
    last_entered: str = ""

    def where(self) -> str:
        """``'features.1.act' (Inner)`` for the innermost module, or the model's class name."""
        name = self.names[-1] if self.names else self.last_entered
        return describe_module(self.model, name)


def describe_module(model: nn.Module, name: str) -> str:
    if not name:
        return f"the model ({type(model).__name__})"
    try:
        kind = type(model.get_submodule(name)).__name__
    except AttributeError:
        kind = "?"
    return f"module '{name}' ({kind})"


@contextlib.contextmanager
def track_modules(model: nn.Module) -> Iterator[ModuleStack]:
    """Maintain a :class:`ModuleStack` with forward pre-hooks and hooks on every submodule."""
    stack = ModuleStack(model)
    handles = []

    def enter(name: str):
        def hook(_module, _args):
            stack.names.append(name)
            stack.last_entered = name

        return hook

    def leave(_module, _args, _out):
        if stack.names:
            stack.names.pop()

    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(enter(name)))
        handles.append(module.register_forward_hook(leave))
    try:
        yield stack
    finally:
        for h in handles:
            h.remove()


@dataclass(frozen=True)
class TracerNote:
    """A tracer warning and where it came from (module and source line)."""

    message: str
    where: str
    source: str
    control_flow: bool


@contextlib.contextmanager
def capture_tracer_warnings(stack: ModuleStack) -> Iterator[list[TracerNote]]:
    """Collect ``TracerWarning``s with the module that raised them; drop the exporter's chatter."""
    notes: list[TracerNote] = []

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, torch.jit.TracerWarning):
            text = str(message).split(".")[0]
            notes.append(
                TracerNote(text, stack.where(), f"{filename}:{lineno}", "Python boolean" in text)
            )

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield notes


class _OpCallers(TorchFunctionMode):
    """Record, for each torch function name, the first module that called it."""

    def __init__(self, stack: ModuleStack) -> None:
        super().__init__()
        self.stack = stack
        self.callers: dict[str, str] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        self.callers.setdefault(name, self.stack.names[-1] if self.stack.names else "")
        return func(*args, **(kwargs or {}))


def find_op_caller(model: nn.Module, args: tuple, aten_op: str) -> str | None:
    """The qualified name of the module whose forward calls ``aten_op`` (``aten::fft_rfft``).

    ATen names match torch function names (``torch.fft.rfft`` is ``fft_rfft``, ``Tensor.cummax``
    is ``cummax``), so one eager forward under a function mode finds the caller.
    """
    op = aten_op.split("::")[-1].split(".")[0]
    with track_modules(model) as stack:
        mode = _OpCallers(stack)
        try:
            with mode, torch.no_grad():
                model(*args)
        except Exception:
            pass  # a forward that fails on its own still recorded the callers it reached
    for name in (op, op.rstrip("_"), f"{op}_"):
        if name in mode.callers:
            return mode.callers[name]
    # Namespaced functions: torch.special.i0 is "special_i0" but exports as aten::i0.
    for name, caller in mode.callers.items():
        if name.endswith(f"_{op}"):
            return caller
    return None


@contextlib.contextmanager
def quiet_native_output() -> Iterator[None]:
    """Silence native writes to stdout and stderr (fds 1 and 2) for the duration.

    The TorchScript exporter dumps its whole IR graph to stdout when a conversion fails (its
    logging switch tests a function object, which is always true), which would also corrupt
    ``--json`` output; the user gets our one line instead.
    """
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    try:
        with open(os.devnull, "w") as null:
            for fd in saved:
                os.dup2(null.fileno(), fd)
            yield
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)


def explain_export_failure(
    model: nn.Module, args: tuple, exc: Exception, stack: ModuleStack, opset: int
) -> str:
    """One line: what failed, in which module, and what to try."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    match = _UNSUPPORTED.search(first)
    if match:
        op = match.group(1)
        caller = find_op_caller(model, args, op)
        where = describe_module(model, caller) if caller is not None else "an unknown module"
        return (
            f"ONNX export failed: operator '{op}' in {where} has no ONNX equivalent at opset "
            f"{opset} (hint: rewrite it with supported ops, e.g. a polynomial or lookup, try a "
            "newer opset in the target profile, or keep this part outside the exported model)"
        )
    if stack.names:
        # The exception escaped from inside a forward: the innermost open module raised it.
        return (
            f"ONNX export failed in {stack.where()}: {type(exc).__name__}: {first} (hint: this "
            "module's forward does something tracing cannot record; check it runs under "
            "torch.jit.trace)"
        )
    return f"ONNX export of {type(model).__name__} failed: {type(exc).__name__}: {first}"


def explain_control_flow(note: TracerNote) -> str:
    return (
        f"ONNX export refused: data-dependent control flow in {note.where} at {note.source} "
        f"({note.message}); the exported graph would hard-code one branch (hint: replace the "
        "Python `if` on tensor values with torch.where, or compute both branches and mask)"
    )
