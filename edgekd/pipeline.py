"""``distill``: teacher -> sized student -> distilled -> ONNX -> int8 variants -> bench -> verdict.

Every artifact is built inside a temporary folder that is renamed to ``--out`` only when the whole
run succeeded, so a failed run leaves no partial output folder behind.
"""

from __future__ import annotations

import shutil
import tempfile
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
from edgekd.quantize_select import QuantSelection, Variant, select_quantization
from edgekd.report import ModelResult, Report, to_markdown
from edgekd.sizing import size_student_to_budget
from edgekd.students import build_student, count_params
from edgekd.targets import load_target
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
    with atomic_dir(out, overwrite=config.overwrite) as work:
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
            teacher_info.params,
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
        teacher_train_logits = predict_logits(teacher, data.train)  # offline: computed once
        train_cfg = TrainConfig(
            epochs=config.epochs,
            lr=config.lr,
            batch_size=config.batch_size,
            alpha=config.alpha,
            seed=config.seed,
        )
        method = make_method(config.method, temperature=config.temperature)
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
        # Every quantization mode the target allows, measured; the fastest within the accuracy
        # budget (versus the fp32 student) is chosen. The run folder keeps the chosen variant, or
        # when fp32 wins, the best quantized one so the report shows why.
        with tempfile.TemporaryDirectory() as variants_dir:
            selection = select_quantization(
                work / "student.onnx", target, data.train.inputs, data.val, variants_dir
            )
            shown = _shown_variant(selection)
            if shown is not None:
                # Named by precision (student-int8.onnx) so tables stay readable; the full variant
                # name (e.g. int8-qoperator-perchannel-minmax) is in report.student.
                shutil.copyfile(shown.path, work / f"student-{shown.precision}.onnx")
        variants = [] if shown is None else [(f"student-{shown.precision}", None, shown.precision)]
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
            results.append(result)
        lap("bench")

        teacher_result = results[1]  # the teacher as deployed (ONNX fp32)
        fp32_chosen = selection.chosen == "fp32"
        chosen_name = "student-onnx" if fp32_chosen else f"student-{shown.precision}"
        chosen = next(r for r in results if r.name == chosen_name)
        why = selection.reason
        warnings = list(selection.warnings) + [f"{r.name}: {n}" for r in results for n in r.notes]
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
                **c.__dict__,
                "sizing": sizing.to_dict(),
                "chosen_variant": selection.chosen,
                "quantized_variant_shown": None if shown is None else shown.name,
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
        report.export["quantization"] = _portable(selection.to_dict(), shown)
        report.charts = write_charts(report, work)
        write_json_atomic(work / "report.json", report.to_dict())
        write_text_atomic(work / "report.md", to_markdown(report))
    return report


def _with_self_agreement(result: ModelResult) -> tuple[ModelResult, None]:
    from dataclasses import replace

    return replace(result, agreement_with_teacher=1.0, kl_to_teacher=0.0), None


def _relative_paths(results: list[ModelResult], work: Path, out: Path) -> list[ModelResult]:
    from dataclasses import replace

    return [replace(r, path=str(out / Path(r.path).name)) for r in results]


def _shown_variant(selection: QuantSelection) -> Variant | None:
    """The quantized variant to benchmark: the chosen one, else the fastest that fits, else the
    most accurate (None when the target allows no quantized precision)."""
    usable = [v for v in selection.variants if v.error is None]
    if not usable:
        return None
    if selection.chosen != "fp32":
        return selection.chosen_variant
    fitting = [v for v in usable if v.fits]
    if fitting:
        return min(fitting, key=lambda v: v.latency_ms["p50"])
    return min(usable, key=lambda v: v.accuracy_drop)


def _portable(selection: dict, kept: Variant | None) -> dict:
    """Paths as file names in the run folder; "" for variants measured but not kept."""
    selection["fp32"]["path"] = "student.onnx"
    for v in selection["variants"]:
        v["path"] = f"student-{v['name']}.onnx" if kept and v["name"] == kept.name else ""
    return selection
