"""Target profiles: what an edge device is, what it can do, and the budget a model must meet.

A profile is a TOML file (``targets/*.toml`` ships ``mobile``/``phone``, ``iot`` and ``car``; users
bring their own by path). It is read into frozen dataclasses; an unknown key, a missing field, a
wrong type or a negative budget is refused with one line naming the file and the field (every
problem at once, with its line: the validator of run files, ``edgekd.config.check_table``).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd.config import check_table, describe_problems
from edgekd.errors import TargetError

TARGETS_DIR = Path(
    os.environ.get("EDGEKD_TARGETS", Path(__file__).resolve().parents[1] / "targets")
)

PRECISIONS = ("fp32", "fp16", "int8")


def _not_negative(values: dict[str, Any]) -> list[tuple[str, str]]:
    """Budgets and device figures are sizes, rates and fractions: none is below zero."""
    return [
        (name, f"must not be negative, got {v}")
        for name, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and v < 0
    ]


@dataclass(frozen=True)
class DeviceSpec:
    """Figures of the device a profile models, used by the roofline latency estimate.

    Sustained (not peak) figures for the thread count of the profile.
    """

    name: str
    fp32_gflops: float
    int8_gops: float
    memory_bandwidth_gbs: float
    op_overhead_us: float
    call_overhead_us: float
    fp16_gflops: float = 0.0  # 0 = fp16 not accelerated on this device
    memory_mb: float = 0.0  # RAM the device has for the model's process (informational)
    # A model whose weights + peak activations fit in ``cache_mb`` stays cache-resident across
    # calls and streams at ``cache_bandwidth_gbs`` instead; 0 = not modelled (DRAM figures only,
    # which over-estimates small memory-bound models: the conservative side for a budget).
    cache_mb: float = 0.0
    cache_bandwidth_gbs: float = 0.0

    @classmethod
    def field_problems(cls, values: dict[str, Any]) -> list[tuple[str, str]]:
        return _not_negative(values)


@dataclass(frozen=True)
class Budget:
    """What a model must meet on this target. Every line is checked by the gate.

    latency_ms        p95 latency at the profile's batch size on the host runtime (absolute)
    peak_memory_mb    peak resident memory of a fresh process that loads and runs the model
    model_size_kb     size of the deployed model file
    params            parameter count
    accuracy_drop     allowed drop in test accuracy versus the teacher (fraction, 0.02 = 2 points)
    latency_vs_teacher  optional relative latency bound: student p50 <= this x teacher p50, measured
                        in the same run (holds on any machine); 0 disables it
    """

    latency_ms: float
    peak_memory_mb: float
    model_size_kb: float
    params: int
    accuracy_drop: float
    latency_vs_teacher: float = 0.0

    @classmethod
    def field_problems(cls, values: dict[str, Any]) -> list[tuple[str, str]]:
        return _not_negative(values)


@dataclass(frozen=True)
class LMBudget:
    """Language-model budget lines (the ``[lm]`` table), checked for ``--task causal-lm``.

    Every line is optional: 0 means "not set" and the gate skips it (a profile without ``[lm]``
    has none). Sizing estimates each line from the device figures (decode is memory-bound: bytes
    read per token / ``device.memory_bandwidth_gbs``) and labels those figures estimates.

    decode_ms_per_token  time per generated token at batch 1 with a warm KV cache
    ttft_ms              time to first token: the prefill of ``prompt_tokens`` tokens
    prompt_tokens        the prompt length ``ttft_ms`` is for
    context_tokens       the context the student serves; ``memory_mb`` holds at this length
    memory_mb            peak memory at ``context_tokens``: weights + KV cache + activations
    model_size_mb        size of the deployed model file
    perplexity_increase  allowed perplexity increase over the teacher (fraction: 0.3 = 30%)
    """

    decode_ms_per_token: float = 0.0
    ttft_ms: float = 0.0
    prompt_tokens: int = 0
    context_tokens: int = 0
    memory_mb: float = 0.0
    model_size_mb: float = 0.0
    perplexity_increase: float = 0.0

    @classmethod
    def field_problems(cls, values: dict[str, Any]) -> list[tuple[str, str]]:
        problems = _not_negative(values)
        prompt, context = values.get("prompt_tokens", 0), values.get("context_tokens", 0)
        if prompt and context and prompt > context:
            problems.append(("prompt_tokens", f"must not exceed context_tokens ({context}), "
                             f"got {prompt}"))
        if values.get("ttft_ms") and not prompt:
            problems.append(("prompt_tokens", "must be set (> 0) when ttft_ms is"))
        if values.get("memory_mb") and not context:
            problems.append(("context_tokens", "must be set (> 0) when memory_mb is"))
        return problems

    def is_set(self) -> bool:
        return any(getattr(self, f.name) for f in dataclasses.fields(self))


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    threads: int
    batch_size: int
    precisions: tuple[str, ...]
    opset: int
    providers: tuple[str, ...]
    device: DeviceSpec
    budget: Budget
    aliases: tuple[str, ...] = ()
    source: str = ""
    lm: LMBudget = field(default_factory=LMBudget)  # language-model lines; empty = none
    path: str = field(default="", compare=False, metadata={"toml": False})  # set by the loader

    def __post_init__(self) -> None:
        where = self.path or self.name
        if self.threads < 1:
            raise TargetError(f"{where}: field 'threads' must be >= 1, got {self.threads}")
        if self.batch_size < 1:
            raise TargetError(f"{where}: field 'batch_size' must be >= 1, got {self.batch_size}")
        if not 7 <= self.opset <= 23:
            raise TargetError(f"{where}: field 'opset' must be between 7 and 23, got {self.opset}")
        for p in self.precisions:
            if p not in PRECISIONS:
                raise TargetError(
                    f"{where}: field 'precisions' has unknown precision {p!r} "
                    f"(expected one of {', '.join(PRECISIONS)})"
                )
        if not self.precisions:
            raise TargetError(f"{where}: field 'precisions' must not be empty")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "stored profile") -> TargetProfile:
        """The profile ``to_dict`` wrote (a report stores it whole), rebuilt and validated again.

        A report is judged by the profile it was measured for, not by today's TOML file.

        >>> profile = load_target("mobile")
        >>> TargetProfile.from_dict(profile.to_dict()) == profile
        True
        """
        try:
            fields = dict(data)
            device, budget = DeviceSpec(**fields.pop("device")), Budget(**fields.pop("budget"))
            fields["lm"] = LMBudget(**fields.pop("lm", {}))  # reports from before [lm] had none
            for name in ("precisions", "providers", "aliases"):  # JSON turned the tuples into lists
                if name in fields:
                    fields[name] = tuple(fields[name])
            return cls(**fields, device=device, budget=budget)
        except (KeyError, TypeError, ValueError) as exc:
            raise TargetError(f"{where}: not a whole target profile ({exc})") from None


# --- loading -------------------------------------------------------------------------------------


def parse_target(text: str, where: str) -> TargetProfile:
    """The profile TOML ``text`` describes; ``where`` (its file) names it in every error."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"{where}: not valid TOML ({exc})") from None
    values, problems = check_table(table, TargetProfile)
    if problems:
        raise TargetError(describe_problems(where, problems, text))
    return TargetProfile(**values, path=where)  # so that __post_init__ errors name the file


def _shipped() -> dict[str, Path]:
    return {p.stem: p for p in sorted(TARGETS_DIR.glob("*.toml"))}


def list_targets() -> list[TargetProfile]:
    """Every shipped profile, in name order."""
    return [parse_target(p.read_text(), str(p)) for p in _shipped().values()]


def load_target(name_or_path: str | os.PathLike[str]) -> TargetProfile:
    """Load a profile by name (``mobile``), alias (``phone``) or path to a TOML file.

    >>> load_target("phone").name
    'mobile'
    """
    text = str(name_or_path)
    path = Path(text)
    if text.endswith(".toml") or os.sep in text:
        if not path.is_file():
            raise TargetError(f"{path}: target file not found")
        try:
            content = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise TargetError(f"{path}: cannot read target file ({exc})") from None
        return parse_target(content, str(path))
    shipped = _shipped()
    if text in shipped:
        return parse_target(shipped[text].read_text(), str(shipped[text]))
    for profile in list_targets():
        if text in profile.aliases:
            return profile
    known = sorted(set(shipped) | {a for p in list_targets() for a in p.aliases})
    raise TargetError(f"unknown target {text!r} (known: {', '.join(known)}; or give a .toml path)")
