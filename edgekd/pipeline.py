"""``distill``: teacher -> sized student -> distilled -> ONNX -> int8 variants -> bench -> verdict.

Every artifact is built inside a temporary folder that is renamed to ``--out`` only when the whole
run succeeded, so a failed run leaves no partial output folder behind.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from edgekd.bench.budget import budget_lines
from edgekd.bench.run import ModelRef, bench_model
from edgekd.checkpoint import save_model
from edgekd.data import load_data
from edgekd.distill.blackbox import blackbox_teacher_report
from edgekd.distill.methods import get_method
from edgekd.distill.strategies import DistillJob, StrategyOptions, resolve_strategy, run_strategy
from edgekd.distill.trainer import TrainConfig
from edgekd.export import export_onnx
from edgekd.fileio import atomic_dir, write_json_atomic, write_text_atomic
from edgekd.hostinfo import host_info
from edgekd.progress import status
from edgekd.quantize import Int8DynamicConfig, Int8StaticConfig, quantize
from edgekd.report import ModelResult, Report, to_markdown
from edgekd.sizing import size_student_to_budget
from edgekd.students import build_student, count_params
from edgekd.targets import load_target
from edgekd.teacher import default_teacher

# A black-box command does not tell its size: then only the target's budget bounds the student.
UNKNOWN_TEACHER_PARAMS = 10**12


@dataclass(frozen=True)
class DistillConfig:
    target: str = "mobile"
    data: str | None = None
    method: str = "kd"
    temperature: float = 4.0
    alpha: float | None = None  # None: the method's own default (see `edgekd methods`)
    strategy: str | None = None  # None: offline, or blackbox for --teacher-onnx/--teacher-cmd
    pairs: tuple[str, ...] = ()  # "student_layer:teacher_layer" for feature methods
    method_weight: float | None = None  # None: the method's own default
    temperature_end: float | None = None  # anneal T linearly to this value
    generations: int = 2  # strategy self
    peer: str = "teacher"  # strategy online
    finetune_epochs: int = 0
    teacher_onnx: str | None = None  # black-box teacher: an ONNX file ...
    teacher_cmd: str | None = None  # ... or a command (edgekd.distill.blackbox)
    teacher_output: str = "probs"  # probs | topk:K | labels
    epochs: int = 30
    teacher_epochs: int = 40
    lr: float = 3e-3
    batch_size: int = 64
    seed: int = 0
    student_family: str | None = None
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
    out = Path(config.out) if config.out else default_out_dir(target.name)
    blackbox = bool(config.teacher_onnx or config.teacher_cmd)
    strategy = resolve_strategy(config.strategy, blackbox)
    with atomic_dir(out, overwrite=config.overwrite) as work:
        teacher, teacher_stub = None, None
        if blackbox:
            teacher_info, teacher_stub = blackbox_teacher_report(
                config.teacher_onnx, config.teacher_cmd, data, target
            )
        else:
            teacher, teacher_info = default_teacher(
                data, seed=config.seed, epochs=config.teacher_epochs
            )
        lap("teacher")
        input_name = data.input_names[0]
        sizing = size_student_to_budget(
            target,
            data.sample_shapes[input_name],
            data.input_kind,
            data.num_classes,
            teacher_info.params or UNKNOWN_TEACHER_PARAMS,
            family=config.student_family,
        )
        c = sizing.chosen
        student = build_student(
            c.family, data.sample_shapes[input_name], data.num_classes, c.width, c.depth
        )
        status(
            f"student: {c.family} width {c.width} depth {c.depth}, {c.params:,} parameters "
            f"(teacher {teacher_info.params:,})"
        )
        method_cls = get_method(config.method)
        alpha = method_cls.default_alpha if config.alpha is None else config.alpha
        train_cfg = TrainConfig(
            epochs=config.epochs,
            lr=config.lr,
            batch_size=config.batch_size,
            alpha=alpha,
            seed=config.seed,
        )
        method_options = {
            "temperature": config.temperature,
            "temperature_end": config.temperature_end,
            "weight": config.method_weight,
            "pairs": config.pairs,
        }
        options = StrategyOptions(
            generations=config.generations,
            peer=config.peer,
            teacher_onnx=config.teacher_onnx,
            teacher_cmd=config.teacher_cmd,
            teacher_output=config.teacher_output,
            finetune_epochs=config.finetune_epochs,
        )
        job = DistillJob(teacher, student, data, train_cfg, config.method, method_options, options)
        trained = run_strategy(strategy, job)
        student, history = trained.student, trained.history
        lap("distill")

        save_model(student, work / "student.safetensors")
        if teacher is not None:
            save_model(teacher, work / "teacher.safetensors")
        elif config.teacher_onnx:
            shutil.copyfile(config.teacher_onnx, work / "teacher.onnx")
        example = data.example_inputs(1)
        exports = {}
        for name, model in (("teacher", teacher), ("student", student)):
            if model is None:  # a black-box teacher is not ours to export
                continue
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
        if teacher is None:  # a black box: benchmark its ONNX file; a command cannot be
            refs = [
                r
                for r in refs
                if r.role == "student" or (config.teacher_onnx and r.name == "teacher-onnx")
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
            if ref.role == "teacher" and teacher_logits is None:
                teacher_logits = logits
                result, _ = _with_self_agreement(result)
            results.append(result)
        lap("bench")

        # The teacher as deployed (ONNX fp32); a command teacher has only its test accuracy.
        teacher_result = next((r for r in results if r.name == "teacher-onnx"), teacher_stub)
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
            student={**c.__dict__, "sizing": sizing.to_dict(), "chosen_variant_reason": why},
            training={
                "method": config.method,
                "temperature": config.temperature,
                "alpha": alpha,
                "epochs": config.epochs,
                "lr": config.lr,
                "batch_size": config.batch_size,
                "seed": config.seed,
                "strategy": strategy,
                "strategy_info": trained.info,
                "finetune_epochs": config.finetune_epochs,
                "history": history.to_dict(),
            },
            export=exports,
            warnings=warnings,
            timings_s=timings,
        )
        report.export = {k: {**v, "path": Path(v["path"]).name} for k, v in exports.items()}
        write_json_atomic(work / "report.json", report.to_dict())
        write_text_atomic(work / "report.md", to_markdown(report))
    return report


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
