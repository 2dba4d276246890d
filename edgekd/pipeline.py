"""``distill``: teacher -> sized student -> distilled -> ONNX -> int8 variants -> bench -> verdict.

Every artifact is built inside ``OUT.partial/``, which is renamed to ``--out`` only when the whole
run succeeded (``edgekd.rundir``): a run that fails on bad input leaves nothing behind, and an
interrupted one keeps its training checkpoint for ``--resume``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

from edgekd.bench.runner import BenchSettings, ModelRef, bench_model_in_process, measure_models
from edgekd.bench.suite import thread_settings
from edgekd.config import UNKNOWN_TEACHER_PARAMS, DistillConfig
from edgekd.data import Split, load_data
from edgekd.data.inputs import describe
from edgekd.distill.job import make_job, repeat_seeds, train_offline, uses_default_path
from edgekd.distill.methods import make_method
from edgekd.distill.strategies import (
    resolve_strategy,
    run_strategy,
)
from edgekd.errors import BadInputError, EdgekdError, Interrupted
from edgekd.export import export_onnx
from edgekd.fileio import write_json_atomic, write_text_atomic
from edgekd.gate import gate
from edgekd.hostinfo import host_info
from edgekd.progress import status
from edgekd.quantize import Int8StaticConfig, quantize
from edgekd.quantize.select import QuantSelection, Variant, select_quantization
from edgekd.report.markdown import to_markdown
from edgekd.report.plots import write_charts
from edgekd.results import ModelResult, Report
from edgekd.rundir import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    STAGES_DIR,
    partial_dir,
    run_dir,
)
from edgekd.safety.versions import check_versions
from edgekd.sizing import build_candidate, size_student_to_budget
from edgekd.students import count_params
from edgekd.students.checkpoint import save_model
from edgekd.targets import TargetProfile, load_target
from edgekd.teacher.blackbox import blackbox_teacher_report
from edgekd.teacher.prepare import Teaching, prepare_teaching
from edgekd.train.distributed import DistContext, on_main, resumes_after_restart, run_stamp
from edgekd.train.resume import remove_stale_temporaries


def default_out_dir(target: str, dist: DistContext | None = None) -> Path:
    """``runs/TARGET-STAMP``: the start time, or under torchrun its run id (the same on every
    worker and after a restart)."""
    path = Path("runs") / f"{target}-{run_stamp() or time.strftime('%Y%m%d-%H%M%S')}"
    return path if dist is None else dist.from_main(lambda: path)


def distill(
    config: DistillConfig = DistillConfig(),  # noqa: B008  (frozen: one shared default is safe)
    resume: bool = False,
    dist: DistContext | None = None,
) -> Report | None:
    """Run the whole pipeline and return the report (also written to ``config.out``).

    ``resume=True`` continues the interrupted run in ``config.out`` (see :func:`resume_config`).
    ``dist`` (see :mod:`edgekd.train.distributed`): this process is one of several torchrun
    workers that train together; rank 0 alone writes the run folder and returns the report, the
    others return None once training is done. After a torchrun restart the run resumes by itself.

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
    data = load_data(
        config.data,
        seed=config.seed,
        test_data=config.test_data,
        val_data=config.val_data,
        label_column=config.label_column,
    )
    method_name = config.method or {"classification": "kd", "embedding": "embed"}[config.task]
    method = make_method(method_name, temperature=config.temperature)
    if config.task not in method.tasks:
        raise BadInputError(
            f"method {method_name!r} distils {' or '.join(method.tasks)} outputs, not "
            f"--task {config.task}"
        )
    out = Path(config.out) if config.out else default_out_dir(target.name, dist)
    blackbox = bool(config.teacher_onnx or config.teacher_cmd)
    strategy = resolve_strategy(config.strategy, blackbox)
    resume = resume or resumes_after_restart(partial_dir(out), dist)
    main = dist is None or dist.is_main  # (dist) only rank 0 touches the run folder
    with contextlib.ExitStack() as stack:
        work = on_main(dist, stack, lambda: run_dir(out, overwrite=config.overwrite, resume=resume))
        if not resume and main:
            write_json_atomic(work / CONFIG_FILE, {**dataclasses.asdict(config), "out": str(out)})
        teacher_stub = None
        if blackbox:
            teaching, teacher_stub = _blackbox_teaching(config, data, target)
        else:
            teaching = prepare_teaching(config, data, dist)  # offline: outputs computed once
        teacher, data = teaching.model, teaching.data
        lap("teacher")
        # Sizing builds heads with one output per class, or per embedding dimension.
        sized_data = dataclasses.replace(data, num_classes=teaching.num_outputs)
        size = size_student_to_budget
        args = (target, sized_data, teaching.params, config.student)
        sizing = size(*args) if dist is None else dist.from_main(size, *args)  # measures: rank 0
        lap("size")
        c = sizing.chosen
        torch_seed(config.seed)  # the student's initial weights depend on the seed alone
        student = build_candidate(c, sized_data)
        init_summary = None
        if config.init_from_teacher:
            from edgekd.students.teacher_init import init_from_teacher

            init_summary = init_from_teacher(student, teacher).to_dict()
        status(
            f"student: {c.label}, {c.params:,} parameters (teacher {teaching.params:,}), "
            f"est. {c.latency_estimate_ms:.3f} ms on {target.device.name} (estimate)"
        )
        train = data.train if config.task == "classification" else Split(data.train.inputs)
        checkpoint = work / CHECKPOINT_FILE
        if resume and main:
            remove_stale_temporaries(checkpoint)
        on_file = checkpoint.is_file
        resume_training = resume and (on_file() if dist is None else dist.from_main(on_file))
        job, augment_why = make_job(config, teaching, student, strategy, method_name, dist)
        alpha, augment = job.train.alpha, job.options.augment
        try:
            if uses_default_path(job, strategy, teaching):
                # The common case: one stage, its checkpoint in OUT.partial/checkpoint.pt.
                trained = train_offline(
                    job, teaching, train, config.task, checkpoint, resume_training
                )
            else:  # the other strategies and feature methods: a checkpoint per stage
                stages = dataclasses.replace(job, checkpoints=work / STAGES_DIR, resume=resume)
                trained = run_strategy(strategy, stages)
        except (Interrupted, KeyboardInterrupt) as exc:
            raise Interrupted(
                f"{exc or 'aborted'}; resume with: edgekd distill --resume {out}"
            ) from None
        trained.info["augment_level"] = augment_why
        student, history = trained.student, trained.history
        seeds = None
        if config.seeds > 1:
            fresh = lambda: build_candidate(c, sized_data)  # noqa: E731
            seeds = repeat_seeds(config, job, teaching, train, strategy, fresh, student)
        lap("distill")
        if not main:  # (dist) rank 0 exports, benchmarks and reports; this worker is done
            return None

        save_model(student, work / "student.safetensors")
        user = teaching.loaded
        if user is None and teacher is not None:
            save_model(teacher, work / "teacher.safetensors")
        elif config.teacher_onnx:  # a black box: benchmark its file as given
            shutil.copyfile(config.teacher_onnx, work / "teacher.onnx")
        example = data.example_inputs(1)
        exports = {}
        warnings = list(teaching.warnings)
        ours = teacher is not None and (user is None or user.onnx_path is None)
        to_export = [("teacher", teacher)] if ours else []
        for name, model in [*to_export, ("student", student)]:
            try:
                exports[name] = export_onnx(
                    model,
                    work / f"{name}.onnx",
                    example,
                    target.opset,
                    parity_inputs=data.test.inputs,
                ).to_dict()
            except EdgekdError as exc:
                if user is None or name != "teacher":
                    raise
                warnings.append(f"teacher not exported to ONNX, benchmarked in PyTorch: {exc}")
        selection, shown = None, None
        if config.task == "classification":
            # Every quantization mode the target allows, measured; the fastest within the
            # accuracy budget (versus the fp32 student) is chosen. The run folder keeps the chosen
            # variant, or when fp32 wins, the best quantized one so the report shows why.
            with tempfile.TemporaryDirectory() as variants_dir:
                selection = select_quantization(
                    work / "student.onnx", target, data.train.inputs, data.val, variants_dir
                )
                shown = _shown_variant(selection)
                if shown is not None:
                    # Named by precision (student-int8.onnx) so tables stay readable; the full
                    # variant name (e.g. int8-qoperator-perchannel-minmax) is in report.student.
                    shutil.copyfile(shown.path, work / f"student-{shown.precision}.onnx")
            variants = (
                [] if shown is None else [(f"student-{shown.precision}", None, shown.precision)]
            )
        else:
            # Embeddings: argmax agreement means nothing for vectors, so the accuracy-aware
            # selection does not apply; one static int8 variant is judged on cosine similarity.
            quantize(
                work / "student.onnx",
                Int8StaticConfig(),
                work / "student-int8.onnx",
                data.train.inputs,
            )
            variants = [("student-int8", None, "int8")]
        lap("export+quantize")

        n_student = count_params(student)
        refs = _teacher_refs(teaching, work, "teacher" in exports)
        refs += [
            ModelRef(name, str(work / file), "ort_cpu", prec, "student", n_student)
            for name, file, prec in [("student-onnx", "student.onnx", "fp32")]
            + [(n, f"{n}.onnx", p) for n, _, p in variants]
        ]
        if config.task == "classification" and user is None:
            # Interleaved fresh processes per model; fidelity against the torch teacher.
            settings = BenchSettings(
                processes=config.bench_processes,
                seconds_per_process=config.bench_seconds / config.bench_processes,
            )
            reference = next((r.name for r in refs if r.role == "teacher"), None)
            results, _ = measure_models(
                refs, data.test, target.threads, target.batch_size, settings, reference=reference
            )
            results = [_with_latency_estimate(r, target) for r in results]
        else:
            # Embeddings and users' own teachers are measured in this process, one model at a
            # time: a fresh process could rebuild a user's teacher only by running their code again.
            results = []
            teacher_logits = teaching.test_outputs
            in_process = {"teacher-torch": teacher} if user is not None else {}
            for ref in refs:
                status(f"benchmarking {ref.name} ({ref.runtime})")
                result, logits = bench_model_in_process(
                    ref,
                    data.test,
                    target.threads,
                    target.batch_size,
                    teacher_logits,
                    config.bench_seconds,
                    task=config.task,
                    model=in_process.get(ref.name),
                )
                if ref.name == "teacher-torch":
                    teacher_logits = logits if teacher_logits is None else teacher_logits
                    result, _ = _with_self_agreement(result)
                    if user is not None:
                        result = dataclasses.replace(result, size_bytes=_param_bytes(teacher))
                results.append(_with_latency_estimate(result, target))
        lap("bench")

        if teacher_stub is not None:  # a command teacher: only its answers' accuracy is known
            results.append(teacher_stub)
        names = {r.name: r for r in results}
        teacher_result = names.get("teacher-onnx") or names["teacher-torch"]  # as deployed
        if selection is not None:
            fp32_chosen = selection.chosen == "fp32" or shown is None
            chosen = names["student-onnx" if fp32_chosen else f"student-{shown.precision}"]
            why = selection.reason
            warnings += list(selection.warnings)
        else:
            chosen, why = choose_variant(
                [r for r in results if r.role == "student"],
                teacher_result,
                target.budget.accuracy_drop,
            )
        warnings += [f"{r.name}: {n}" for r in results for n in r.notes] + check_versions()
        report = Report(
            target=target.to_dict(),
            host={**host_info(), "threads": thread_settings(target.threads)},
            models=_relative_paths(results, work, out),
            chosen=chosen.name,
            data={
                "name": data.name,
                "split_note": data.split_note,
                "train": data.train.n,
                "val": data.val.n,
                "test": data.test.n,
                "input_kind": data.input_kind,
                "inputs": {k: describe(str(v.dtype), v.shape[1:]) for k, v in example.items()},
                "labels": data.train.y is not None,
                "sources": {"train": config.data, "val": config.val_data, "test": config.test_data},
            },
            teacher=teaching.info,
            student={
                "family": c.family,
                "width": c.width,
                "depth": c.depth,
                "params": c.params,
                "latency_estimate_ms": c.latency_estimate_ms,
                "latency_estimate_label": "estimate",
                "init_from_teacher": init_summary,
                "sizing": sizing.to_dict(),
                "chosen_variant": None if selection is None else selection.chosen,
                "quantized_variant_shown": None if shown is None else shown.name,
                "chosen_variant_reason": why,
                "test_fingerprint": data.test.fingerprint(),
            },
            training={
                "method": method_name,
                "task": config.task,
                "temperature": config.temperature,
                "alpha": alpha,
                "epochs": job.train.epochs,
                "lr": config.lr,
                "batch_size": config.batch_size,
                "seed": config.seed,
                "strategy": strategy,
                "strategy_info": trained.info,
                "augment": augment,
                "patience": config.patience,
                "epochs_run": len(history.loss),
                "seeds": seeds,
                "finetune_epochs": config.finetune_epochs,
                "history": history.to_dict(),
                "trust_checkpoint": config.trust_checkpoint,
                "resumed": resume,
            },
            export=exports,
            warnings=warnings,
            timings_s=timings,
            out_dir=str(out),
        )
        report.export = {k: {**v, "path": Path(v["path"]).name} for k, v in exports.items()}
        # The run ends with the gate on the chosen student (the CI step is `edgekd gate`).
        verdict = gate(report, target)
        report.budget = [line.to_budget_line() for line in verdict.lines]
        report.gate = verdict.to_dict()
        if selection is not None:
            report.export["quantization"] = _portable(selection.to_dict(), shown)
        report.charts = write_charts(report, work)
        write_json_atomic(work / "report.json", report.to_dict())
        write_text_atomic(work / "report.md", to_markdown(report))
    return report


def _with_latency_estimate(result: ModelResult, target: TargetProfile) -> ModelResult:
    """Add the roofline estimate for the target device (an estimate, never a measurement) to an
    ONNX model's result, from its own graph: the int8 variants are estimated as quantized."""
    from dataclasses import replace

    from edgekd.sizing.onnx_cost import analyze_onnx
    from edgekd.sizing.roofline import estimate_latency

    if result.format != "onnx":
        return result
    cost = analyze_onnx(result.path, batch_size=result.batch_size)
    return replace(result, latency_estimate_ms=estimate_latency(cost, target.device).total_ms)


def _with_self_agreement(result: ModelResult) -> tuple[ModelResult, None]:
    from dataclasses import replace

    kl = None if result.kl_to_teacher is None else 0.0  # embeddings have no KL
    return replace(result, agreement_with_teacher=1.0, kl_to_teacher=kl), None


def _relative_paths(results: list[ModelResult], work: Path, out: Path) -> list[ModelResult]:
    from dataclasses import replace

    # Files built in the run folder move with it; a user's own teacher file stays where it is.
    return [
        replace(r, path=str(out / Path(r.path).name)) if Path(r.path).parent == work else r
        for r in results
    ]


def _blackbox_teaching(config, data, target) -> tuple[Teaching, ModelResult | None]:
    """A teacher reachable only through its answers (``--teacher-onnx`` / ``--teacher-cmd``): no
    module and no precomputed outputs; the blackbox strategy queries it itself."""
    info, stub = blackbox_teacher_report(config.teacher_onnx, config.teacher_cmd, data, target)
    teaching = Teaching(
        model=None,
        info={**info.to_dict(), "kind": "black box", "answers": config.blackbox_output},
        data=data,
        num_outputs=data.num_classes,
        params=info.params or UNKNOWN_TEACHER_PARAMS,
        train_outputs=None,
        val_outputs=None,
    )
    return teaching, stub


def _teacher_refs(teaching, work: Path, exported: bool) -> list[ModelRef]:
    """teacher-torch (PyTorch eager) and teacher-onnx (ONNX Runtime), as far as each exists."""
    user = teaching.loaded
    params = teaching.params
    if teaching.model is None:  # a black box: its ONNX file if it has one, else nothing to run
        path = work / "teacher.onnx"
        return [ModelRef("teacher-onnx", str(path), "ort_cpu", "fp32", "teacher", params)] * int(
            path.is_file()
        )
    refs = []
    torch_path = str(work / "teacher.safetensors") if user is None else None
    if user is not None and user.kind != "onnx":
        # Run in this process: a user's code cannot be rebuilt in a fresh one without running it.
        torch_path = user.weights or user.source
    if torch_path is not None:
        refs.append(ModelRef("teacher-torch", torch_path, "torch_cpu", "fp32", "teacher", params))
    onnx_path = user.onnx_path if user is not None and user.onnx_path else None
    if onnx_path or exported:
        path = onnx_path or str(work / "teacher.onnx")
        refs.append(ModelRef("teacher-onnx", path, "ort_cpu", "fp32", "teacher", params))
    return refs


def _param_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def torch_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


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


def choose_variant(
    students: list[ModelResult], teacher: ModelResult, allowed_drop: float
) -> tuple[ModelResult, str]:
    """The fastest student variant (p50) within the allowed accuracy drop of the teacher."""

    # Without test labels (or for embeddings) agreement with the teacher stands in for accuracy.
    def quality(r: ModelResult) -> float | None:
        return r.accuracy if teacher.accuracy is not None else r.agreement_with_teacher

    reference = quality(teacher)
    ok = [
        s
        for s in students
        if None not in (quality(s), reference) and reference - quality(s) <= allowed_drop
    ]
    if not ok:
        best = max(students, key=lambda s: quality(s) or 0.0)
        return best, (
            f"no variant is within the allowed accuracy drop ({allowed_drop}); "
            f"kept the most accurate, {best.name}"
        )
    fastest = min(ok, key=lambda s: s.latency_ms["p50"])
    return fastest, (
        f"fastest p50 ({fastest.latency_ms['p50']:.4f} ms) of the {len(ok)} variants "
        f"within the allowed accuracy drop of {allowed_drop}"
    )


def _portable(selection: dict, kept: Variant | None) -> dict:
    """Paths as file names in the run folder; "" for variants measured but not kept."""
    selection["fp32"]["path"] = "student.onnx"
    for v in selection["variants"]:
        v["path"] = f"student-{v['name']}.onnx" if kept and v["name"] == kept.name else ""
    return selection
