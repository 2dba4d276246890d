"""The quantization search: every variant the target allows, measured, then the choice.

Quantize the fp32 model in every mode the target allows, measure each variant's size, latency
(p50/p95 at the target's batch size; ranked at one thread, and reported at the target's threads
too), accuracy and agreement with the fp32 model, and choose the fastest variant whose accuracy
drop versus fp32 stays within the target's ``budget.accuracy_drop``, near-ties going to the
smaller, simpler variant (:mod:`edgekd.quantize.variants`). The fp32 model is a candidate too:
where int8 is slower (small models, CPUs without VNNI or dot-product instructions) fp32 wins and
the reason says so. Timing is the bench harness's, filtered (:mod:`edgekd.quantize.timing`).

Ranked at one thread because on a shared host a second thread mostly measures the neighbours
(and the target's device is not this host anyway); the target's thread count is measured and
reported beside it, and ``edgekd distill``'s benchmark, at the target's threads, has the last word.

If no int8 variant fits: try the other calibration methods (percentile, entropy), then keep the
most quantization-sensitive nodes in fp32 (:mod:`edgekd.quantize.sensitivity`) until one fits,
and report which nodes stayed fp32.

The stages live here (:class:`QuantSearchRun` builds variants, :class:`VariantMeter` measures them);
the variants, the choice and its words live in :mod:`edgekd.quantize.variants`.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.bench.accuracy import predict
from edgekd.data import Split
from edgekd.data.split import spread_rows
from edgekd.errors import BadInputError, EdgekdError
from edgekd.hostinfo import host_info, host_threads
from edgekd.quantize import (
    CALIBRATIONS,
    HANDLERS,
    Int8StaticConfig,
    QuantConfig,
    preprocess,
    quantize,
)
from edgekd.quantize.sensitivity import Damage, Sensitivity, exclude_until_fits, rank_sensitivity
from edgekd.quantize.timing import REAL_CLOCK, Clock, duel, screen
from edgekd.quantize.variants import (
    TIE,
    Duel,
    QuantSelection,
    Variant,
    choose_quantized_variant,
    format_variants,
    leaders,
    most_accurate,
    selection_warnings,
)
from edgekd.runtimes import get_runtime
from edgekd.targets import TargetProfile

# The variant types and their words moved to variants.py; these names stay importable from here,
# where the pipeline, the CLI and the benchmarks import them.
__all__ = [
    "GRANULARITIES",
    "Duel",
    "MODES",
    "TIE",
    "QuantSearch",
    "QuantSearchRun",
    "QuantSelection",
    "Variant",
    "VariantMeter",
    "candidate_configs",
    "choose_quantized_variant",
    "format_variants",
    "quantize_for_target",
    "select_quantization",
    "selection_warnings",
]

# Every config type's names for itself in QuantSearch.modes: dynamic, qdq, qoperator, fp16.
MODES = tuple(mode for config_type in HANDLERS for mode in config_type.modes)
GRANULARITIES = ("per-channel", "per-tensor")


@dataclass(frozen=True)
class QuantSearch:
    """What :func:`select_quantization` tries. Modes the target's precisions exclude are skipped.

    modes                  dynamic (int8), qdq / qoperator (static int8), fp16
    granularities          weight scales per-channel and/or per-tensor
    calibrations           calibration methods tried first (static modes)
    fallback_calibrations  tried on the most accurate static variant when no int8 variant fits
    exclude_nodes          keep the most sensitive nodes fp32 when still nothing fits
    max_groups             bound on sensitivity probes (nodes are grouped beyond it)
    latency_min_time_s     timed seconds per variant in the screen (at each thread count)
    duel_time_s            budget for re-measuring the two leaders against each other, paired
                           (twice that at most while too few pairs were clean)
    allowed_drop           accuracy drop allowed versus fp32; None = the target's budget
    threads                intra-op threads the choice ranks on; None = the target's (capped at
                           the cores). The target's threads are measured and reported as well.
    """

    modes: tuple[str, ...] = MODES
    granularities: tuple[str, ...] = GRANULARITIES
    calibrations: tuple[str, ...] = ("minmax",)
    fallback_calibrations: tuple[str, ...] = ("percentile", "entropy")
    num_samples: int = 256
    exclude_nodes: bool = True
    max_groups: int = 24
    latency_min_time_s: float = 0.3
    duel_time_s: float = 1.0
    allowed_drop: float | None = None
    threads: int | None = 1

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
        calibrated = {m for t in HANDLERS if t.needs_calibration for m in t.modes}
        if not self.calibrations and calibrated & set(self.modes):
            raise BadInputError("quantization calibrations: static modes need at least one")
        if self.num_samples < 1 or self.max_groups < 1 or (self.threads or 1) < 1:
            raise BadInputError("num_samples, max_groups and threads must be >= 1")
        if self.allowed_drop is not None and not 0.0 <= self.allowed_drop <= 1.0:
            raise BadInputError(f"allowed_drop must be in [0, 1], got {self.allowed_drop}")
        times = {"latency_min_time_s": self.latency_min_time_s, "duel_time_s": self.duel_time_s}
        for what, seconds in times.items():
            if not 0 < seconds < float("inf"):
                raise BadInputError(f"quantization {what} must be finite and > 0, got {seconds}")

    @classmethod
    def timed_like_bench(cls, bench_seconds: float) -> QuantSearch:
        """The default search, timed in proportion to a benchmark's seconds per model
        (``edgekd distill --bench-seconds``; its default 0.5 gives the defaults here)."""
        return cls(latency_min_time_s=0.6 * bench_seconds, duel_time_s=2.0 * bench_seconds)


def candidate_configs(
    target: TargetProfile, search: QuantSearch = QuantSearch()
) -> list[QuantConfig]:
    """Every config the search asks for that the target's precisions allow: each config type's
    own grid, in the order the types registered their handlers."""
    return [
        config
        for config_type in HANDLERS
        if config_type.precision in target.precisions
        for config in config_type.grid(search)
    ]


class VariantMeter:
    """Measures model files: accuracy and agreement with fp32 on the evaluation split as each
    variant is built (:meth:`variant`), latency at the target's batch size for all of them
    together at the end (:meth:`time`), then the two leaders against each other (:meth:`duel`)."""

    def __init__(
        self,
        target: TargetProfile,
        eval_split: Split,
        reference: np.ndarray,
        search: QuantSearch,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        self.runtime = get_runtime("ort_cpu")
        self.threads = host_threads(search.threads or target.threads)  # what the choice ranks on
        self.target_threads = host_threads(target.threads)
        self.clock = clock
        self.batch_size = target.batch_size
        self.split = eval_split
        self.reference = reference
        self.search = search
        self.fp32_accuracy: float | None = None
        self.allowed = 0.0
        self._sessions: dict[tuple[str, int], object] = {}

    def _session(self, path: str | Path, threads: int):
        key = (str(path), threads)
        if key not in self._sessions:
            self._sessions[key] = self.runtime.open(str(path), threads)
        return self._sessions[key]

    def logits(self, path: Path) -> np.ndarray:
        session = self.runtime.open(str(path), self.target_threads)
        return predict(session, self.split)

    def _runs(self, variants: list[Variant], threads: int) -> dict:
        feed = {k: v[: self.batch_size] for k, v in self.split.inputs.items()}
        sessions = {v.name: self._session(v.path, threads) for v in variants}
        return {name: (lambda s=session: s.run(feed)) for name, session in sessions.items()}

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
            config=config.to_dict() if config is not None else {},
        )

    def time(self, variants: list[Variant]) -> list[Variant]:
        """Every variant's latency at the ranking threads (``latency_ms``) and, where they differ,
        at the target's (``latency_ms_target``): :func:`edgekd.quantize.timing.screen`."""
        runnable = [v for v in variants if v.error is None]
        seconds = self.search.latency_min_time_s
        ranked = screen(self._runs(runnable, self.threads), seconds, self.threads, self.clock)
        at_target = ranked
        if self.target_threads != self.threads:
            runs = self._runs(runnable, self.target_threads)
            at_target = screen(runs, seconds, self.target_threads, self.clock)
        return [
            dataclasses.replace(v, latency_ms=ranked[v.name], latency_ms_target=at_target[v.name])
            if v.error is None
            else v
            for v in variants
        ]

    def duel(self, fp32: Variant, variants: list[Variant]) -> Duel | None:
        """The screen's two leaders among the candidates (fp32 and the variants that fit)
        re-measured against each other; None when there is only one candidate."""
        ok = [fp32] + [v for v in variants if v.fits and v.error is None]
        if len(ok) < 2:
            return None
        first, second = leaders(ok)
        runs = self._runs([first, second], self.threads)
        return duel(
            (first.name, runs[first.name]),
            (second.name, runs[second.name]),
            self.search.duel_time_s,
            self.threads,
            self.clock,
        )

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
            config=config.to_dict(),
            error=error,
        )


class QuantSearchRun:
    """The search's stages over one pre-processed graph: grid, recalibration, node exclusion."""

    def __init__(
        self,
        measure: VariantMeter,
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
        best = self.configs[most_accurate(static).name]
        for calibration in calibrations:
            config = dataclasses.replace(best, calibration=calibration)
            if config.name not in self.configs:
                self.build(config, "calibration")

    def exclude_sensitive_nodes(self, max_groups: int) -> None:
        """Rank nodes by sensitivity on the most accurate int8 variant; exclude until it fits."""
        base = self.configs[most_accurate(self.int8()).name]
        m = self.measure
        self.sensitivity = rank_sensitivity(
            self.pre, base, self.calibration, m.damage, self.work, max_groups
        )
        found = exclude_until_fits(
            self.pre, base, self.calibration, self.sensitivity, m.damage, m.fits, self.work
        )
        if found is not None:
            self.build(found[0], "exclusion")


# The most validation samples a variant's accuracy is measured on: every variant (six int8 ones on
# the default targets) runs over them, and 4,096 resolve a difference of a tenth of a point where
# the budget allows one point (a 60,000-image set's 6,000 cost half again as much for nothing).
EVAL_ROWS = 4096


def eval_rows(split: Split, rows: int = EVAL_ROWS) -> Split:
    """``split``, or ``rows`` of its samples spread over it (``edgekd.data.split.spread_rows``:
    a file ordered by class keeps its mix), on disk if mapped."""
    return split if split.n <= rows else split.part(spread_rows(split.n, rows))


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
    measure = VariantMeter(target, eval_split, np.zeros(0), search)
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
        stages = QuantSearchRun(measure, pre, Path(tmp), calibration, out_dir, fp32_path.stem)
        for config in candidate_configs(target, search):
            stages.build(config, "grid")
        if not stages.int8_fits():
            stages.recalibrate(search.fallback_calibrations)
        if not stages.int8_fits() and search.exclude_nodes:
            stages.exclude_sensitive_nodes(search.max_groups)
    variants, sensitivity = stages.variants, stages.sensitivity
    fp32, *variants = measure.time([fp32, *variants])
    paired = measure.duel(fp32, variants)
    chosen, reason = choose_quantized_variant(fp32, variants, measure.allowed, paired)
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
        eval_samples=eval_split.n,
        sensitivity=tuple(sensitivity),
        target_threads=measure.target_threads,
        duel=None if paired is None else paired.to_dict(),
    )
    return dataclasses.replace(selection, warnings=tuple(selection_warnings(selection)))


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
