"""A user's teacher, loaded safely and seen as ``teacher(*inputs) -> tensor``.

``--teacher`` forms (:func:`load_teacher`):

    pkg.module:factory        a function in an importable module (the current folder is searched)
    path/to/file.py:factory   a function in a Python file (optionally with --teacher-weights FILE)
    model.onnx                an ONNX model, run by ONNX Runtime as a black-box teacher
    model.pt / .ts            a TorchScript module (a program: loads only with trust_checkpoint)
    program.pt2              a ``torch.export`` program (likewise only with trust_checkpoint)
    teacher.safetensors       an edgekd checkpoint (architecture recorded in its header)
    folder/                   a Hugging Face model folder (needs the optional ``transformers``)

Files are read through ``edgekd.safety``: pickled code, TorchScript and ``torch.export`` programs
load only with ``trust_checkpoint`` (``--trust-checkpoint``); ONNX external data must stay in the
model's folder. Every teacher becomes a :class:`TeacherModule`: positional inputs in the order of
its :class:`~edgekd.data.inputs.InputSpec` list, one floating tensor out
(``--teacher-output`` picks it
from a tuple or dict of outputs).
"""

from __future__ import annotations

import hashlib
import inspect
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.data import Split
from edgekd.data.inputs import InputSpec, describe
from edgekd.errors import BadInputError, EdgekdError
from edgekd.safety._files import one_line
from edgekd.usercode import call_factory, parse_factory

TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".torchscript")
ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool",
}  # fmt: skip
HF_EXTRA = "pip install 'edgekd[hf]'"


# --- output selection ----------------------------------------------------------------------------


def select_output(out: Any, which: str | None) -> torch.Tensor:
    """Pick the tensor to distil from a model's output: a tensor, a tuple/list, or a dict."""
    if isinstance(out, torch.Tensor):
        if which not in (None, "0"):
            raise BadInputError(
                f"--teacher-output {which!r}: the teacher returns a single tensor "
                f"{_desc(out)}, there is nothing to choose"
            )
        return out
    if isinstance(out, Mapping):
        items = [(str(k), v) for k, v in out.items() if v is not None]
    elif isinstance(out, tuple | list):
        items = [(str(i), v) for i, v in enumerate(out)]
    else:
        raise BadInputError(
            f"the teacher returns a {type(out).__name__}; expected a tensor, or a tuple or dict "
            "of tensors"
        )
    if which is None and len(items) == 1:
        return _tensor(items[0][1], items[0][0])
    for key, value in items:
        if key == which:
            return _tensor(value, key)
    if (
        isinstance(out, Mapping)
        and which is not None
        and which.isdigit()
        and int(which) < len(items)
    ):
        return _tensor(items[int(which)][1], which)  # dict outputs may be chosen by position too
    listing = ", ".join(f"{k}: {_desc(v)}" for k, v in items)
    if which is None:
        raise BadInputError(
            f"the teacher returns {len(items)} outputs ({listing}); name the one to distil "
            f"with --teacher-output {items[-1][0] if items else 0}"
        )
    raise BadInputError(f"--teacher-output {which!r}: not among the teacher's outputs ({listing})")


def _tensor(value: Any, key: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise BadInputError(
            f"teacher output {key} is a {type(value).__name__}, not a tensor; choose a tensor "
            "with --teacher-output"
        )
    return value


def _desc(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return describe(str(value.dtype).removeprefix("torch."), tuple(value.shape[1:]))
    return type(value).__name__


# --- teachers ------------------------------------------------------------------------------------


class TeacherModule(nn.Module):
    """A user's model seen as ``teacher(*inputs) -> tensor``, whatever it really takes and returns.

    ``names`` are the inputs the data provides, in order; models whose inputs are known by name
    (factories, Hugging Face) are called with keywords, so optional inputs may be left out.
    """

    def __init__(
        self, inner: nn.Module, names: tuple[str, ...], by_keyword: bool, output: str | None
    ) -> None:
        super().__init__()
        self.inner = inner
        self.names = names
        self.by_keyword = by_keyword
        self.output = output

    def train(self, mode: bool = True) -> TeacherModule:
        # A torch.export program's module refuses train()/eval() (it is always in the mode it
        # was exported in), so a teacher is switched only where it allows it.
        self.training = mode
        try:
            self.inner.train(mode)
        except NotImplementedError:
            pass
        return self

    def forward(self, *inputs):
        if self.by_keyword:
            out = self.inner(**dict(zip(self.names, inputs, strict=True)))
        else:
            out = self.inner(*inputs)
        return select_output(out, self.output)


class OnnxTeacher(nn.Module):
    """An ONNX model run by ONNX Runtime (CPU) inside ``forward``: a black box, no gradients."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        from edgekd.runtimes.ort_cpu import open_session

        try:
            self._session = open_session(path)
        except Exception as exc:
            raise BadInputError(f"{path}: ONNX Runtime cannot load it ({one_line(exc)})") from None
        self.input_names = tuple(i.name for i in self._session.get_inputs())
        self.output_names = tuple(o.name for o in self._session.get_outputs())

    def input_specs(self) -> tuple[InputSpec, ...]:
        specs = []
        for arg in self._session.get_inputs():
            dims = [d if isinstance(d, int) and d > 0 else None for d in (arg.shape or [])]
            dtype = ORT_DTYPES.get(arg.type)
            specs.append(InputSpec(arg.name, dtype, tuple(dims[1:]) if dims else None))
        return tuple(specs)

    def forward(self, *inputs):
        feed = {
            name: np.ascontiguousarray(t.detach().cpu().numpy())
            for name, t in zip(self.input_names, inputs, strict=True)
        }
        outs = [torch.from_numpy(np.asarray(o)) for o in self._session.run(None, feed)]
        return outs[0] if len(outs) == 1 else dict(zip(self.output_names, outs, strict=True))


@dataclass
class LoadedTeacher:
    """A user's teacher, ready to run, with what is known about its inputs."""

    module: TeacherModule
    inputs: tuple[InputSpec, ...]  # empty: not known; the data's arrays are passed as they are
    kind: str  # factory | torchscript | export | onnx | huggingface | edgekd
    source: str
    params: int
    fingerprint: str  # identifies weights + output choice, for the teacher-output cache
    weights: str | None = None
    output: str | None = None
    trusted: bool = False
    onnx_path: str | None = None  # the teacher's own ONNX file, when it is one
    notes: list[str] = field(default_factory=list)

    def bind(self, names: tuple[str, ...]) -> None:
        """Tell the wrapper which inputs the (checked) data provides, in order."""
        self.module.names = names
        if isinstance(self.module.inner, OnnxTeacher):
            self.module.inner.input_names = names

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": self.kind,
            "weights": self.weights,
            "output": self.output,
            "trust_checkpoint": self.trusted,
            "params": self.params,
            "inputs": [s.name + " " + s.describe() for s in self.inputs],
        }


def load_teacher(
    spec: str,
    weights: str | None = None,
    output: str | None = None,
    trust_checkpoint: bool = False,
    seed: int = 0,
    task: str = "classification",
) -> LoadedTeacher:
    """Resolve ``--teacher`` (see the module docstring for the forms) into a runnable teacher.

    >>> teacher = load_teacher("my_models.py:make_teacher", weights="teacher.safetensors")
    ... # doctest: +SKIP
    """
    if parse_factory(spec) is not None:
        return _factory_teacher(spec, weights, output, trust_checkpoint, seed)
    path = Path(spec)
    if weights is not None:
        raise BadInputError(
            f"--teacher-weights goes with a factory (pkg.module:factory); {spec} is a file"
        )
    if path.is_dir():
        return _hf_teacher(path, output, trust_checkpoint, task)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _onnx_teacher(path, output)
    if suffix == ".pt2":
        return _export_teacher(path, output, trust_checkpoint)
    if suffix == ".safetensors":
        return _edgekd_teacher(path, output)
    if suffix in TORCHSCRIPT_SUFFIXES:
        return _torchscript_teacher(path, output, trust_checkpoint)
    if not path.exists():
        raise BadInputError(f"--teacher {spec!r}: no such file, folder or factory")
    raise BadInputError(
        f"{path}: unknown teacher format (expected .onnx, .pt/.ts TorchScript, .pt2, "
        ".safetensors with a factory, a Hugging Face folder, or pkg.module:factory)"
    )


def _factory_teacher(
    spec: str, weights: str | None, output: str | None, trust: bool, seed: int
) -> LoadedTeacher:
    torch.manual_seed(seed)  # a factory that initialises randomly gives the same teacher each run
    model = call_factory(spec, "teacher")
    if not isinstance(model, torch.nn.Module):
        raise BadInputError(
            f"{spec}: the teacher factory returned a {type(model).__name__}, not a torch.nn.Module"
        )
    if weights is not None:
        _load_weights(model, spec, weights, trust)
    specs, by_keyword = _module_inputs(model)
    return _finish(model, specs, by_keyword, "factory", spec, output, trust, weights=weights)


def _load_weights(model: nn.Module, spec: str, weights: str, trust: bool) -> None:
    from edgekd.safety import load_state_dict

    state = load_state_dict(weights, trust_checkpoint=trust)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:200]
        raise BadInputError(f"{weights}: does not fit the model {spec} builds ({first})") from None


def _module_inputs(model: nn.Module) -> tuple[tuple[InputSpec, ...], bool]:
    """Declared ``edgekd_inputs`` (name -> (dtype, per-sample shape)), else forward's parameters."""
    declared = getattr(model, "edgekd_inputs", None)
    if declared is not None:
        try:
            specs = tuple(
                InputSpec(str(name), None if d is None else str(d), None if s is None else tuple(s))
                for name, (d, s) in dict(declared).items()
            )
        except (TypeError, ValueError):
            raise BadInputError(
                f"{type(model).__name__}.edgekd_inputs must map input name -> (dtype, shape), "
                "e.g. {'x': ('float32', (1, 8, 8))}"
            ) from None
        return specs, True
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return (), False
    if any(p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY) for p in params):
        return (), False
    specs = tuple(
        InputSpec(p.name, optional=p.default is not p.empty)
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )
    return specs, True


def _finish(
    model: Any,
    specs: tuple[InputSpec, ...],
    by_keyword: bool,
    kind: str,
    source: str,
    output: str | None,
    trust: bool,
    weights: str | None = None,
    params: int | None = None,
    fingerprint: str | None = None,
    onnx_path: str | None = None,
) -> LoadedTeacher:
    for p in model.parameters():
        p.requires_grad_(False)
    names = tuple(s.name for s in specs if not s.optional)
    wrapper = TeacherModule(model, names, by_keyword, output).eval()
    if params is None:
        params = sum(p.numel() for p in model.parameters())
    if fingerprint is None:
        fingerprint = _state_fingerprint(model)
    return LoadedTeacher(
        wrapper,
        specs,
        kind,
        source,
        params,
        _hash_text(f"{fingerprint}|{output}"),
        weights,
        output,
        trust,
        onnx_path,
    )


def _onnx_teacher(path: Path, output: str | None) -> LoadedTeacher:
    import onnx

    from edgekd.safety import check_onnx_for_ort

    check_onnx_for_ort(path)  # external data stays in the folder; malformed files refused here
    inner = OnnxTeacher(path)
    proto = onnx.load(str(path), load_external_data=False)
    params = 0
    for t in proto.graph.initializer:
        count = 1
        for d in t.dims:
            count *= d
        params += count
    return _finish(
        inner,
        inner.input_specs(),
        False,
        "onnx",
        str(path),
        output,
        False,
        params=params,
        fingerprint=_file_hash(path),
        onnx_path=str(path),
    )


def _torchscript_teacher(path: Path, output: str | None, trust: bool) -> LoadedTeacher:
    from edgekd.safety import load_module_file, load_state_dict

    if not _is_torchscript(path):
        # A torch.save file: weights only. Load it (safely) so that a bad file says what is wrong.
        state = load_state_dict(path, trust_checkpoint=trust)
        raise BadInputError(
            f"{path}: holds weights only ({len(state)} tensors, no architecture); give the model "
            f"as --teacher pkg.module:factory --teacher-weights {path}"
        )
    module = load_module_file(path, trust_checkpoint=trust)
    try:
        args = module.forward.schema.arguments[1:]
        specs = tuple(InputSpec(a.name) for a in args)
    except Exception:  # schema is TorchScript-internal; without it the data is passed as is
        specs = ()
    return _finish(
        module, specs, False, "torchscript", str(path), output, trust,
        fingerprint=_file_hash(path),
    )  # fmt: skip


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives hold code (``code/``, ``constants.pkl``); torch.save archives do not."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any("/code/" in n or n.endswith("constants.pkl") for n in names)


def _export_teacher(path: Path, output: str | None, trust: bool) -> LoadedTeacher:
    from edgekd.safety import load_module_file

    program = load_module_file(path, trust_checkpoint=trust)
    user_inputs = set(program.graph_signature.user_inputs)
    specs = []
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in user_inputs:
            continue
        val = node.meta.get("val")
        if val is None or not hasattr(val, "shape"):
            specs.append(InputSpec(node.name))
            continue
        dims = [d if isinstance(d, int) else None for d in val.shape]
        if dims and dims[0] is not None:
            raise BadInputError(
                f"{path}: input {node.name!r} was exported with a fixed batch size of {dims[0]}; "
                "export with dynamic_shapes marking dimension 0 as torch.export.Dim('batch')"
            )
        dtype = str(val.dtype).removeprefix("torch.")
        specs.append(InputSpec(node.name, dtype, tuple(dims[1:])))
    module = program.module()
    params = sum(t.numel() for t in program.state_dict.values())
    return _finish(
        module, tuple(specs), False, "export", str(path), output, trust,
        params=params, fingerprint=_file_hash(path),
    )  # fmt: skip


def _edgekd_teacher(path: Path, output: str | None) -> LoadedTeacher:
    from edgekd.students.checkpoint import load_model, read_metadata

    if "edgekd_arch" not in read_metadata(path):
        raise BadInputError(
            f"{path}: holds weights only (no architecture); give the model as "
            f"--teacher pkg.module:factory --teacher-weights {path}"
        )
    model = load_model(path)
    shape = tuple(model.edgekd_arch["sample_shape"])
    single = len(model.edgekd_arch.get("input_shapes") or [shape]) == 1
    specs = (InputSpec("x", "float32", shape),) if single else ()
    return _finish(model, specs, False, "edgekd", str(path), output, False)


def _hf_teacher(path: Path, output: str | None, trust: bool, task: str) -> LoadedTeacher:
    if not (path / "config.json").is_file():
        raise BadInputError(
            f"{path}: a folder teacher must be a Hugging Face model folder (no config.json)"
        )
    try:
        import transformers
    except ImportError:
        raise BadInputError(
            f"{path}: a Hugging Face model folder needs the optional transformers package: "
            f"{HF_EXTRA}"
        ) from None
    try:
        config = transformers.AutoConfig.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=trust
        )
        archs = getattr(config, "architectures", None) or []
        wants_logits = task == "classification" and any(
            a.endswith("ForSequenceClassification") for a in archs
        )
        auto = transformers.AutoModelForSequenceClassification if wants_logits else None
        cls = auto or transformers.AutoModel
        # Without trust, only safetensors weights (pytorch_model.bin is a pickle) and no code
        # from the folder (trust_remote_code runs the folder's Python files).
        model = cls.from_pretrained(
            str(path),
            local_files_only=True,
            trust_remote_code=trust,
            use_safetensors=None if trust else True,
        )
    except EdgekdError:
        raise
    except Exception as exc:
        hint = "" if trust else " (without --trust-checkpoint only model.safetensors is read)"
        raise BadInputError(f"{path}: cannot load the model ({one_line(exc)}){hint}") from None
    specs, _ = _module_inputs(model)
    return _finish(model, specs, True, "huggingface", str(path), output, trust)


# --- checking a teacher against data -------------------------------------------------------------


def probe_teacher(teacher: LoadedTeacher, split: Split, task: str) -> int:
    """Run the teacher on two samples so that structure errors surface now, in one line.

    Returns the width of the chosen output: the class count or the embedding dimension.
    """
    from edgekd.train.loop import to_tensors

    batch = split.take(np.arange(min(2, split.n)))
    shown = ", ".join(f"{k} {describe(str(v.dtype), v.shape[1:])}" for k, v in batch.inputs.items())
    try:
        with torch.no_grad():
            out = teacher.module(*to_tensors(batch))
    except EdgekdError:
        raise
    except Exception as exc:
        raise BadInputError(
            f"teacher {teacher.source} failed on {batch.n} training samples ({shown}): "
            f"{type(exc).__name__}: {one_line(exc)}"
        ) from None
    if not torch.is_floating_point(out) or out.ndim != 2:
        what = "logits [N,classes]" if task == "classification" else "vectors [N,dim]"
        raise BadInputError(
            f"teacher {teacher.source}: its output is {_desc(out)}, but --task {task} distils "
            f"{what}; choose another output with --teacher-output"
        )
    if task == "classification" and out.shape[1] < 2:
        raise BadInputError(
            f"teacher {teacher.source}: classification needs at least 2 logits, got {_desc(out)}"
        )
    return int(out.shape[1])


# --- fingerprints --------------------------------------------------------------------------------


def _hash_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _state_fingerprint(model: Any) -> str:
    """A hash of the weights themselves: the same weights give the same cached outputs."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode() + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
