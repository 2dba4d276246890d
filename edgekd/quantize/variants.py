"""The measured variants of a quantization search and the choice among them, in words.

:class:`Variant` is one measured model (fp32 or quantized), :class:`QuantSelection` the search's
result; :func:`choose_quantized_variant` picks the fastest p50 within the allowed accuracy drop and
says why; :func:`selection_warnings` and :func:`format_variants` are what a user reads before
trusting the choice. The search that measures the variants is :mod:`edgekd.quantize.select`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from edgekd.quantize.sensitivity import Sensitivity

TIE = 0.05  # p50s within 5% are called a tie on a shared machine


@dataclass(frozen=True)
class Variant:
    """One measured model: fp32 or a quantized variant."""

    name: str
    precision: str
    path: str
    size_bytes: int
    latency_ms: dict
    accuracy: float | None
    accuracy_drop: float
    agreement_with_fp32: float
    fits: bool
    stage: str = "grid"  # "fp32" | "grid" | "calibration" | "exclusion"
    excluded_nodes: tuple[str, ...] = ()
    config: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def p50_us(self) -> float:
        return self.latency_ms.get("p50", float("nan")) * 1e3

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class QuantSelection:
    """What :func:`~edgekd.quantize.select.select_quantization` measured and chose (written as
    ``quantization.json`` and report.json's ``export.quantization``)."""

    fp32: Variant
    variants: tuple[Variant, ...]
    chosen: str
    reason: str
    allowed_drop: float
    accuracy_basis: str  # "labels" or "agreement with fp32"
    int8_support: str
    threads: int
    batch_size: int
    sensitivity: tuple[Sensitivity, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def chosen_variant(self) -> Variant:
        return next(v for v in (self.fp32, *self.variants) if v.name == self.chosen)

    @property
    def excluded_nodes(self) -> tuple[str, ...]:
        return self.chosen_variant.excluded_nodes

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["sensitivity"] = [s.to_dict() for s in self.sensitivity]
        return d


def most_accurate(variants: list[Variant]) -> Variant:
    """Highest accuracy (smallest drop), then the smaller file."""
    return min(variants, key=lambda v: (v.accuracy_drop, v.size_bytes))


def choose_quantized_variant(
    fp32: Variant, variants: list[Variant], allowed: float
) -> tuple[Variant, str]:
    """The fastest p50 among fp32 and the variants within ``allowed``, and why, in words."""
    ok = [fp32] + [v for v in variants if v.fits and v.error is None]
    ranked = sorted(ok, key=lambda v: v.latency_ms["p50"])
    best = ranked[0]
    quantized = [v for v in variants if v.error is None]
    if not variants:
        return fp32, "the target allows no quantized precision; fp32 kept"
    if best is fp32:
        fitting = [v for v in ok if v is not fp32]
        if not fitting:
            closest = most_accurate(quantized) if quantized else None
            detail = (
                f" (closest: {closest.name}, accuracy drop {closest.accuracy_drop:.3f})"
                if closest
                else ""
            )
            return fp32, (
                f"no quantized variant stays within the allowed accuracy drop of {allowed:g}"
                f"{detail}; fp32 kept"
            )
        fastest: dict[str, Variant] = {}
        for v in ranked[1:]:  # sorted by p50, so the first of each precision is its fastest
            fastest.setdefault(v.precision, v)
        others = ", ".join(f"{v.name} {v.p50_us:.1f} us" for v in fastest.values())
        return fp32, (
            f"fp32 ({fp32.p50_us:.1f} us p50) is faster than every quantized variant within the "
            f"allowed accuracy drop (fastest: {others})" + _tie(best, ranked[1])
        )
    reason = (
        f"fastest p50 ({best.p50_us:.1f} us, {fp32.p50_us / best.p50_us:.2f}x fp32's "
        f"{fp32.p50_us:.1f} us) of the {len(ok)} variants within the allowed accuracy drop of "
        f"{allowed:g} (its drop: {best.accuracy_drop:+.3f}, agreement with fp32 "
        f"{best.agreement_with_fp32:.3f})"
    )
    if best.excluded_nodes:
        reason += f"; {len(best.excluded_nodes)} sensitive node(s) kept in fp32"
    return best, reason + (_tie(best, ranked[1]) if len(ranked) > 1 else "")


def _tie(best: Variant, runner: Variant) -> str:
    if runner.latency_ms["p50"] <= best.latency_ms["p50"] * (1 + TIE):
        return f"; {runner.name} is within {TIE:.0%}, a tie on this machine"
    return ""


def _speed_warning(v: Variant, fp32: Variant) -> str | None:
    """'slower' beyond the tie margin, 'no faster' within it, nothing when clearly faster."""
    ratio = v.latency_ms["p50"] / fp32.latency_ms["p50"]
    if ratio < 1 - TIE or v.precision not in ("int8", "fp16"):
        return None
    times = f"{v.p50_us:.1f} us vs {fp32.p50_us:.1f} us p50"
    verdict = f"is slower than fp32 here ({times})"
    if ratio <= 1 + TIE:
        verdict = f"is no faster than fp32 here ({times}, within {TIE:.0%})"
    if v.precision == "fp16":
        return f"{v.name}: fp16 {verdict}; fp16 pays off on GPUs with fp16 units, not on this CPU"
    return f"{v.name}: int8 {verdict}"


def selection_warnings(sel: QuantSelection) -> list[str]:
    """The lines a user needs before trusting the chosen variant."""
    out = [
        f"CPU int8 support on this host: {sel.int8_support} (detected from the CPU flags; "
        "latencies are this host's, the target device may differ)"
    ]
    if sel.int8_support.startswith("AVX2 only"):
        out.append(
            "u8s8 int8 kernels on AVX2 without VNNI can saturate; if int8 accuracy suffers, try "
            "reduce_range=True"
        )
    fp32 = sel.fp32
    for v in sel.variants:
        if v.error is not None:
            out.append(f"{v.name}: quantization failed ({v.error})")
            continue
        slow = _speed_warning(v, fp32)
        if slow:
            out.append(slow)
        if v.stage == "exclusion":
            out.append(
                f"{v.name}: {len(v.excluded_nodes)} quantization-sensitive node(s) kept in fp32 "
                f"to meet the accuracy budget: {', '.join(v.excluded_nodes)}"
            )
    if not any(v.fits for v in sel.variants if v.precision == "int8"):
        if any(v.precision == "int8" for v in sel.variants):
            out.append(
                f"no int8 variant stays within the allowed accuracy drop of {sel.allowed_drop:g}"
            )
    out.append(f"chosen: {sel.chosen}: {sel.reason}")
    return out


def format_variants(sel: QuantSelection) -> str:
    """A fixed-width table of every variant, the chosen one marked with '*'."""
    head = (
        f"  {'variant':40s} {'prec':>4s} {'size KB':>8s} {'p50 us':>8s} {'p95 us':>8s} "
        f"{'accuracy':>8s} {'drop':>7s} {'agree':>6s} {'fits':>4s}"
    )
    lines = [head]
    for v in (sel.fp32, *sel.variants):
        mark = "*" if v.name == sel.chosen else " "
        if v.error is not None:
            lines.append(f"{mark} {v.name:40s} {v.precision:>4s}  failed: {v.error[:60]}")
            continue
        acc = "-" if v.accuracy is None else f"{v.accuracy:.4f}"
        lines.append(
            f"{mark} {v.name:40s} {v.precision:>4s} {v.size_bytes / 1024:8.1f} {v.p50_us:8.1f} "
            f"{v.latency_ms['p95'] * 1e3:8.1f} {acc:>8s} {v.accuracy_drop:+7.3f} "
            f"{v.agreement_with_fp32:6.3f} {'yes' if v.fits else 'no':>4s}"
        )
    return "\n".join(lines)
