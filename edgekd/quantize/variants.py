"""The measured variants of a quantization search and the choice among them, in words.

:class:`Variant` is one measured model (fp32 or quantized), :class:`QuantSelection` the search's
result; :func:`choose_quantized_variant` picks the fastest within the allowed accuracy drop and
says why; :func:`selection_warnings` and :func:`format_variants` are what a user reads before
trusting the choice. The search that measures the variants is :mod:`edgekd.quantize.select`, the
timing behind it :mod:`edgekd.quantize.timing`.

The choice: a screen ranks every candidate (fp32 and each variant within the accuracy budget),
then the two leaders are re-measured against each other, paired (:class:`Duel`). The faster one
wins when the pair's ratio is decided: its interval excludes 1 and it differs by more than
``TIE``. A near-tie (the interval holds 1, or the ratio is within ``TIE``) goes to the smaller,
simpler variant (:func:`simplicity`): int8 before fp16 before fp32, per-tensor before per-channel,
fewer nodes kept in fp32, then the smaller file. On the 784-1200-1200 MLP a screen at 0.1 s per
variant picked a per-channel variant that the benchmark then found 1.1x slower than per-tensor;
when two variants cannot be told apart, the smaller and simpler one costs nothing and risks less.

A benchmark taken later (``edgekd distill``'s bench stage) has the last word:
:func:`slower_than_fp32` says when the chosen variant measured slower than fp32 there, and the
run then ships fp32.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from edgekd.errors import BadInputError
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
    # The same figures at the target's thread count (QuantSelection.target_threads); the choice
    # ranks on latency_ms, at QuantSelection.threads (one thread by default).
    latency_ms_target: dict = field(default_factory=dict)

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
    threads: int  # the threads of every variant's latency_ms, which the choice ranks on
    batch_size: int
    sensitivity: tuple[Sensitivity, ...] = ()
    warnings: tuple[str, ...] = ()
    target_threads: int = 0  # the threads of every variant's latency_ms_target (0: not measured)
    duel: dict | None = None  # Duel.to_dict() of the two leaders re-measured; None: no duel
    eval_samples: int = 0  # validation samples the accuracy (or agreement) was measured on

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


@dataclass(frozen=True)
class Duel:
    """The two leaders re-measured against each other, paired: ``ratio`` is the median over the
    pairs of ``first``'s time / ``second``'s; ``ci_low``/``ci_high`` its distribution-free
    interval (None: too few pairs for one, or no duel, only the screen's p50s)."""

    first: str
    second: str
    ratio: float
    ci_low: float | None = None
    ci_high: float | None = None
    pairs: int = 0
    set_aside: int = 0  # pairs dropped because a side's samples were mostly descheduled
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if not self.ratio > 0 or (self.ci_low is None) != (self.ci_high is None):
            raise BadInputError(f"duel: ratio must be > 0 and the interval whole, got {self}")

    @property
    def tie(self) -> bool:
        """A near-tie: within the measured noise (the interval holds 1) or within ``TIE``.

        Without an interval (a model so slow that the budget held fewer than 6 pairs, each of
        them many calls long) the median ratio is judged on ``TIE`` alone."""
        within_noise = self.ci_low is not None and self.ci_low <= 1.0 <= self.ci_high
        return within_noise or abs(self.ratio - 1.0) <= TIE

    @property
    def faster(self) -> str:
        return self.first if self.ratio <= 1.0 else self.second

    def words(self) -> str:
        """``int8-a 0.910x int8-b's time (95% interval 0.880-0.950, 12 paired re-measures)``."""
        what = f"{self.first} {self.ratio:.3f}x {self.second}'s time"
        if self.pairs == 0 and self.set_aside:
            return f"{what}: no clean pair in {self.set_aside} paired re-measures (a busy host)"
        if self.pairs == 0:
            return f"{what} (screen p50s only)"
        interval = (
            "too few pairs for an interval"
            if self.ci_low is None
            else f"{self.confidence:.0%} interval {self.ci_low:.3f}-{self.ci_high:.3f}"
        )
        aside = f", {self.set_aside} set aside as descheduled" if self.set_aside else ""
        return f"{what} ({interval}, {self.pairs} paired re-measures{aside})"

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "tie": self.tie, "faster": self.faster}


_BITS = {"int8": 8, "fp16": 16, "fp32": 32}


def simplicity(v: Variant) -> tuple:
    """Sort key, smaller and simpler first: fewer bits, per-tensor weight scales, fewer nodes kept
    in fp32, the smaller file, the name (so that equal keys still give one answer)."""
    per_channel = bool(v.config.get("per_channel", False))
    return (_BITS.get(v.precision, 32), per_channel, len(v.excluded_nodes), v.size_bytes, v.name)


def _p50(v: Variant) -> float:
    return v.latency_ms["p50"]


def leaders(candidates: list[Variant]) -> tuple[Variant, Variant]:
    """The two to re-measure: the screen's fastest, and the simplest of those the screen could not
    tell from it (p50 within ``TIE`` or intervals overlapping) when that one is simpler, else the
    screen's second. Needs at least two candidates."""
    ranked = sorted(candidates, key=_p50)
    first = ranked[0]

    def close(v: Variant) -> bool:
        low, high = v.latency_ms.get("ci_low"), first.latency_ms.get("ci_high")
        overlap = low is not None and high is not None and low <= high
        return _p50(v) <= _p50(first) * (1 + TIE) or overlap

    near = [v for v in ranked[1:] if close(v)]
    simplest = min(near, key=simplicity) if near else None
    if simplest is not None and simplicity(simplest) < simplicity(first):
        return first, simplest
    return first, ranked[1]


def decide(first: Variant, second: Variant, duel: Duel) -> Variant:
    """The faster of the two when the duel decided it, else (a near-tie) the simpler one."""
    if duel.tie:
        return min(first, second, key=simplicity)
    return first if duel.faster == first.name else second


def choose_quantized_variant(
    fp32: Variant, variants: list[Variant], allowed: float, duel: Duel | None = None
) -> tuple[Variant, str]:
    """The fastest of fp32 and the variants within ``allowed`` (near-ties to the simpler one),
    and why, in words. ``duel`` is the two :func:`leaders` re-measured; without it the screen's
    p50s stand in (no interval)."""
    if not variants:
        return fp32, "the target allows no quantized precision; fp32 kept"
    ok = [fp32] + [v for v in variants if v.fits and v.error is None]
    if len(ok) == 1:
        quantized = [v for v in variants if v.error is None]
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
    first, second = leaders(ok)
    if duel is None or {duel.first, duel.second} != {first.name, second.name}:
        duel = Duel(first.name, second.name, _p50(first) / _p50(second))
    best = decide(first, second, duel)
    other = second if best is first else first
    return best, _reason(best, other, fp32, ok, allowed, duel)


def _reason(
    best: Variant, other: Variant, fp32: Variant, ok: list[Variant], allowed: float, duel: Duel
) -> str:
    if duel.tie:
        how = f"; a near-tie with {other.name} ({duel.words()}): the smaller, simpler one kept"
    else:
        how = f"; re-measured against {other.name}: {duel.words()}"
    if best is fp32:
        fastest: dict[str, Variant] = {}
        for v in sorted(ok[1:], key=_p50):  # by p50, so the first of each precision is fastest
            fastest.setdefault(v.precision, v)
        others = ", ".join(f"{v.name} {v.p50_us:.1f} us" for v in fastest.values())
        return (
            f"fp32 ({fp32.p50_us:.1f} us p50) is faster than every quantized variant within the "
            f"allowed accuracy drop (fastest: {others})" + how
        )
    rank = "one of the two fastest" if duel.tie else "the fastest"
    reason = (
        f"p50 {best.p50_us:.1f} us, {fp32.p50_us / best.p50_us:.2f}x fp32's "
        f"{fp32.p50_us:.1f} us; {rank} of the {len(ok)} variants within the allowed accuracy "
        f"drop of {allowed:g} (its drop: {best.accuracy_drop:+.3f}, agreement with fp32 "
        f"{best.agreement_with_fp32:.3f})"
    )
    if best.excluded_nodes:
        reason += f"; {len(best.excluded_nodes)} sensitive node(s) kept in fp32"
    return reason + how


def slower_than_fp32(chosen: str, latency_ms: dict, fp32_latency_ms: dict) -> str | None:
    """Why the benchmark overrules the search, or None: the chosen variant's median interval lies
    wholly above fp32's in the same benchmark (``latency_ms`` as report.json keeps it: p50,
    ci_low, ci_high in ms). Only an interval apart counts: a benchmark at a busy moment moves
    medians by 10% and more, and both intervals say how far."""
    low, high = latency_ms.get("ci_low"), fp32_latency_ms.get("ci_high")
    if low is None or high is None or not low > high:
        return None
    return (
        f"{chosen} measured slower than fp32 in this run's benchmark (p50 "
        f"{latency_ms['p50'] * 1e3:.1f} us, 95% interval {low * 1e3:.1f}-"
        f"{latency_ms['ci_high'] * 1e3:.1f} us, vs fp32's {fp32_latency_ms['p50'] * 1e3:.1f} us, "
        f"{fp32_latency_ms['ci_low'] * 1e3:.1f}-{high * 1e3:.1f} us); fp32 shipped instead"
    )


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
    """A fixed-width table of every variant, the chosen one marked with '*': p50 and p95 at the
    threads the choice ranked on, and p50 at the target's threads."""
    at_target = f"p50 {sel.target_threads}t" if sel.target_threads else "p50 tgt"
    head = (
        f"  {'variant':40s} {'prec':>4s} {'size KB':>8s} {f'p50 {sel.threads}t':>8s} "
        f"{f'p95 {sel.threads}t':>8s} {at_target:>8s} {'accuracy':>8s} {'drop':>7s} {'agree':>6s} "
        f"{'fits':>4s}"
    )
    lines = [head + "  (latencies in us)"]
    for v in (sel.fp32, *sel.variants):
        mark = "*" if v.name == sel.chosen else " "
        if v.error is not None:
            lines.append(f"{mark} {v.name:40s} {v.precision:>4s}  failed: {v.error[:60]}")
            continue
        acc = "-" if v.accuracy is None else f"{v.accuracy:.4f}"
        target_p50 = v.latency_ms_target.get("p50")
        target = "-" if target_p50 is None else f"{target_p50 * 1e3:8.1f}"
        lines.append(
            f"{mark} {v.name:40s} {v.precision:>4s} {v.size_bytes / 1024:8.1f} {v.p50_us:8.1f} "
            f"{v.latency_ms['p95'] * 1e3:8.1f} {target:>8s} {acc:>8s} {v.accuracy_drop:+7.3f} "
            f"{v.agreement_with_fp32:6.3f} {'yes' if v.fits else 'no':>4s}"
        )
    return "\n".join(lines)
