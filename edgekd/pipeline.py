"""``distill``: teacher -> sized student -> distilled -> ONNX -> int8 variants -> bench -> verdict.

Every artifact is built inside a temporary folder that is renamed to ``--out`` only when the whole
run succeeded, so a failed run leaves no partial output folder behind.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from edgekd.bench.budget import budget_lines
from edgekd.bench.run import ModelRef, bench_model
from edgekd.checkpoint import save_model
from edgekd.data import load_data
from edgekd.distill.methods import make_method
from edgekd.distill.trainer import TrainConfig, cached_teacher, predict_logits, train_student
from edgekd.export import export_onnx
from edgekd.fileio import atomic_dir, write_json_atomic, write_text_atomic
from edgekd.hostinfo import host_info
from edgekd.plots import write_charts
from edgekd.progress import status
from edgekd.quantize import Int8DynamicConfig, Int8StaticConfig, quantize
from edgekd.report import ModelResult, Report, to_markdown
from edgekd.sizing import build_candidate, size_student_to_budget
from edgekd.students import count_params
from edgekd.targets import TargetProfile, load_target
from edgekd.teacher import default_teacher


@dataclass(frozen=True)
class DistillConfig:
    target: str = "mobile"
    data: str | None = None
    method: str = "kd"
    temperature: float = 4.0
    alpha: float = 0.1
    epochs: int = 30
    teacher_epochs: int = 40
    lr: float = 3e-3
    batch_size: int = 64
    seed: int = 0
    student_family: str | None = None  # a family name or pkg.module:factory; None = by input
    init_from_teacher: bool = False  # start from the teacher's sliced weights (same family only)
    out: str | None = None
    overwrite: bool = False
    bench_min_time_s: float = 0.5


def default_out_dir(target: str) -> Path:
    return Path("runs") / f"{target}-{time.strftime('%Y%m%d-%H%M%S')}"


def distill(config: DistillConfig = DistillConfig()) -> Report:
    """Run the whole pipeline and return the report (also written to ``config.out``).

    >>> report = distill(DistillConfig(target="mobile", epochs=5))  # doctest: +SKIP
    >>> report.passed  # doctest: +SKIP
    True
    """
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    target = load_target(config.target)
    data = load_data(config.data, seed=config.seed)
    method = make_method(config.method, temperature=config.temperature)  # fail fast on a typo
    out = Path(config.out) if config.out else default_out_dir(target.name)
    with atomic_dir(out, overwrite=config.overwrite) as work:
        teacher, teacher_info = default_teacher(
            data, seed=config.seed, epochs=config.teacher_epochs
        )
        lap("teacher")
        sizing = size_student_to_budget(
            target, data, teacher_info.params, config.student_family
        )
        lap("size")
        c = sizing.chosen
        student = build_candidate(c, data)
        init_summary = None
        if config.init_from_teacher:
            from edgekd.students.teacher_init import init_from_teacher

            init_summary = init_from_teacher(student, teacher).to_dict()
        status(
            f"student: {c.label}, {c.params:,} parameters (teacher {teacher_info.params:,}), "
            f"est. {c.latency_estimate_ms:.3f} ms on {target.device.name} (estimate)"
        )
        teacher_train_logits = predict_logits(teacher, data.train)  # offline: computed once
        train_cfg = TrainConfig(
            epochs=config.epochs,
            lr=config.lr,
            batch_size=config.batch_size,
            alpha=config.alpha,
            seed=config.seed,
        )
        history = train_student(
            student,
            data.train,
            data.val,
            train_cfg,
            method=method,
            teacher=cached_teacher(teacher_train_logits),
            description="distill",
        )
        lap("distill")

        save_model(student, work / "student.safetensors")
        save_model(teacher, work / "teacher.safetensors")
        example = data.example_inputs(1)
        exports = {}
        for name, model in (("teacher", teacher), ("student", student)):
            exports[name] = export_onnx(
                model, work / f"{name}.onnx", example, target.opset, parity_inputs=data.test.inputs
            ).to_dict()
        calib = data.train.inputs
        variants = [
            ("student-int8-static", Int8StaticConfig(), "int8"),
            ("student-int8-dynamic", Int8DynamicConfig(), "int8"),
        ]
        for name, qcfg, _ in variants:
            quantize(work / "student.onnx", qcfg, work / f"{name}.onnx", calib)
        lap("export+quantize")

        refs = [
            ModelRef(
                "teacher-torch",
                str(work / "teacher.safetensors"),
                "torch_cpu",
                "fp32",
                "teacher",
                teacher_info.params,
            ),
            ModelRef(
                "teacher-onnx",
                str(work / "teacher.onnx"),
                "ort_cpu",
                "fp32",
                "teacher",
                teacher_info.params,
            ),
            ModelRef(
                "student-onnx",
                str(work / "student.onnx"),
                "ort_cpu",
                "fp32",
                "student",
                count_params(student),
            ),
        ] + [
            ModelRef(
                name, str(work / f"{name}.onnx"), "ort_cpu", prec, "student", count_params(student)
            )
            for name, _, prec in variants
        ]
        results: list[ModelResult] = []
        teacher_logits = None
        for ref in refs:
            status(f"benchmarking {ref.name} ({ref.runtime})")
            result, logits = bench_model(
                ref,
                data.test,
                target.threads,
                target.batch_size,
                teacher_logits,
                config.bench_min_time_s,
            )
            if ref.name == "teacher-torch":
                teacher_logits = logits
                result, _ = _with_self_agreement(result)
            results.append(_with_latency_estimate(result, target))
        lap("bench")

        teacher_result = results[1]  # the teacher as deployed (ONNX fp32)
        chosen, why = choose_variant(
            [r for r in results if r.role == "student"], teacher_result, target.budget.accuracy_drop
        )
        warnings = _int8_warnings(results, host_info())
        report = Report(
            target=target.to_dict(),
            host=host_info(),
            models=_relative_paths(results, work, out),
            budget=budget_lines(target, chosen, teacher_result),
            chosen=chosen.name,
            data={
                "name": data.name,
                "split_note": data.split_note,
                "train": data.train.n,
                "val": data.val.n,
                "test": data.test.n,
                "input_kind": data.input_kind,
            },
            teacher=teacher_info.to_dict(),
            student={
                "family": c.family,
                "width": c.width,
                "depth": c.depth,
                "params": c.params,
                "latency_estimate_ms": c.latency_estimate_ms,
                "latency_estimate_label": "estimate",
                "init_from_teacher": init_summary,
                "sizing": sizing.to_dict(),
                "chosen_variant_reason": why,
            },
            training={
                "method": config.method,
                "temperature": config.temperature,
                "alpha": config.alpha,
                "epochs": config.epochs,
                "lr": config.lr,
                "batch_size": config.batch_size,
                "seed": config.seed,
                "strategy": "offline (teacher logits computed once)",
                "history": history.to_dict(),
            },
            export=exports,
            warnings=warnings,
            timings_s=timings,
            out_dir=str(out),
        )
        report.export = {k: {**v, "path": Path(v["path"]).name} for k, v in exports.items()}
        report.charts = write_charts(report, work)
        write_json_atomic(work / "report.json", report.to_dict())
        write_text_atomic(work / "report.md", to_markdown(report))
    return report


def _with_latency_estimate(result: ModelResult, target: TargetProfile) -> ModelResult:
    """Add the roofline estimate for the target device (an estimate, never a measurement) to an
    ONNX model's result, from its own graph: the int8 variants are estimated as quantized."""
    from dataclasses import replace

    from edgekd.estimate import estimate_latency
    from edgekd.graph import analyze_onnx

    if result.format != "onnx":
        return result
    cost = analyze_onnx(result.path, batch_size=result.batch_size)
    return replace(result, latency_estimate_ms=estimate_latency(cost, target.device).total_ms)


def _with_self_agreement(result: ModelResult) -> tuple[ModelResult, None]:
    from dataclasses import replace

    return replace(result, agreement_with_teacher=1.0, kl_to_teacher=0.0), None


def _relative_paths(results: list[ModelResult], work: Path, out: Path) -> list[ModelResult]:
    from dataclasses import replace

    return [replace(r, path=str(out / Path(r.path).name)) for r in results]


def choose_variant(
    students: list[ModelResult], teacher: ModelResult, allowed_drop: float
) -> tuple[ModelResult, str]:
    """The fastest student variant (p50) within the allowed accuracy drop of the teacher."""
    ok = [
        s
        for s in students
        if s.accuracy is not None and teacher.accuracy - s.accuracy <= allowed_drop
    ]
    if not ok:
        best = max(students, key=lambda s: s.accuracy or 0.0)
        return best, (
            f"no variant is within the allowed accuracy drop ({allowed_drop}); "
            f"kept the most accurate, {best.name}"
        )
    fastest = min(ok, key=lambda s: s.latency_ms["p50"])
    return fastest, (
        f"fastest p50 ({fastest.latency_ms['p50']:.4f} ms) of the {len(ok)} variants "
        f"within the allowed accuracy drop of {allowed_drop}"
    )


def _int8_warnings(results: list[ModelResult], host: dict) -> list[str]:
    out = []
    fp32 = next((r for r in results if r.name == "student-onnx"), None)
    for r in results:
        if (
            fp32 is not None
            and r.precision == "int8"
            and r.latency_ms["p50"] > fp32.latency_ms["p50"]
        ):
            out.append(
                f"{r.name}: int8 is slower than fp32 here ({r.latency_ms['p50'] * 1e3:.1f} us "
                f"vs {fp32.latency_ms['p50'] * 1e3:.1f} us p50); CPU int8 support: "
                f"{host['int8_support']}"
            )
    for r in results:
        out += [f"{r.name}: {n}" for n in r.notes]
    return out
