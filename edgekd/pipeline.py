"""``distill``: teacher -> sized student -> distilled -> ONNX -> int8 variants -> bench -> verdict.

:func:`distill` tells the story in stage steps: :func:`read_inputs` (target, data, method and
strategy names, checked before any folder exists), :func:`prepare_run` (teacher and sized
student; ``edgekd tune`` prepares its trials with it too), then ``_train``, ``_export``,
``_quantize``, ``_bench`` and ``_assemble_report``. Each stage returns a small result that says
how it goes into ``report.json``.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from edgekd.bench.runner import BenchSettings, ModelRef, bench_model_in_process, measure_models
from edgekd.bench.suite import thread_settings
from edgekd.config import UNKNOWN_TEACHER_PARAMS, DistillConfig
from edgekd.data import DataBundle, load_data
from edgekd.data.inputs import check_bundle, describe
from edgekd.data.normalize import attach_normalization
from edgekd.data.readers.image_folder import describe_transform
from edgekd.distill.job import epochs_choice, make_job, repeat_seeds
from edgekd.distill.methods import get_method
from edgekd.distill.strategies import DistillJob, StrategyResult, resolve_strategy, run_strategy
from edgekd.errors import BadInputError, EdgekdError, Interrupted
from edgekd.export import export_onnx
from edgekd.fileio import write_json_atomic, write_text_atomic
from edgekd.gate import gate
from edgekd.hostinfo import host_info
from edgekd.progress import status
from edgekd.quantize import Int8StaticConfig, quantize
from edgekd.quantize.select import (
    QuantSearch,
    QuantSelection,
    Variant,
    eval_rows,
    select_quantization,
)
from edgekd.quantize.variants import slower_than_fp32
from edgekd.report.markdown import to_markdown
from edgekd.report.plots import write_charts
from edgekd.results import ModelResult, Report
from edgekd.rundir import (
    CONFIG_FILE,
    STAGES_DIR,
    partial_dir,
    resume_hint_on_stop,
    run_dir,
)
from edgekd.safety.versions import check_versions
from edgekd.sizing import SizingResult, build_candidate
from edgekd.sizing.trial import as_student_sees, choose_student
from edgekd.students import count_params
from edgekd.students.checkpoint import save_model
from edgekd.targets import TargetProfile, load_target
from edgekd.teacher.blackbox import blackbox_teacher_report
from edgekd.teacher.prepare import Teaching, prepare_teaching
from edgekd.train.device import (
    describe_device,
    reset_peak_memory,
    resolve_device,
    resolve_precision,
    training_device,
)
from edgekd.train.distributed import DistContext, on_main, resumes_after_restart, run_stamp
from edgekd.train.interrupt import raise_on_signals
from edgekd.train.threads import current_choice, request_train_threads


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
    if config.task == "causal-lm":  # a language model: its own stages (edgekd.lm.pipeline)
        if config.strategy == "blackbox" or config.teacher_cmd or config.teacher_generate:
            from edgekd.lm.blackbox.pipeline import distill_blackbox_lm

            return distill_blackbox_lm(config, resume=resume)
        from edgekd.lm.pipeline import distill_lm

        return distill_lm(config, resume=resume)
    laps = _Laps()
    inputs = read_inputs(config)
    out = Path(config.out) if config.out else default_out_dir(inputs.target.name, dist)
    resume = resume or resumes_after_restart(partial_dir(out), dist)
    with contextlib.ExitStack() as stack:
        stack.enter_context(raise_on_signals(enabled=dist is None))  # SIGTERM as Ctrl-C
        # The folder exists before the teacher is prepared: a run stopped from here on can resume.
        folder = _open_run_folder(config, out, resume, dist, stack)
        stack.enter_context(resume_hint_on_stop(folder.out, enabled=folder.main))
        run = prepare_run(config, dist, inputs, lap=laps)
        training = _train(run, folder)
        laps("distill")
        if not folder.main:  # (dist) rank 0 exports, benchmarks and reports; this worker is done
            return None
        exported = _export(run, folder, training.student)
        quantized = _quantize(run, folder)
        laps("export+quantize")
        results = _bench(run, folder, exported, quantized, training.student)
        laps("bench")
        report = _assemble_report(run, folder, exported, quantized, training, results, laps.timings)
        _gate_and_write(report, run, folder, quantized)
    return report


class _Laps:
    """Seconds per stage for ``report.timings_s``: each call ends the lap the previous began."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._clock = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self._clock, 3)
        self._clock = now


# --- preparing a run: what distill and tune share ------------------------------------------------


@dataclass(frozen=True)
class RunInputs:
    """What a run reads before it builds anything: quick, so bad input fails before a run folder
    exists."""

    target: TargetProfile
    data: DataBundle  # as loaded; the teacher may still fit it to its inputs
    method: str  # resolved: kd for classification, embed for embeddings unless --method
    strategy: str  # resolved: offline, or blackbox for --teacher-onnx/--teacher-cmd


def read_inputs(config: DistillConfig) -> RunInputs:
    """Load ``config``'s target and data and resolve its method and strategy names."""
    target = load_target(config.target)
    data = load_data(
        config.data,
        seed=config.seed,
        test_data=config.test_data,
        val_data=config.val_data,
        label_column=config.label_column,
        image_size=config.image_size,
        data_workers=config.data_workers,
        normalize=config.normalize,
    )
    check_bundle(config.data or data.name, data)  # enough to split, two classes: for training
    method = config.method or {"classification": "kd", "embedding": "embed"}[config.task]
    tasks = get_method(method).tasks
    if config.task not in tasks:
        raise BadInputError(
            f"method {method!r} distils {' or '.join(tasks)} outputs, not --task {config.task}"
        )
    blackbox = bool(config.teacher_onnx or config.teacher_cmd)
    resolve_precision(config.precision, resolve_device(config.device))  # refused here, not later
    return RunInputs(target, data, method, resolve_strategy(config.strategy, blackbox))


@dataclass(frozen=True)
class PreparedRun:
    """Everything fixed before the student trains: the inputs, the teacher side (``teaching``:
    the teacher, its outputs, the data fitted to it) and the sized student's recipe."""

    config: DistillConfig
    target: TargetProfile
    method: str
    strategy: str
    teaching: Teaching
    sized_data: DataBundle  # the data with one output per class or embedding dimension
    sizing: SizingResult
    blackbox_result: ModelResult | None = None  # a command teacher: only its answers' accuracy
    dist: DistContext | None = None

    @property
    def data(self) -> DataBundle:
        return self.teaching.data

    def new_student(self) -> nn.Module:
        """The sized student, initialised from the current torch seed."""
        student = build_candidate(self.sizing.chosen, self.sized_data)
        return attach_normalization(student, self.sized_data.normalization)  # (x - mean) / std

    def seeded_student(self) -> tuple[nn.Module, dict[str, Any] | None]:
        """The student a run starts from, and how it was initialised from the teacher (None
        without ``--init-from-teacher``)."""
        import torch

        # The student's initial weights depend on the seed alone.
        torch.manual_seed(self.config.seed)
        student = self.new_student()
        if not self.config.init_from_teacher:
            return student, None
        from edgekd.students.teacher_init import init_from_teacher

        return student, init_from_teacher(student, self.teaching.model).to_dict()


def prepare_run(
    config: DistillConfig,
    dist: DistContext | None = None,
    inputs: RunInputs | None = None,
    lap: Callable[[str], None] | None = None,
) -> PreparedRun:
    """The teacher side of the run and the student sized to the target's budget.

    ``inputs``: from :func:`read_inputs` when the caller has read them already; ``lap(name)`` is
    called after the teacher and after sizing (the report's timings).

    >>> run = prepare_run(DistillConfig(data="digits"))  # doctest: +SKIP
    >>> run.sizing.chosen.label  # doctest: +SKIP
    'cnn width 2 depth 2'
    """
    inputs = inputs or read_inputs(config)
    request_train_threads(config.train_threads)  # before the default teacher trains
    lap = lap or (lambda name: None)
    blackbox_result = None
    if config.teacher_onnx or config.teacher_cmd:
        teaching, blackbox_result = _blackbox_teaching(config, inputs.data, inputs.target)
    else:
        teaching = prepare_teaching(config, inputs.data, dist)  # offline: outputs computed once
    lap("teacher")
    # Sizing builds heads with one output per class, or per embedding dimension.
    sized_data = dataclasses.replace(teaching.data, num_classes=teaching.num_outputs)
    # The teacher's structure and a short trial choose the family (edgekd.sizing.trial).
    args = (config, inputs.target, teaching, sized_data, inputs.method, inputs.strategy)
    sizing = choose_student(*args) if dist is None else dist.from_main(choose_student, *args)
    teaching, sized_data = as_student_sees(teaching, sized_data, sizing)
    lap("size")
    return PreparedRun(
        config,
        inputs.target,
        inputs.method,
        inputs.strategy,
        teaching,
        sized_data,
        sizing,
        blackbox_result,
        dist,
    )


def _blackbox_teaching(config, data, target) -> tuple[Teaching, ModelResult | None]:
    """A teacher reachable only through its answers (``--teacher-onnx`` / ``--teacher-cmd``): no
    module and no precomputed outputs; the blackbox strategy queries it itself."""
    info, blackbox_result = blackbox_teacher_report(
        config.teacher_onnx, config.teacher_cmd, data, target
    )
    teaching = Teaching(
        model=None,
        info={**info.to_dict(), "kind": "black box", "answers": config.blackbox_output},
        data=data,
        num_outputs=data.num_classes,
        params=info.params or UNKNOWN_TEACHER_PARAMS,
        train_outputs=None,
        val_outputs=None,
    )
    return teaching, blackbox_result


# --- the stages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFolder:
    """``OUT.partial/`` while the run is in progress (``edgekd.rundir``)."""

    out: Path  # where the finished run goes
    work: Path  # OUT.partial/, where every artifact is built
    resume: bool  # continuing an interrupted run
    main: bool  # (dist) only rank 0 touches the folder


def _open_run_folder(
    config: DistillConfig,
    out: Path,
    resume: bool,
    dist: DistContext | None,
    stack: contextlib.ExitStack,
) -> RunFolder:
    """Enter ``OUT.partial/`` (on rank 0; ``stack`` leaves it, renamed to ``OUT`` on success) and
    record the configuration a ``--resume`` starts from."""
    main = dist is None or dist.is_main
    work = on_main(dist, stack, lambda: run_dir(out, overwrite=config.overwrite, resume=resume))
    if not resume and main:
        write_json_atomic(work / CONFIG_FILE, {**dataclasses.asdict(config), "out": str(out)})
    return RunFolder(out, work, resume, main)


@dataclass(frozen=True)
class Training:
    """The training stage: the job that ran and what it produced."""

    job: DistillJob
    result: StrategyResult  # the trained student, its history, the strategy's notes
    init_summary: dict[str, Any] | None  # --init-from-teacher: which weights were copied
    seeds: dict[str, Any] | None  # --seeds N: every seed's test score
    device: dict[str, Any] | None = None  # where it ran (edgekd.train.device.describe_device)

    @property
    def student(self) -> nn.Module:
        return self.result.student

    def report_section(self, run: PreparedRun, resumed: bool) -> dict[str, Any]:
        config, history = run.config, self.result.history
        return {
            "method": run.method,
            "task": config.task,
            "temperature": config.temperature,
            "alpha": self.job.train.alpha,
            "epochs": self.job.train.epochs,
            **epochs_choice(config, self.job.options.augment, self.job.data.train.n),
            "lr": config.lr,
            "batch_size": config.batch_size,
            "seed": config.seed,
            "strategy": run.strategy,
            "strategy_info": self.result.info,
            "augment": self.job.options.augment,
            "patience": config.patience,
            "epochs_run": len(history.loss),
            "time_budget": config.time_budget,
            "time_budget_stop": history.stopped,  # None, or when and why it stopped
            "seeds": self.seeds,
            "finetune_epochs": config.finetune_epochs,
            "history": history.to_dict(),
            "trust_checkpoint": config.trust_checkpoint,
            "resumed": resumed,
            **_how_it_trained(config),
            **(self.device or {}),  # device, device_type, device_name, precision, peak memory
        }


def _how_it_trained(config: DistillConfig) -> dict[str, Any]:
    """The training's real torch threads and why (``edgekd.train.threads``) and the checkpoint
    interval: how the run trained, beside what it learnt."""
    choice = current_choice()
    return {
        "train_threads": config.train_threads,
        "threads": None if choice is None else choice.to_dict(),
        "checkpoint_every": config.checkpoint_every,
    }


def _train(run: PreparedRun, folder: RunFolder) -> Training:
    """Distil the sized student with the run's strategy: the offline strategy's one stage keeps
    its checkpoint in ``OUT.partial/checkpoint.pt``, the other strategies' stages one each in
    ``OUT.partial/stages``; then the other seeds (``--seeds``). Ctrl-C/SIGTERM end in
    :class:`Interrupted` with the resume command."""
    config, dist, candidate = run.config, run.dist, run.sizing.chosen
    student, init_summary = run.seeded_student()
    status(
        f"student: {candidate.label}, {candidate.params:,} parameters (teacher "
        f"{run.teaching.params:,}), est. {candidate.latency_estimate_ms:.3f} ms on "
        f"{run.target.device.name} (estimate)"
    )
    tried = run.sizing.trial.augment if run.sizing.trial else None  # the trial's level
    job_config = config if tried is None else dataclasses.replace(config, augment=tried)
    job, augment_why = make_job(job_config, run.teaching, student, run.strategy, run.method, dist)
    augment_why = augment_why if tried is None else f"{tried} ({run.sizing.trial.augment_why})"
    stages = dataclasses.replace(job, checkpoints=folder.work / STAGES_DIR, resume=folder.resume)
    device = training_device(config.device, dist)
    reset_peak_memory(device)
    try:
        trained = run_strategy(run.strategy, stages)
    except (Interrupted, KeyboardInterrupt) as exc:
        raise Interrupted(
            f"{str(exc) or 'interrupted'}; resume with: edgekd distill --resume {folder.out}"
        ) from None
    trained.info["augment_level"] = augment_why
    seeds = None
    if config.seeds > 1:
        seeds = repeat_seeds(config, job, run.strategy, run.new_student, trained.student)
    used = describe_device(device, resolve_precision(config.precision, device))
    return Training(job, trained, init_summary, seeds, used)


@dataclass(frozen=True)
class Exported:
    """The ONNX files written (``export_onnx(...).to_dict()`` by model: teacher, student)."""

    files: dict[str, dict[str, Any]]
    warnings: tuple[str, ...]  # a user's teacher that could not be exported

    def report_section(self) -> dict[str, Any]:
        return {k: {**v, "path": Path(v["path"]).name} for k, v in self.files.items()}


def _export(run: PreparedRun, folder: RunFolder, student: nn.Module) -> Exported:
    """Save the student (and our own teacher) as safetensors and export both to ONNX, each
    checked for parity with PyTorch on the test inputs. A user's teacher that does not export is
    benchmarked in PyTorch instead."""
    work, teacher, user_teacher = folder.work, run.teaching.model, run.teaching.loaded
    save_model(student, work / "student.safetensors")
    if user_teacher is None and teacher is not None:
        save_model(teacher, work / "teacher.safetensors")
    elif run.config.teacher_onnx:  # a black box: benchmark its file as given
        shutil.copyfile(run.config.teacher_onnx, work / "teacher.onnx")
    # A user's teacher that is an ONNX file is benchmarked as given, not exported again.
    given_as_onnx = user_teacher is not None and user_teacher.onnx_path is not None
    export_teacher = teacher is not None and not given_as_onnx
    files, warnings = {}, []
    for name, model in [*([("teacher", teacher)] * export_teacher), ("student", student)]:
        try:
            files[name] = export_onnx(
                model,
                work / f"{name}.onnx",
                run.data.example_inputs(1),
                run.target.opset,
                parity_inputs=run.data.test_inputs(),
            ).to_dict()
        except EdgekdError as exc:
            if user_teacher is None or name != "teacher":
                raise
            warnings.append(f"teacher not exported to ONNX, benchmarked in PyTorch: {exc}")
    return Exported(files, tuple(warnings))


@dataclass(frozen=True)
class Quantized:
    """The quantization stage: for classification every mode the target allows, measured
    (``selection``), and the one variant kept to benchmark; for embeddings one int8 file."""

    selection: QuantSelection | None
    variant_to_bench: Variant | None
    files: tuple[tuple[str, str], ...]  # (model name, precision): student-int8.onnx, ...

    def report_section(self) -> dict[str, Any] | None:
        """report.export["quantization"] (None for embeddings): paths as file names in the run
        folder, "" for the variants measured but not kept."""
        if self.selection is None:
            return None
        section, kept = self.selection.to_dict(), self.variant_to_bench
        section["fp32"]["path"] = "student.onnx"
        for v in section["variants"]:
            v["path"] = f"student-{v['name']}.onnx" if kept and v["name"] == kept.name else ""
        return section


def _quantize(run: PreparedRun, folder: RunFolder) -> Quantized:
    """The int8 variants of ``student.onnx``: for classification the target's modes measured and
    one kept, for embeddings one static int8 file."""
    work, data = folder.work, run.data
    if run.config.task != "classification":
        # Embeddings: argmax agreement means nothing for vectors, so the accuracy-aware
        # selection does not apply; one static int8 variant is judged on cosine similarity.
        quantize(
            work / "student.onnx", Int8StaticConfig(), work / "student-int8.onnx", data.train.inputs
        )
        return Quantized(None, None, (("student-int8", "int8"),))
    # Every quantization mode the target allows, measured; the fastest within the accuracy
    # budget (versus the fp32 student) is chosen. The run folder keeps the chosen variant, or
    # when fp32 wins, the best quantized one so the report shows why.
    with tempfile.TemporaryDirectory() as variants_dir:
        search = QuantSearch.timed_like_bench(run.config.bench_seconds)
        selection = select_quantization(
            work / "student.onnx",
            run.target,
            data.train.inputs,
            eval_rows(data.val),
            variants_dir,
            None,
            search,
        )
        kept = variant_to_bench(selection)
        if kept is not None:
            # Named by precision (student-int8.onnx) so tables stay readable; the full variant
            # name (e.g. int8-qoperator-perchannel-minmax) is in report.student.
            shutil.copyfile(kept.path, work / f"student-{kept.precision}.onnx")
    files = () if kept is None else ((f"student-{kept.precision}", kept.precision),)
    return Quantized(selection, kept, files)


def _bench(
    run: PreparedRun,
    folder: RunFolder,
    exported: Exported,
    quantized: Quantized,
    student: nn.Module,
) -> list[ModelResult]:
    """Every teacher and student file, measured on the target's threads and batch size."""
    n_student = count_params(student)
    refs = _teacher_refs(run.teaching, folder.work, "teacher" in exported.files)
    students = [("student-onnx", "student.onnx", "fp32")]
    students += [(name, f"{name}.onnx", precision) for name, precision in quantized.files]
    refs += [
        ModelRef(name, str(folder.work / file), "ort_cpu", precision, "student", n_student)
        for name, file, precision in students
    ]
    if run.config.task == "classification" and run.teaching.loaded is None:
        return _bench_interleaved(run, refs)
    return _bench_in_process(run, refs)


def _bench_interleaved(run: PreparedRun, refs: list[ModelRef]) -> list[ModelResult]:
    """Interleaved fresh processes per model; fidelity against the torch teacher."""
    config, target = run.config, run.target
    settings = BenchSettings(
        processes=config.bench_processes,
        seconds_per_process=config.bench_seconds / config.bench_processes,
    )
    reference = next((r.name for r in refs if r.role == "teacher"), None)
    results, _ = measure_models(
        refs, run.data.test, target.threads, target.batch_size, settings, reference=reference
    )
    return [_with_latency_estimate(r, target) for r in results]


def _bench_in_process(run: PreparedRun, refs: list[ModelRef]) -> list[ModelResult]:
    """Embeddings and users' own teachers are measured in this process, one model at a time: a
    fresh process could rebuild a user's teacher only by running their code again."""
    config, target, teaching = run.config, run.target, run.teaching
    user_teacher = teaching.loaded
    teacher_logits = teaching.test_outputs
    in_process = {"teacher-torch": teaching.model} if user_teacher is not None else {}
    results = []
    for ref in refs:
        status(f"benchmarking {ref.name} ({ref.runtime})")
        result, logits = bench_model_in_process(
            ref,
            run.data.test,
            target.threads,
            target.batch_size,
            teacher_logits,
            config.bench_seconds,
            task=config.task,
            model=in_process.get(ref.name),
        )
        if ref.name == "teacher-torch":
            teacher_logits = logits if teacher_logits is None else teacher_logits
            result = _with_self_agreement(result)
            if user_teacher is not None:
                result = dataclasses.replace(result, size_bytes=_param_bytes(teaching.model))
        results.append(_with_latency_estimate(result, target))
    return results


def _assemble_report(
    run: PreparedRun,
    folder: RunFolder,
    exported: Exported,
    quantized: Quantized,
    training: Training,
    results: list[ModelResult],
    timings: dict[str, float],
) -> Report:
    """The report from the stage results (the gate's verdict is added by ``_gate_and_write``)."""
    if run.blackbox_result is not None:  # a command teacher: only its answers' accuracy is known
        results = [*results, run.blackbox_result]
    chosen, why, choice_warnings = _choose_student(run, results, quantized)
    student = _student_section(run, training, quantized, why)
    selection = quantized.selection
    if selection is not None and selection.chosen != "fp32" and chosen.name == "student-onnx":
        # the benchmark overruled the search (_choose_student): fp32 ships
        student.update(chosen_variant="fp32", benchmark_overruled=selection.chosen)
    notes = [f"{r.name}: {n}" for r in results for n in r.notes]
    return Report(
        target=run.target.to_dict(),
        host={**host_info(), "threads": thread_settings(run.target.threads)},
        models=_with_final_paths(results, folder.work, folder.out),
        chosen=chosen.name,
        data=_data_section(run),
        teacher=run.teaching.info,
        student=student,
        training=training.report_section(run, folder.resume),
        export=exported.report_section(),
        warnings=[*run.teaching.warnings, *exported.warnings, *choice_warnings, *notes]
        + check_versions(),
        timings_s=timings,
        out_dir=str(folder.out),
    )


def _choose_student(
    run: PreparedRun, results: list[ModelResult], quantized: Quantized
) -> tuple[ModelResult, str, list[str]]:
    """The student variant the run delivers, why, and the selection's warnings."""
    names = {r.name: r for r in results}
    selection, kept = quantized.selection, quantized.variant_to_bench
    if selection is not None:
        fp32_chosen = selection.chosen == "fp32" or kept is None
        chosen = names["student-onnx" if fp32_chosen else f"student-{kept.precision}"]
        fp32 = names["student-onnx"]
        # The benchmark, at the target's threads, has the last word: never ship a variant that
        # measured slower than fp32 in this very run.
        overruled = (
            None
            if fp32_chosen
            else slower_than_fp32(selection.chosen, chosen.latency_ms, fp32.latency_ms)
        )
        if overruled:
            return fp32, overruled, [*selection.warnings, overruled]
        return chosen, selection.reason, list(selection.warnings)
    teacher_result = names.get("teacher-onnx") or names["teacher-torch"]  # as deployed
    students = [r for r in results if r.role == "student"]
    chosen, why = choose_within_drop(students, teacher_result, run.target.budget.accuracy_drop)
    return chosen, why, []


def _data_section(run: PreparedRun) -> dict[str, Any]:
    data, config = run.data, run.config
    return {
        "name": data.name,
        "split_note": data.split_note,
        "train": data.train.n,
        "val": data.val.n,
        "test": data.test.n,
        "input_kind": data.input_kind,
        "inputs": {
            k: describe(str(v.dtype), v.shape[1:]) for k, v in data.example_inputs(1).items()
        },
        "labels": data.train.y is not None,
        "sources": {"train": config.data, "val": config.val_data, "test": config.test_data},
        "image_transform": describe_transform(config.image_size),
        # (x - mean) / std run by the student, first ops of its ONNX; None: none
        "normalization": None if data.normalization is None else data.normalization.to_dict(),
    }


def _student_section(
    run: PreparedRun, training: Training, quantized: Quantized, why: str
) -> dict[str, Any]:
    candidate, selection, kept = run.sizing.chosen, quantized.selection, quantized.variant_to_bench
    return {
        "family": candidate.family,
        "width": candidate.width,
        "depth": candidate.depth,
        "params": candidate.params,
        "latency_estimate_ms": candidate.latency_estimate_ms,
        "latency_estimate_label": "estimate",
        "init_from_teacher": training.init_summary,
        "sizing": run.sizing.to_dict(),
        "chosen_variant": None if selection is None else selection.chosen,
        "quantized_variant_shown": None if kept is None else kept.name,
        "chosen_variant_reason": why,
        "benchmark_overruled": None,  # the search's choice when this run's benchmark overruled it
        "test_fingerprint": run.data.test.fingerprint(),
    }


def _gate_and_write(
    report: Report, run: PreparedRun, folder: RunFolder, quantized: Quantized
) -> None:
    """The run ends with the gate on the chosen student (the CI step is `edgekd gate`); then the
    charts, report.json and report.md."""
    verdict = gate(report, run.target)
    report.budget = [line.to_budget_line() for line in verdict.lines]
    report.gate = verdict.to_dict()
    quantization = quantized.report_section()
    if quantization is not None:
        report.export["quantization"] = quantization
    report.charts = write_charts(report, folder.work)
    write_json_atomic(folder.work / "report.json", report.to_dict())
    write_text_atomic(folder.work / "report.md", to_markdown(report))


def _with_latency_estimate(result: ModelResult, target: TargetProfile) -> ModelResult:
    """Add the roofline estimate for the target device (an estimate, never a measurement) to an
    ONNX model's result, from its own graph: the int8 variants are estimated as quantized."""
    from edgekd.sizing.onnx_cost import analyze_onnx
    from edgekd.sizing.roofline import estimate_latency

    if result.format != "onnx":
        return result
    cost = analyze_onnx(result.path, batch_size=result.batch_size)
    estimate = estimate_latency(cost, target.device).total_ms
    return dataclasses.replace(result, latency_estimate_ms=estimate)


def _with_self_agreement(result: ModelResult) -> ModelResult:
    """The teacher against itself: agreement 1, KL 0."""
    kl = None if result.kl_to_teacher is None else 0.0  # embeddings have no KL
    return dataclasses.replace(result, agreement_with_teacher=1.0, kl_to_teacher=kl)


def _with_final_paths(results: list[ModelResult], work: Path, out: Path) -> list[ModelResult]:
    """Files built in the run folder move with it (``OUT.partial`` -> ``OUT``); a user's own
    teacher file stays where it is."""
    return [
        dataclasses.replace(r, path=str(out / Path(r.path).name))
        if Path(r.path).parent == work
        else r
        for r in results
    ]


def _teacher_refs(teaching: Teaching, work: Path, exported: bool) -> list[ModelRef]:
    """teacher-torch (PyTorch eager) and teacher-onnx (ONNX Runtime), as far as each exists."""
    user_teacher = teaching.loaded
    params = teaching.params
    if teaching.model is None:  # a black box: its ONNX file if it has one, else nothing to run
        path = work / "teacher.onnx"
        return [ModelRef("teacher-onnx", str(path), "ort_cpu", "fp32", "teacher", params)] * int(
            path.is_file()
        )
    refs = []
    torch_path = str(work / "teacher.safetensors") if user_teacher is None else None
    if user_teacher is not None and user_teacher.kind != "onnx":
        # Run in this process: a user's code cannot be rebuilt in a fresh one without running it.
        torch_path = user_teacher.weights or user_teacher.source
    if torch_path is not None:
        refs.append(ModelRef("teacher-torch", torch_path, "torch_cpu", "fp32", "teacher", params))
    onnx_path = user_teacher.onnx_path if user_teacher is not None else None
    if onnx_path or exported:
        path = onnx_path or str(work / "teacher.onnx")
        refs.append(ModelRef("teacher-onnx", path, "ort_cpu", "fp32", "teacher", params))
    return refs


def _param_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def variant_to_bench(selection: QuantSelection) -> Variant | None:
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


def choose_within_drop(
    students: list[ModelResult], teacher: ModelResult, allowed_drop: float
) -> tuple[ModelResult, str]:
    """The fastest student variant (p50) within the allowed accuracy drop of the teacher (the
    embedding path; classification uses ``edgekd.quantize.select``'s measured choice)."""

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
