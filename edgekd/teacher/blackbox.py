"""Black-box teachers, reachable only through their outputs: an ONNX file or an external command.

ONNX: the file runs with ONNX Runtime on the CPU; its first output is taken as logits, or as
probabilities when every row is a distribution.

Command protocol: for each batch edgekd writes ``IN.npz`` (one array per model input, named as in
the data, e.g. ``x``, samples first) and runs the command with the two paths appended as arguments
(``CMD IN.npz OUT.npz``; or in place of ``{input}`` and ``{output}`` when the command contains
them). The command is split like a shell line (``shlex``) but no shell runs it. It must exit 0
within the timeout and write ``OUT.npz`` holding one of:

    logits (B, C) float | probs (B, C) float | topk_indices (B, K) int + topk_probs (B, K) float
    | labels (B,) int

What the student learns from (``--teacher-output``):
    probs    the full distribution. Logits are used as they are; probabilities become centred
             log-probabilities (logits up to a per-sample constant, which softmax ignores).
    topk:K   only the K most likely classes and their probabilities. The missing mass
             1 - sum(top K) is spread evenly over the other classes (the maximum-entropy
             completion), so every logit method still sees a full distribution.
    labels   the teacher's hard labels only: the student trains with CE on them (the transfer
             set's own labels are not used).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgekd.data import DataBundle, Split
from edgekd.errors import BadInputError

if TYPE_CHECKING:
    from edgekd.results import ModelResult
    from edgekd.targets import TargetProfile
    from edgekd.teacher.default import TeacherInfo

QUERY_BATCH = 256
PROB_TOL = 1e-3
LOG_FLOOR = 1e-8  # probabilities below this are floored before the log


@dataclass(frozen=True)
class OutputMode:
    kind: str  # "probs" | "topk" | "labels"
    k: int = 0

    @classmethod
    def parse(cls, text: str) -> OutputMode:
        """``"probs"``, ``"labels"`` or ``"topk:K"``.

        >>> OutputMode.parse("topk:3")
        OutputMode(kind='topk', k=3)
        """
        if text in ("probs", "labels"):
            return cls(text)
        head, _, k = text.partition(":")
        if head == "topk" and k.isdigit() and int(k) >= 1:
            return cls("topk", int(k))
        raise BadInputError(
            f"--blackbox-output {text!r}: expected 'probs', 'topk:K' (K >= 1) or 'labels'"
        )

    def __str__(self) -> str:
        return f"topk:{self.k}" if self.kind == "topk" else self.kind


class OnnxBlackBoxTeacher:
    """An ONNX model run with ONNX Runtime on the CPU."""

    def __init__(self, path: str | Path) -> None:
        from edgekd.runtimes.ort_cpu import open_session

        self.path = Path(path)
        if not self.path.is_file():
            raise BadInputError(f"{self.path}: teacher ONNX file not found")
        try:
            self._sess = open_session(self.path)
        except Exception as exc:  # ORT raises its own exception types for unreadable models
            first = (str(exc).splitlines() or [""])[0]
            raise BadInputError(f"{self.path}: not a loadable ONNX model ({first})") from None
        self._inputs = self._sess.get_inputs()
        batch = self._inputs[0].shape[0] if self._inputs[0].shape else None
        self._fixed_batch = batch if isinstance(batch, int) and batch > 0 else None

    def __str__(self) -> str:
        return f"ONNX {self.path.name}"

    def _feed(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [i.name for i in self._inputs]
        if len(names) == 1 and len(inputs) == 1:
            arrays = list(inputs.values())
        elif set(names) == set(inputs):
            arrays = [inputs[n] for n in names]
        else:
            raise BadInputError(
                f"{self.path}: model inputs {names} do not match the data's inputs {list(inputs)}"
            )
        dtypes = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(double)": float}
        return {
            i.name: np.ascontiguousarray(a, dtype=dtypes.get(i.type, a.dtype))
            for i, a in zip(self._inputs, arrays, strict=True)
        }

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = self._feed(inputs)
        n = len(next(iter(feed.values())))
        step = self._fixed_batch or n
        outs = []
        for start in range(0, n, step):
            chunk = {k: v[start : start + step] for k, v in feed.items()}
            short = step - len(next(iter(chunk.values())))
            if short > 0:  # a fixed batch size: pad the last chunk, drop the padding after
                chunk = {
                    k: np.concatenate([v, np.repeat(v[-1:], short, 0)]) for k, v in chunk.items()
                }
            outs.append(np.asarray(self._sess.run(None, chunk)[0])[: step - short])
        out = np.concatenate(outs).astype(np.float32)
        return {("probs" if _is_distribution(out) else "logits"): out}


class CommandTeacher:
    """An external command speaking the ``IN.npz OUT.npz`` protocol of this module."""

    def __init__(self, command: str, timeout_s: float = 120.0) -> None:
        try:
            self.argv = shlex.split(command)
        except ValueError as exc:
            raise BadInputError(f"--teacher-cmd {command!r}: cannot split it ({exc})") from None
        if not self.argv:
            raise BadInputError("--teacher-cmd is empty")
        if shutil.which(self.argv[0]) is None and not Path(self.argv[0]).is_file():
            raise BadInputError(f"--teacher-cmd: program {self.argv[0]!r} not found")
        self.command, self.timeout_s = command, timeout_s

    def __str__(self) -> str:
        return f"command {self.command!r}"

    def _argv(self, src: Path, dst: Path) -> list[str]:
        if any("{input}" in a or "{output}" in a for a in self.argv):
            return [a.replace("{input}", str(src)).replace("{output}", str(dst)) for a in self.argv]
        return [*self.argv, str(src), str(dst)]

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with tempfile.TemporaryDirectory(prefix="edgekd-teacher-") as tmp:
            src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
            np.savez(src, **inputs)
            try:
                proc = subprocess.run(
                    self._argv(src, dst), capture_output=True, timeout=self.timeout_s, check=False
                )
            except subprocess.TimeoutExpired:
                raise BadInputError(
                    f"--teacher-cmd timed out after {self.timeout_s:g} s on a batch of "
                    f"{len(next(iter(inputs.values())))} samples"
                ) from None
            if proc.returncode != 0:
                tail = (proc.stderr.decode(errors="replace").strip().splitlines() or [""])[-1]
                raise BadInputError(f"--teacher-cmd exited with code {proc.returncode}: {tail}")
            if not dst.is_file():
                raise BadInputError(f"--teacher-cmd wrote no output file (expected {dst.name})")
            try:
                with np.load(dst, allow_pickle=False) as z:
                    return {k: z[k] for k in z.files}
            except Exception as exc:  # zipfile/ValueError/OSError: all mean "not a usable npz"
                raise BadInputError(f"--teacher-cmd wrote an unreadable .npz ({exc})") from None


def open_teacher(
    onnx: str | None, command: str | None, timeout_s: float = 120.0
) -> OnnxBlackBoxTeacher | CommandTeacher:
    if (onnx is None) == (command is None):
        raise BadInputError("a black-box teacher needs one of --teacher-onnx or --teacher-cmd")
    return OnnxBlackBoxTeacher(onnx) if onnx is not None else CommandTeacher(command, timeout_s)


def query(teacher, split: Split, batch_size: int = QUERY_BATCH) -> dict[str, np.ndarray]:
    """The teacher's raw outputs over ``split``, asked in batches, concatenated and checked."""
    parts: list[dict[str, np.ndarray]] = []
    for _, batch in split.batches(batch_size):
        out = teacher(batch.inputs)
        for name, a in out.items():
            if a.ndim == 0 or len(a) != batch.n:
                raise BadInputError(
                    f"{teacher}: output {name!r} has shape {a.shape} for a batch of {batch.n}"
                )
        if parts and set(out) != set(parts[0]):
            raise BadInputError(f"{teacher}: outputs changed between batches: {sorted(out)}")
        parts.append(out)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@dataclass(frozen=True)
class TeacherTargets:
    """What the student learns from: logits (None in labels mode) and the teacher's labels."""

    logits: np.ndarray | None
    labels: np.ndarray
    note: str


def _is_distribution(a: np.ndarray) -> bool:
    return bool(
        a.ndim == 2
        and np.all(a >= -PROB_TOL)
        and np.all(a <= 1 + PROB_TOL)
        and np.allclose(a.sum(1), 1.0, atol=PROB_TOL)
    )


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def _centred_log(p: np.ndarray) -> np.ndarray:
    log_p = np.log(np.maximum(p, LOG_FLOOR))
    return (log_p - log_p.mean(1, keepdims=True)).astype(np.float32)


def _check(source: str, name: str, a: np.ndarray, ndim: int, num_classes: int | None) -> None:
    if a.ndim != ndim or (num_classes is not None and a.shape[1] != num_classes):
        want = "(B,)" if ndim == 1 else f"(B, {num_classes or 'K'})"
        raise BadInputError(f"{source}: output {name!r} has shape {a.shape}, expected {want}")
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
        raise BadInputError(f"{source}: output {name!r} holds NaN or infinite values")


def _check_classes(source: str, name: str, idx: np.ndarray, num_classes: int) -> None:
    if not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= num_classes:
        raise BadInputError(
            f"{source}: output {name!r} must hold integer classes in [0, {num_classes})"
        )


def _complete_topk(idx: np.ndarray, probs: np.ndarray, num_classes: int) -> np.ndarray:
    """Full distributions from top-K: the missing mass spread evenly over the other classes."""
    n, k = idx.shape
    rest = np.clip(1.0 - probs.sum(1, keepdims=True), 0.0, 1.0)
    full = np.broadcast_to(rest / max(num_classes - k, 1), (n, num_classes)).copy()
    np.put_along_axis(full, idx, probs, axis=1)
    return full


def teacher_targets(
    raw: dict[str, np.ndarray], mode: OutputMode, num_classes: int, source: str = "teacher"
) -> TeacherTargets:
    """Turn raw black-box outputs into what the student learns from, in the requested mode."""
    c = num_classes
    if "logits" in raw or "probs" in raw:
        name = "logits" if "logits" in raw else "probs"
        full = np.asarray(raw[name], dtype=np.float64)
        _check(source, name, full, 2, c)
        if name == "probs" and not _is_distribution(full):
            raise BadInputError(f"{source}: output 'probs' rows are not probability distributions")
        probs = full if name == "probs" else _softmax(full)
        labels = probs.argmax(1)
        if mode.kind == "labels":
            return TeacherTargets(None, labels, f"hard labels (argmax of the teacher's {name})")
        if mode.kind == "probs":
            logits = full.astype(np.float32) if name == "logits" else _centred_log(probs)
            return TeacherTargets(logits, labels, f"full {name}")
        k = min(mode.k, c)
        idx = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(probs, idx, 1)
        full_p = _complete_topk(idx, top, c)
        return TeacherTargets(_centred_log(full_p), labels, f"top-{k} probabilities of {c}")
    if "topk_indices" in raw and "topk_probs" in raw:
        idx, top = np.asarray(raw["topk_indices"]), np.asarray(raw["topk_probs"], np.float64)
        _check(source, "topk_indices", idx, 2, None)
        _check(source, "topk_probs", top, 2, idx.shape[1])
        _check_classes(source, "topk_indices", idx, c)
        if np.any(top < -PROB_TOL) or np.any(top.sum(1) > 1 + PROB_TOL):
            raise BadInputError(f"{source}: 'topk_probs' must be probabilities summing to <= 1")
        labels = np.take_along_axis(idx, top.argmax(1)[:, None], 1)[:, 0]
        if mode.kind == "labels":
            return TeacherTargets(None, labels, "hard labels (the teacher's top-1)")
        if mode.kind == "probs":
            raise BadInputError(
                f"{source} gives only top-{idx.shape[1]} probabilities; "
                f"use --teacher-output topk:{idx.shape[1]}"
            )
        k = min(mode.k, idx.shape[1])
        order = np.argsort(-top, axis=1, kind="stable")[:, :k]
        idx, top = np.take_along_axis(idx, order, 1), np.take_along_axis(top, order, 1)
        full_p = _complete_topk(idx, np.clip(top, 0.0, 1.0), c)
        return TeacherTargets(_centred_log(full_p), labels, f"top-{k} probabilities of {c}")
    if "labels" in raw:
        labels = np.asarray(raw["labels"])
        _check(source, "labels", labels, 1, None)
        _check_classes(source, "labels", labels, c)
        if mode.kind != "labels":
            raise BadInputError(f"{source} gives only hard labels; use --teacher-output labels")
        return TeacherTargets(None, labels.astype(np.int64), "hard labels")
    raise BadInputError(
        f"{source}: outputs {sorted(raw)} hold none of 'logits', 'probs', "
        "'topk_indices' + 'topk_probs', 'labels'"
    )


# --- what the pipeline reports about a black-box teacher -----------------------------------------


def onnx_params(path: str | Path) -> int:
    """Parameters of an ONNX model: the elements of its initializers."""
    import math

    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return sum(math.prod(t.dims) for t in model.graph.initializer)


def blackbox_accuracy(teacher, split: Split, num_classes: int) -> float | None:
    """Accuracy of the teacher's top-1 answers on a labelled split (None without labels)."""
    if split.y is None:
        return None
    labels = teacher_targets(query(teacher, split), OutputMode("labels"), num_classes).labels
    return float(np.mean(labels == split.y))


def blackbox_teacher_report(
    onnx: str | None, command: str | None, data: DataBundle, target: TargetProfile
) -> tuple[TeacherInfo, ModelResult | None]:
    """What the pipeline reports about a black-box teacher. An ONNX teacher is benchmarked like
    any model (None here); a command cannot be: it gets a stand-in result holding only the accuracy
    of its answers on the test split, for the budget's accuracy-drop line."""
    from edgekd.results import ModelResult
    from edgekd.teacher.default import TeacherInfo

    teacher = open_teacher(onnx, command)
    val_acc = blackbox_accuracy(teacher, data.val, data.num_classes) or 0.0
    if onnx is not None:
        return TeacherInfo(f"black box ({teacher})", onnx, onnx_params(onnx), val_acc, 0.0), None
    if target.budget.latency_vs_teacher > 0:
        raise BadInputError(
            f"target {target.name!r} bounds latency relative to the teacher, and a --teacher-cmd "
            "teacher cannot be benchmarked; use --teacher-onnx"
        )
    test_acc = blackbox_accuracy(teacher, data.test, data.num_classes)
    stub = ModelResult(
        "teacher-cmd", command, "command", "unknown", "external command", 0, 0, {}, None,
        test_acc, 1.0, role="teacher",
    )  # fmt: skip
    return TeacherInfo(f"black box ({teacher})", command, 0, val_acc, 0.0), stub
