"""Accuracy-aware choice of a quantized variant, with honest warnings.

Quantize the fp32 model in every mode the target allows, measure each variant's size, latency
(p50/p95 at the target's batch size and threads), accuracy and agreement with the fp32 model, and
choose the fastest variant whose accuracy drop versus fp32 stays within the target's
``budget.accuracy_drop``. The fp32 model is a candidate too: where int8 is slower (small models,
CPUs without VNNI or dot-product instructions) fp32 wins and the reason says so.

If no int8 variant fits: try the other calibration methods (percentile, entropy), then keep the
most quantization-sensitive nodes in fp32 (:mod:`edgekd.quantize.sensitivity`) until one fits,
and report which nodes stayed fp32.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekd.bench.accuracy import predict
from edgekd.bench.harness import measure_latency
from edgekd.bench.stats import LatencySamples, pooled
from edgekd.data import Split
from edgekd.errors import BadInputError, EdgekdError
from edgekd.hostinfo import host_info, host_threads
from edgekd.quantize import (
    CALIBRATIONS,
    Fp16Config,
    Int8DynamicConfig,
    Int8StaticConfig,
    QuantConfig,
    preprocess,
    quantize,
)
from edgekd.quantize.sensitivity import Damage, Sensitivity, exclude_until_fits, rank_sensitivity
from edgekd.runtimes import get_runtime
from edgekd.targets import TargetProfile

MODES = ("dynamic", "qdq", "qoperator", "fp16")
GRANULARITIES = ("per-channel", "per-tensor")
TIE = 0.05  # p50s within 5% are called a tie on a shared machine


@dataclass(frozen=True)
class QuantSearch:
    """What :func:`select_quantization` tries. Modes the target's precisions exclude are skipped.

    modes                  dynamic (int8), qdq / qoperator (static int8), fp16
    granularities          weight scales per-channel and/or per-tensor
    calibrations           calibration methods tried first (static modes)
    fallback_calibrations  tried on the most accurate static variant when no int8 variant fits
    exclude_nodes          keep the most sensitive nodes fp32 when still nothing fits
    max_groups             bound on sensitivity probes (nodes are grouped beyond it)
    allowed_drop           accuracy drop allowed versus fp32; None = the target's budget
    threads                intra-op threads for latency; None = the target's (capped at the cores)
    """

    modes: tuple[str, ...] = MODES
    granularities: tuple[str, ...] = GRANULARITIES
    calibrations: tuple[str, ...] = ("minmax",)
    fallback_calibrations: tuple[str, ...] = ("percentile", "entropy")
    num_samples: int = 256
    exclude_nodes: bool = True
    max_groups: int = 24
    latency_min_time_s: float = 0.3
    allowed_drop: float | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        for what, values, known in (
            ("modes", self.modes, MODES),
            ("granularities", self.granularities, GRANULARITIES),
            ("calibrations", self.calibrations, CALIBRATIONS),
            ("fallback_calibrations", self.fallback_calibrations, CALIBRATIONS),
        ):
            bad = [v for v in values if v not in known]
            if bad:
                raise BadInputError(
                    f"quantization {what}: unknown {', '.join(map(repr, bad))} "
                    f"(expected from {', '.join(known)})"
                )
        if not self.calibrations and {"qdq", "qoperator"} & set(self.modes):
            raise BadInputError("quantization calibrations: static modes need at least one")
        if self.num_samples < 1 or self.max_groups < 1 or (self.threads or 1) < 1:
            raise BadInputError("num_samples, max_groups and threads must be >= 1")
        if self.allowed_drop is not None and not 0.0 <= self.allowed_drop <= 1.0:
            raise BadInputError(f"allowed_drop must be in [0, 1], got {self.allowed_drop}")


def candidate_configs(target: TargetProfile, search: QuantSearch = QuantSearch()) -> list:
    """Every config the search asks for that the target's precisions allow."""
    configs: list[QuantConfig] = []
    if "int8" in target.precisions:
        if "dynamic" in search.modes:
            configs += [
                Int8DynamicConfig(per_channel=g == "per-channel") for g in search.granularities
            ]
        for fmt in ("qdq", "qoperator"):
            if fmt not in search.modes:
                continue
            for granularity in search.granularities:
                for calibration in search.calibrations:
                    configs.append(
                        Int8StaticConfig(
                            per_channel=granularity == "per-channel",
                            calibration=calibration,
                            num_samples=search.num_samples,
                            quant_format=fmt,
                        )
                    )
    if "fp16" in target.precisions and "fp16" in search.modes:
        configs.append(Fp16Config())
    return configs


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


def _latency(runs: list[LatencySamples]) -> dict:
    """A variant's latency over its interleaved rounds, pooled (the bench's own summary)."""
    return pooled(runs).summary().short_dict()


def _config_dict(config: QuantConfig) -> dict:
    return {"type": type(config).__name__, **dataclasses.asdict(config)}


class _Measure:
    """Runs a model file on the evaluation split and at the target's batch size."""

    def __init__(
        self,
        target: TargetProfile,
        eval_split: Split,
        reference: np.ndarray,
        search: QuantSearch,
    ) -> None:
        self.runtime = get_runtime("ort_cpu")
        self.threads = host_threads(search.threads or target.threads)
        self.batch_size = target.batch_size
        self.split = eval_split
        self.reference = reference
        self.search = search
        self.fp32_accuracy: float | None = None
        self.allowed = 0.0

    def logits(self, path: Path) -> np.ndarray:
        session = self.runtime.open(str(path), self.threads)
        return predict(session, self.split)

    def damage(self, path: Path) -> Damage:
        logits = self.logits(path)
        return Damage(self._drop(logits), float(np.mean((logits - self.reference) ** 2)))

    def _drop(self, logits: np.ndarray) -> float:
        if self.split.y is None:
            return 1.0 - self._agreement(logits)
        return float(self.fp32_accuracy - self._accuracy(logits))

    def _accuracy(self, logits: np.ndarray) -> float | None:
        return None if self.split.y is None else float((logits.argmax(-1) == self.split.y).mean())

    def _agreement(self, logits: np.ndarray) -> float:
        return float((logits.argmax(-1) == self.reference.argmax(-1)).mean())

    def fits(self, damage: Damage) -> bool:
        return damage.accuracy_drop <= self.allowed + 1e-9

    def variant(self, name: str, precision: str, path: Path, stage: str, config=None) -> Variant:
        """Accuracy and agreement now; latency later, for all variants together (:meth:`time`)."""
        logits = self.logits(path)
        drop = self._drop(logits)
        return Variant(
            name=name,
            precision=precision,
            path=str(path),
            size_bytes=os.path.getsize(path),
            latency_ms={},
            accuracy=self._accuracy(logits),
            accuracy_drop=drop,
            agreement_with_fp32=self._agreement(logits),
            fits=drop <= self.allowed + 1e-9,
            stage=stage,
            excluded_nodes=tuple(config.nodes_to_exclude) if config is not None else (),
            config=_config_dict(config) if config is not None else {},
        )

    def time(self, variants: list[Variant], rounds: int = 3) -> list[Variant]:
        """Latency of every variant, measured in interleaved rounds.

        On a shared machine the load drifts; measuring A, B, C, A, B, C, ... (starting each round
        one further along) spreads that drift over all variants instead of penalising whichever
        ran during a busy second.
        """
        feed = {k: v[: self.batch_size] for k, v in self.split.inputs.items()}
        runnable = [v for v in variants if v.error is None]
        sessions = {v.name: self.runtime.open(v.path, self.threads) for v in runnable}
        runs: dict[str, list[LatencySamples]] = {v.name: [] for v in runnable}
        for r in range(rounds):
            for i in range(len(runnable)):
                v = runnable[(i + r) % len(runnable)]
                run = sessions[v.name].run
                got = measure_latency(
                    lambda run=run: run(feed),
                    min_time_s=self.search.latency_min_time_s / rounds,
                    metadata={"runtime": "ort_cpu", "threads": self.threads, "model": v.name},
                )
                runs[v.name].append(got)
        return [
            dataclasses.replace(v, latency_ms=_latency(runs[v.name])) if v.error is None else v
            for v in variants
        ]

    def failed(self, config: QuantConfig, stage: str, error: str) -> Variant:
        return Variant(
            name=config.name,
            precision=config.precision,
            path="",
            size_bytes=0,
            latency_ms={},
            accuracy=None,
            accuracy_drop=1.0,
            agreement_with_fp32=0.0,
            fits=False,
            stage=stage,
            config=_config_dict(config),
            error=error,
        )


class _Stages:
    """The search's stages over one pre-processed graph: grid, recalibration, node exclusion."""

    def __init__(
        self,
        measure: _Measure,
        pre: Path,
        work: Path,
        calibration: dict[str, np.ndarray] | None,
        out_dir: Path,
        stem: str,
    ) -> None:
        self.measure, self.pre, self.work, self.calibration = measure, pre, work, calibration
        self.out_dir, self.stem = out_dir, stem
        self.variants: list[Variant] = []
        self.configs: dict[str, QuantConfig] = {}
        self.sensitivity: list[Sensitivity] = []

    def build(self, config: QuantConfig, stage: str) -> None:
        dst = self.out_dir / f"{self.stem}-{config.name}.onnx"
        self.configs[config.name] = config
        try:
            quantize(self.pre, config, dst, self.calibration, preprocessed=True)
            self.variants.append(
                self.measure.variant(config.name, config.precision, dst, stage, config)
            )
        except EdgekdError:
            raise
        except Exception as exc:  # a mode ONNX Runtime cannot do for this graph
            dst.unlink(missing_ok=True)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            self.variants.append(
                self.measure.failed(config, stage, f"{type(exc).__name__}: {first[:200]}")
            )

    def int8(self, config_type: type = object) -> list[Variant]:
        return [
            v
            for v in self.variants
            if v.precision == "int8"
            and v.error is None
            and isinstance(self.configs[v.name], config_type)
        ]

    def int8_fits(self) -> bool:
        """True also when there is no int8 variant to rescue."""
        return not self.int8() or any(v.fits for v in self.int8())

    def recalibrate(self, calibrations: tuple[str, ...]) -> None:
        """The most accurate static variant again with each other calibration method."""
        static = self.int8(Int8StaticConfig)
        if not static:
            return
        best = self.configs[_most_accurate(static).name]
        for calibration in calibrations:
            config = dataclasses.replace(best, calibration=calibration)
            if config.name not in self.configs:
                self.build(config, "calibration")

    def exclude_sensitive_nodes(self, max_groups: int) -> None:
        """Rank nodes by sensitivity on the most accurate int8 variant; exclude until it fits."""
        base = self.configs[_most_accurate(self.int8()).name]
        m = self.measure
        self.sensitivity = rank_sensitivity(
            self.pre, base, self.calibration, m.damage, self.work, max_groups
        )
        found = exclude_until_fits(
            self.pre, base, self.calibration, self.sensitivity, m.damage, m.fits, self.work
        )
        if found is not None:
            self.build(found[0], "exclusion")


def select_quantization(
    fp32_path: str | Path,
    target: TargetProfile,
    calibration: dict[str, np.ndarray],
    eval_split: Split,
    out_dir: str | Path,
    reference_logits: np.ndarray | None = None,
    search: QuantSearch = QuantSearch(),
) -> QuantSelection:
    """Quantize ``fp32_path`` every way the target allows into ``out_dir`` and choose one.

    ``calibration`` feeds static quantization (training inputs); ``eval_split`` measures accuracy
    (labels) or, without labels, agreement with the fp32 model (``reference_logits``, default the
    fp32 model's own outputs). Variant files are ``out_dir/<stem>-<variant>.onnx``.

    >>> sel = select_quantization("student.onnx", load_target("mobile"), train.inputs, val,
    ...                           "variants/")  # doctest: +SKIP
    >>> sel.chosen, sel.reason  # doctest: +SKIP
    """
    fp32_path = Path(fp32_path)
    if not fp32_path.is_file():
        raise BadInputError(f"{fp32_path}: ONNX model not found")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    measure = _Measure(target, eval_split, np.zeros(0), search)
    fp32_logits = measure.logits(fp32_path)
    if reference_logits is not None and reference_logits.shape != fp32_logits.shape:
        raise BadInputError(
            f"reference_logits have shape {reference_logits.shape} but the model gives "
            f"{fp32_logits.shape} on the evaluation split"
        )
    measure.reference = fp32_logits if reference_logits is None else reference_logits
    measure.fp32_accuracy = measure._accuracy(fp32_logits)
    measure.allowed = (
        target.budget.accuracy_drop if search.allowed_drop is None else search.allowed_drop
    )
    fp32 = measure.variant("fp32", "fp32", fp32_path, "fp32")
    with tempfile.TemporaryDirectory() as tmp:
        pre = preprocess(fp32_path, Path(tmp) / "pre.onnx")
        stages = _Stages(measure, pre, Path(tmp), calibration, out_dir, fp32_path.stem)
        for config in candidate_configs(target, search):
            stages.build(config, "grid")
        if not stages.int8_fits():
            stages.recalibrate(search.fallback_calibrations)
        if not stages.int8_fits() and search.exclude_nodes:
            stages.exclude_sensitive_nodes(search.max_groups)
    variants, sensitivity = stages.variants, stages.sensitivity
    fp32, *variants = measure.time([fp32, *variants])
    chosen, reason = choose_variant(fp32, variants, measure.allowed)
    selection = QuantSelection(
        fp32=fp32,
        variants=tuple(variants),
        chosen=chosen.name,
        reason=reason,
        allowed_drop=measure.allowed,
        accuracy_basis="labels" if eval_split.y is not None else "agreement with fp32",
        int8_support=host_info()["int8_support"],
        threads=measure.threads,
        batch_size=measure.batch_size,
        sensitivity=tuple(sensitivity),
    )
    return dataclasses.replace(selection, warnings=tuple(selection_warnings(selection)))


def _most_accurate(variants: list[Variant]) -> Variant:
    """Highest accuracy (smallest drop), then the smaller file."""
    return min(variants, key=lambda v: (v.accuracy_drop, v.size_bytes))


def choose_variant(fp32: Variant, variants: list[Variant], allowed: float) -> tuple[Variant, str]:
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
            closest = _most_accurate(quantized) if quantized else None
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


def quantize_for_target(
    model_path: str | Path,
    target: str = "mobile",
    data: str | None = None,
    out: str | Path | None = None,
    search: QuantSearch = QuantSearch(),
    overwrite: bool = False,
    seed: int = 0,
) -> QuantSelection:
    """``edgekd quantize``: every variant into ``out`` (default ``<model>-quantized/``) plus
    ``quantization.json``; calibration on the training split of ``data``, choice on validation.

    >>> quantize_for_target("student.onnx", "mobile", "digits").chosen  # doctest: +SKIP
    """
    from edgekd.data import load_data
    from edgekd.fileio import atomic_dir, write_json_atomic
    from edgekd.targets import load_target

    model_path = Path(model_path)
    if not model_path.is_file():
        raise BadInputError(f"{model_path}: ONNX model not found")
    profile = load_target(target)
    bundle = load_data(data, seed=seed)
    _check_model_inputs(model_path, bundle)
    out = Path(out) if out else model_path.with_name(f"{model_path.stem}-quantized")
    with atomic_dir(out, overwrite=overwrite) as work:
        sel = select_quantization(
            model_path, profile, bundle.train.inputs, bundle.val, work, search=search
        )
        sel = _relocate(sel, work, out)
        write_json_atomic(work / "quantization.json", sel.to_dict())
    return sel


def _relocate(sel: QuantSelection, work: Path, out: Path) -> QuantSelection:
    def move(v: Variant) -> Variant:
        if v.path and Path(v.path).parent == work:
            return dataclasses.replace(v, path=str(out / Path(v.path).name))
        return v

    return dataclasses.replace(sel, variants=tuple(move(v) for v in sel.variants))


def _check_model_inputs(model_path: Path, bundle) -> None:
    """The data must feed the model: same input names, same per-sample shapes where fixed."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    inputs = {i.name: i for i in graph.input if i.name not in initializers}
    if set(inputs) != set(bundle.input_names):
        raise BadInputError(
            f"{model_path}: model inputs {sorted(inputs)} do not match the inputs of data "
            f"'{bundle.name}' {sorted(bundle.input_names)}"
        )
    for name, shape in bundle.sample_shapes.items():
        dims = inputs[name].type.tensor_type.shape.dim[1:]
        want = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
        if len(want) != len(shape) or any(
            w not in (None, s) for w, s in zip(want, shape, strict=True)
        ):
            raise BadInputError(
                f"{model_path}: input '{name}' takes samples of shape {want} but data "
                f"'{bundle.name}' has {shape}"
            )
