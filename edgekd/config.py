"""The run configuration: ``DistillConfig`` (one field per ``distill`` option, one name per knob)
and the TOML files that set it, read into validated dataclasses; nothing in them is executed.

    edgekd distill --config run.toml

Top-level keys mirror the dataclass's fields (``DistillConfig``: ``target``, ``epochs``, ``lr``,
``teacher``, ...). Every problem is found before any is reported: unknown keys (with the closest
known one), wrong types and out-of-range values, each with its line, in one message::

    run.toml: 2 problems: line 3 'epochs': must be >= 1, got 0; line 5 'lrr': unknown key
    (did you mean 'lr'?)

Some fields are refused in files (``trust_checkpoint``: only a person at the command line can
decide to trust a downloaded file). Keys renamed since (``student_family`` -> ``student``,
``method_weight`` -> ``weight``, ``bench_min_time_s`` -> ``bench_seconds``) are still read, with a
one-line note on stderr, from files and from an interrupted run's ``config.json``.

``check_table`` is the one TOML-to-dataclass validator: target profiles (``edgekd.targets``)
use it too.

Kept free of heavy imports: the CLI reads ``DistillConfig``'s defaults at ``--help``.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import math
import os
import re
import sys
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from edgekd.distill import DEFAULT_TEMPERATURE, MethodOptions
from edgekd.errors import BadInputError
from edgekd.rundir import CONFIG_FILE, find_interrupted_run


class ConfigError(BadInputError):
    """A configuration file is unreadable or has problems (all of them are in the message)."""


def load_config_file(
    path: str | os.PathLike[str], cls: type, refused: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """The validated values of TOML file ``path`` for dataclass ``cls`` (only keys it sets).

    ``cls.field_problems(values) -> [(key, message)]``, when defined, adds value checks;
    ``cls.renamed_keys`` ({old: new}) upgrades old keys; ``refused`` (default
    ``cls.command_line_only``) are keys a file may not set.

    >>> values = load_config_file("run.toml", DistillConfig)  # doctest: +SKIP
    >>> config = DistillConfig(**values)  # doctest: +SKIP
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the configuration file ({exc})") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    table = upgrade_keys(table, cls, str(path))
    if refused is None:
        refused = getattr(cls, "command_line_only", ())
    values, problems = check_table(table, cls, refused=refused)
    if problems:
        raise ConfigError(describe_problems(str(path), problems, text))
    return values


def check_table(
    table: Any, cls: type, prefix: str = "", refused: tuple[str, ...] = ()
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The values TOML table ``table`` gives dataclass ``cls``, and every problem in it.

    Problems are ``(dotted key, message)``: unknown keys (with the closest known one), missing
    fields that have no default, wrong types (an int where a float is wanted is fine; a list of
    strings fills a ``tuple[str, ...]``), ``refused`` keys and ``cls.field_problems(values)``,
    in the file's order. A field typed as a
    dataclass is a sub-table, checked the same way and built. Fields with ``metadata={"toml":
    False}`` are filled by the loader, not the file.
    """
    if not isinstance(table, dict):
        return {}, [(prefix.rstrip("."), "expected a table")]
    fields = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("toml", True)}
    hints = typing.get_type_hints(cls)
    problems: list[tuple[str, str]] = []
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in refused:
            problems.append((prefix + key, "may only be given on the command line"))
        elif key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append((prefix + key, f"unknown key{hint}"))
        elif dataclasses.is_dataclass(hints[key]):
            sub, sub_problems = check_table(value, hints[key], f"{prefix}{key}.")
            problems += sub_problems
            if not sub_problems:
                values[key] = hints[key](**sub)
        else:
            checked, error = _check_type(value, hints[key])
            if error:
                problems.append((prefix + key, error))
            else:
                values[key] = checked
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in table:
            problems.append((prefix + name, "missing (a required field)"))
    check = getattr(cls, "field_problems", None)
    if check is not None:
        problems += [(prefix + k, message) for k, message in check(values)]
    return values, problems


def describe_problems(where: str, problems: list[tuple[str, str]], text: str = "") -> str:
    """``run.toml: 2 problems: line 3 'epochs': must be >= 1, got 0; ...`` (one line)."""
    lines = _key_lines(text)
    shown = [
        (f"line {lines[k]} " if k in lines else "") + f"{k!r}: {message}" for k, message in problems
    ]
    count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
    return f"{where}: {count}: " + "; ".join(shown)


def upgrade_keys(values: dict[str, Any], cls: type, where: str) -> dict[str, Any]:
    """``values`` with the keys ``cls.renamed_keys`` lists under their new names, noting each
    old one on stderr (a key given under both names keeps both, for the caller to refuse)."""
    renamed = getattr(cls, "renamed_keys", {})
    out: dict[str, Any] = {}
    for key, value in values.items():
        new = renamed.get(key)
        if new is None or new in values:
            out[key] = value
            continue
        print(f"edgekd: note: {where}: {key!r} is deprecated, use {new!r}", file=sys.stderr)
        out[new] = value
    return out


def _check_type(value: Any, hint: Any) -> tuple[Any, str | None]:
    """``(value, None)`` when ``value`` fits ``hint`` (an int where a float is wanted is fine)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    options = tuple(o for o in options if o is not type(None))  # TOML has no null: omit the key
    for option in options:
        if option is bool and isinstance(value, bool):
            return value, None
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value, None
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value), None
        if option is str and isinstance(value, str):
            return value, None
        if typing.get_origin(option) is tuple and isinstance(value, list):
            if all(isinstance(v, str) for v in value):
                return tuple(value), None
    want = " or ".join(_type_name(o) for o in options)
    return value, f"expected {want}, got {_type_name(type(value))} {value!r}"


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        return "a list of strings"  # the only sequence fields have: tuple[str, ...]
    return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


_NAMES = {
    bool: "true/false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a table",
}


def _key_lines(text: str) -> dict[str, int]:
    """Line numbers of ``key = value`` lines, as ``key`` or ``table.key``, and of ``[table]``
    headers (tomllib does not report positions)."""
    lines: dict[str, int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("["):
            table = stripped.strip("[] ") + "."  # keys below it are TABLE.KEY
            lines.setdefault(table[:-1], number)
            continue
        match = re.match(r'\s*"?([A-Za-z0-9_\-]+)"?\s*=', line)
        if match:
            lines.setdefault(table + match.group(1), number)
    return lines


# --- the run configuration -----------------------------------------------------------------------


def _one_of(module: str, name: str) -> tuple[Callable[[Any], bool], Callable[[], str]]:
    """A rule "must be one of ``module.name``", looked up when a value is checked: the modules
    that own these lists import numpy and torch, which ``edgekd --help`` must not load."""

    def choices() -> tuple[str, ...]:
        return getattr(importlib.import_module(module), name)

    return (lambda v: v in choices()), (lambda: f"must be one of {', '.join(choices())}")


def _parses(value: Any, module: str, name: str) -> bool:
    """Whether ``module.name(value)`` accepts ``value`` (looked up when checked, as above)."""
    try:
        getattr(importlib.import_module(module), name)(value)
    except BadInputError:
        return False
    return True


# Value checks shared by the constructor and configuration files: (test, what it must be).
_RULES: dict[str, tuple[Callable[[Any], bool], str | Callable[[], str]]] = {
    "epochs": (lambda v: v >= 1, "must be >= 1"),
    "teacher_epochs": (lambda v: v >= 1, "must be >= 1"),
    "lr": (lambda v: v > 0, "must be > 0"),
    "batch_size": (lambda v: v >= 1, "must be >= 1"),
    "alpha": (lambda v: 0.0 <= v <= 1.0, "must be in [0, 1]"),
    "bench_seconds": (lambda v: v > 0, "must be > 0"),
    "image_size": (lambda v: v >= 1, "must be >= 1"),
    "data_workers": (lambda v: v >= 0, "must be >= 0"),
    "normalize": (
        lambda v: _parses(v, "edgekd.data.normalize", "parse_normalize"),
        "must be auto, none, MEAN:STD, or per-channel lists M1,M2,M3:S1,S2,S3 (stds > 0)",
    ),
    "task": _one_of("edgekd.teacher.prepare", "TASKS"),
    "augment": _one_of("edgekd.data.augment", "LEVELS"),
    "patience": (lambda v: v >= 0, "must be >= 0"),
    "time_budget": (lambda v: v > 0, "must be > 0 seconds"),
    "seeds": (lambda v: v >= 1, "must be >= 1"),
    "train_threads": (lambda v: v >= 1, "must be >= 1"),
    "checkpoint_every": (lambda v: v > 0, "must be > 0"),
    "device": (
        lambda v: importlib.import_module("edgekd.train.device").valid_device_spec(v),
        "must be auto, cpu, cuda or cuda:N",
    ),
    "precision": _one_of("edgekd.train.device", "PRECISIONS"),
    "blackbox_output": (
        lambda v: v in ("probs", "labels") or re.fullmatch(r"topk:[1-9]\d*", v) is not None,
        "must be probs, topk:K (K >= 1) or labels",
    ),
    "out": (lambda v: v.strip() != "", "must name a folder"),
    "context": (lambda v: v >= 2, "must be >= 2"),
    "top_k": (lambda v: v >= 1, "must be >= 1"),
    "steps": (lambda v: v >= 1, "must be >= 1"),
    "blackbox_form": _one_of("edgekd.lm.blackbox.forms", "FORMS"),
    "samples": (lambda v: v >= 1, "must be >= 1"),
    "icl_shots": (lambda v: v >= 1, "must be >= 1"),
    "teacher_temperature": (lambda v: 0 <= v < math.inf, "must be finite and >= 0"),
    "teacher_top_p": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "max_new_tokens": (lambda v: v >= 1, "must be >= 1"),
    "max_teacher_tokens": (lambda v: v >= 1, "must be >= 1"),
    "teacher_retries": (lambda v: v >= 0, "must be >= 0"),
    "evolve": (lambda v: v >= 0, "must be >= 0"),
    "gkd_beta": (lambda v: 0 < v < 1, "must be in (0, 1) (GKD's generalized JSD)"),
    "on_policy": (lambda v: 0 <= v <= 1, "must be in [0, 1] (a share of the steps)"),
    "teacher_timeout": (lambda v: 0 < v < math.inf, "must be finite and > 0 seconds"),
}


def _not_finite(values: dict[str, Any]) -> list[tuple[str, str]]:
    """Every number a run takes is finite: ``--lr inf`` or ``--temperature nan`` would pass the
    range checks (or fail them with a confusing message) and end in a diverged run."""
    return [
        (k, f"must be a finite number, got {v!r}")
        for k, v in values.items()
        if isinstance(v, float) and not math.isfinite(v)
    ]

# Options whose default depends on the task: a field left None takes its task's value here
# (resolved in DistillConfig.__post_init__), and an explicit value always wins. Classifiers and
# embedders: the one-cycle peak that jittered views tolerate, 64 per batch, Hinton's T = 4.
# Causal LMs: AdamW at 3e-3 peak with 16 blocks per step trains the small students well
# (nanoGPT's small-model settings); T = 1 is the setting of MiniLLM and GKD and of DistilGPT2's
# distillation.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "classification": {"lr": 1e-2, "batch_size": 64, "temperature": DEFAULT_TEMPERATURE},
    "causal-lm": {"lr": 3e-3, "batch_size": 16, "temperature": 1.0},
}


def task_defaults(task: str) -> dict[str, Any]:
    """The defaults of ``lr``, ``batch_size`` and ``temperature`` for ``task`` (the classifier's
    for every task without its own)."""
    return TASK_DEFAULTS.get(task, TASK_DEFAULTS["classification"])


# A black-box command does not tell its size: then only the target's budget bounds the student.
UNKNOWN_TEACHER_PARAMS = 10**12


@dataclass(frozen=True)
class DistillConfig:
    """Everything ``distill`` needs to know, one field per ``edgekd distill`` option (same name).

    >>> DistillConfig(target="iot", method="rkd", epochs=40).student is None
    True
    """

    target: str = "mobile"
    data: str | None = None
    method: str | None = None  # None: kd for classification, embed for embeddings
    temperature: float | None = None  # None: the task's default (TASK_DEFAULTS)
    alpha: float | None = None  # None: the method's own default (see `edgekd methods`)
    strategy: str | None = None  # None: offline, or blackbox for --teacher-onnx/--teacher-cmd
    pairs: tuple[str, ...] = ()  # "student_layer:teacher_layer" for feature methods (--pair)
    weight: float | None = None  # multiplier of the method's loss; None: its own default
    temperature_end: float | None = None  # anneal T linearly to this value
    generations: int = 2  # strategy self
    peer: str = "teacher"  # strategy online
    finetune_epochs: int = 0
    teacher_onnx: str | None = None  # black-box teacher: an ONNX file ...
    teacher_cmd: str | None = None  # ... or a command (edgekd.teacher.blackbox)
    blackbox_output: str = "probs"  # black box answers: probs | topk:K | labels
    # None: a budget of optimizer steps in whole epochs, at most PATIENT_EPOCHS (300) with
    # augmented views, PLAIN_EPOCHS (100) without (edgekd.distill.job.default_epochs; measured
    # in benchmarks/patient.py)
    epochs: int | None = None
    teacher_epochs: int | None = None  # None: the default teacher's recipe (by input kind)
    lr: float | None = None  # peak of the one-cycle schedule; None: the task's (TASK_DEFAULTS)
    batch_size: int | None = None  # None: the task's default (TASK_DEFAULTS)
    seed: int = 0
    student: str | None = None  # a family name or pkg.module:factory; None = by input
    init_from_teacher: bool = False  # start from the teacher's sliced weights (same family only)
    out: str | None = None
    overwrite: bool = False
    bench_seconds: float = 0.5  # timed seconds per model, shared by its fresh processes
    # Bring your own teacher and data (see edgekd.teacher.user, edgekd.data.readers).
    teacher: str | None = None
    teacher_weights: str | None = None
    teacher_output: str | None = None
    trust_checkpoint: bool = False
    task: str = "classification"
    test_data: str | None = None
    val_data: str | None = None
    label_column: str | None = None
    image_size: int | None = None  # image folders: short side resized to N, centre N x N crop
    data_workers: int | None = None  # processes decoding a streamed image folder (None: auto)
    normalize: str = "none"  # (x - mean) / std in the student, baked into its ONNX (data.normalize)
    bench_processes: int = 3
    # Patient and consistent teaching (edgekd.distill.views): augmentation level (None: the
    # default for the input kind), early stopping, and repeated seeds (mean +- std reported).
    augment: str | None = None
    patience: int = 0
    # Seconds of training (edgekd.train.resume.TimeBudget): stop at the first epoch end after
    # them, keeping the best epoch so far; None: no limit.
    time_budget: float | None = None
    seeds: int = 1
    # How training runs, not what it learns: torch threads (edgekd.train.threads; None: the
    # faster of 1 and the usable cores, measured) and seconds between training checkpoints
    # (edgekd.train.resume; a kill -9 loses at most that much work).
    train_threads: int | None = None
    checkpoint_every: float = 30.0
    # Where training runs and in what precision (edgekd.train.device): auto is CUDA when
    # available, else the CPU; auto precision is fp32 on the CPU, bf16 (or fp16) on CUDA.
    device: str = "auto"
    precision: str = "auto"
    # --task causal-lm (edgekd.lm): the block length in tokens (None: the target's [lm]
    # context_tokens, else 128, at most the teacher's), the teacher's top-k cached per position,
    # a factory teacher's tokenizer, and optimizer steps (None: edgekd.lm.pipeline.DEFAULT_STEPS).
    context: int | None = None
    top_k: int = 32
    tokenizer: str | None = None
    steps: int | None = None
    prune_vocab: bool = False  # the student keeps only the tokens the text uses (edgekd.lm.vocab)
    # --task causal-lm --strategy blackbox (edgekd.lm.blackbox): what the teacher is asked for
    # (answers, rationales, icl with icl_shots demonstrations), how it samples (texts per prompt,
    # temperature, top-p, new tokens), the tokens it may read and write in all, retries and
    # seconds per call, a local model used only through generation, and a check command.
    blackbox_form: str = "answers"
    samples: int = 1
    icl_shots: int = 3
    teacher_temperature: float = 0.7
    teacher_top_p: float = 0.95
    max_new_tokens: int = 64
    max_teacher_tokens: int | None = None
    teacher_retries: int = 2
    teacher_timeout: float = 300.0
    teacher_generate: str | None = None
    answer_check: str | None = None
    evolve: int = 0  # harder prompts the teacher writes first (Evol-Instruct); 0: none
    # --method gkd (edgekd.distill.methods.gkd): the generalized JSD's beta and the share of
    # steps on sequences the student samples itself (the paper's lambda); None: the method's.
    gkd_beta: float | None = None
    on_policy: float | None = None

    # Old names still read from run files and config.json (with a note on stderr).
    renamed_keys: ClassVar[dict[str, str]] = {
        "student_family": "student",
        "method_weight": "weight",
        "bench_min_time_s": "bench_seconds",
    }
    # Only a person at the command line can decide to trust a downloaded file.
    command_line_only: ClassVar[tuple[str, ...]] = ("trust_checkpoint",)

    def __post_init__(self) -> None:
        # An option left unset takes its task's default; which ones did is kept (not a field:
        # ``dataclasses.replace`` passes the resolved values on, as if given).
        unset = tuple(k for k in TASK_DEFAULTS["classification"] if getattr(self, k) is None)
        for k in unset:
            object.__setattr__(self, k, task_defaults(self.task)[k])
        object.__setattr__(self, "_unset", unset)
        problems = self.field_problems(dataclasses.asdict(self))
        if problems:
            raise BadInputError("; ".join(f"{k} {message}" for k, message in problems))

    def setting_sources(self) -> dict[str, str]:
        """Where each option with a per-task default got its value: ``"given"`` (the command
        line, a file, the caller) or ``"default for --task TASK"``.

        >>> DistillConfig(task="causal-lm", lr=0.01).setting_sources()["lr"]
        'given'
        """
        return {
            k: f"default for --task {self.task}" if k in self._unset else "given"
            for k in TASK_DEFAULTS["classification"]
        }

    def as_given(self) -> dict[str, Any]:
        """The fields as the user set them (None where a task default was taken): what a run's
        ``config.json`` stores so that a resumed run resolves the same way."""
        return {**dataclasses.asdict(self), **{k: None for k in self._unset}}

    @classmethod
    def field_problems(cls, values: dict) -> list[tuple[str, str]]:
        out = _not_finite(values)
        out += [
            (k, f"{what() if callable(what) else what}, got {values[k]!r}")
            for k, (ok, what) in _RULES.items()
            if values.get(k) is not None and k not in dict(out) and not ok(values[k])
        ]
        said = dict(out)
        # temperature(_end): checked there, once (after finiteness, said here for every field)
        out += [p for p in MethodOptions.field_problems(values) if p[0] not in said]
        for k in ("teacher_weights", "teacher_output"):
            if values.get(k) and not values.get("teacher"):
                out.append((k, "needs a teacher (--teacher)"))
        return out


def resume_config(run: str | Path, trust_checkpoint: bool = False) -> DistillConfig:
    """The configuration an interrupted run was started with (``--resume RUN``).

    Trust is never read back from the folder: ``--trust-checkpoint`` must be given again.
    """
    work = find_interrupted_run(run)
    try:
        saved = json.loads((work / CONFIG_FILE).read_text())
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
        saved = upgrade_keys(saved, DistillConfig, str(work / CONFIG_FILE))
        out = str(Path(run).with_name(Path(run).name.removesuffix(".partial")))
        return DistillConfig(**{**saved, "out": out, "trust_checkpoint": trust_checkpoint})
    except (ValueError, TypeError) as exc:
        raise BadInputError(f"{work / CONFIG_FILE}: not a run configuration ({exc})") from None
