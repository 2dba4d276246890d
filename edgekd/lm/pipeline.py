"""``edgekd distill --task causal-lm``: teacher -> text blocks -> top-k cache -> sized student ->
trained -> ONNX with a KV cache -> quantized variants -> bench -> report and verdict.

The story in stage steps, each a short function over the stages' own modules: :func:`_inputs`
(target, teacher, text), :func:`_teaching` (the teacher's top-k, live module or sequences, as
the method needs), :func:`_size` (``edgekd.lm.sizing``), :func:`_train` (``edgekd.lm.train``),
:func:`_export_and_quantize` (``edgekd.lm.export``, ``edgekd.lm.quantize``), :func:`_bench`
(``edgekd.lm.bench``) and :func:`_write`. The run folder is the classifier's (``edgekd.rundir``):
built in ``OUT.partial/`` (locked, with ``config.json``) and renamed into place when everything
succeeded, so a parity failure (exit 6) or bad input leaves nothing behind, while a run stopped by
Ctrl-C/SIGTERM (exit 130) or a crash keeps it: training saves its state there on the
``--checkpoint-every`` clock (``edgekd.train.resume``), and ``edgekd distill --resume OUT``
continues it to bit-identical weights (the teacher's top-k is read back from its cache).

Options shared with classifier runs keep one name; where a classifier default would be wrong for
a language model (``--lr`` 1e-2, ``--batch-size`` 64, ``--temperature`` 4) an option left unset
takes the causal-LM default (``edgekd.config.TASK_DEFAULTS``), an explicit value always wins, and
the report records each value and where it came from (``settings_sources``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.config import DistillConfig, task_defaults
from edgekd.distill.methods import get_method, make_method
from edgekd.errors import BadInputError
from edgekd.fileio import write_json_atomic, write_text_atomic
from edgekd.hostinfo import host_info
from edgekd.lm.data import TokenBlocks, load_blocks
from edgekd.lm.teacher import LMTeacher, load_lm_teacher
from edgekd.progress import status
from edgekd.report.lm import continuation_texts, lm_markdown
from edgekd.rundir import CHECKPOINT_FILE, CONFIG_FILE, resume_hint_on_stop, run_dir
from edgekd.targets import TargetProfile, load_target
from edgekd.train.interrupt import raise_on_signals

DEFAULT_METHOD = "fkl"
# 300 left the default student 36% above the teacher's perplexity (mobile allows 30%); 600
# reached 54.2 against the teacher's 58.5 for 45 s more on 2 cores (2026-12-02, load 1).
DEFAULT_STEPS = 600
DEFAULT_CONTEXT = 128
# The causal-LM defaults of the options classifier runs share (why: edgekd.config.TASK_DEFAULTS).
LM_DEFAULTS = task_defaults("causal-lm")
# A student at most half the teacher's size: distillation compresses, and training cost grows
# with the student (the default run's student was the teacher's size, 1.3M, before this cap:
# 730 s of its 1,190 s at load 12-14).
STUDENT_SHARE = 2
SIZING_FILE = "lm_sizing.json"  # the chosen student, read back by --resume
PROMPTS = 4  # prompts continued side by side in report.md (and checked by the export's parity)
PROMPT_TOKENS = 16
NEW_TOKENS = 16
# Enough samples that the gate can bound a p95 from above at 95% (72 at least, edgekd.gate.lines.
# judge_p95): 5 runs x 15 decode steps and 5 x 24 prefills. With 3 x 15 and 3 x 4 a fresh run's
# latency lines could FAIL but never PASS on what it stored.
BENCH_RUNS, BENCH_PREFILLS = 5, 24
# The teacher's rows are context, not judged by the gate: 3 runs x 4 prefills keep its latency
# figures (12 prefills, 45 decode steps). It saves little at full scale (a 135M teacher, in
# PyTorch and in ONNX): the bench took 270-275 s against 283 s with every row at 5 x 24; most of
# it is the teacher's perplexity pass and its greedy continuations.
TEACHER_ROWS = ("teacher", "teacher-onnx")
TEACHER_RUNS, TEACHER_PREFILLS = 3, 4


@dataclass(frozen=True)
class LMRun:
    """What the stages share: the resolved settings, the target, the teacher and the text."""

    config: DistillConfig
    target: TargetProfile
    teacher: LMTeacher
    train: TokenBlocks
    val: TokenBlocks
    test: TokenBlocks
    method: str
    alpha: float
    settings: dict[str, Any]  # lr, batch_size, temperature, steps, context after LM_DEFAULTS
    vocab: Any = None  # edgekd.lm.vocab.VocabMap with --prune-vocab

    def training_space(self):
        """(train blocks, val blocks, teacher module) in the ids the student trains on: the
        original ones, or with --prune-vocab the kept tokens' (edgekd.lm.vocab)."""
        if self.vocab is None:
            return self.train.blocks, self.val.blocks, self.teacher.module
        from edgekd.lm.vocab import PrunedTeacher

        teacher = PrunedTeacher(self.teacher.module, self.vocab)
        to = self.vocab.to_pruned
        return to(self.train.blocks), to(self.val.blocks), teacher

    @property
    def prompts(self) -> list[list[int]]:
        rows = self.test.blocks[:PROMPTS, : min(PROMPT_TOKENS, self.test.context)]
        return [list(map(int, r)) for r in rows]


def distill_lm(config: DistillConfig, resume: bool = False) -> dict[str, Any]:
    """Run the causal-LM pipeline and return the report (also written to ``config.out``);
    ``resume=True`` continues the interrupted run in ``config.out``.

    >>> report = distill_lm(DistillConfig(task="causal-lm", target="mobile"))  # doctest: +SKIP
    >>> report["verdict"]  # doctest: +SKIP
    'pass'
    """
    laps: dict[str, float] = {}
    clock = time.perf_counter()
    run = _inputs(config)
    out = Path(config.out or f"runs/{run.target.name}-lm-{time.strftime('%Y%m%d-%H%M%S')}")
    with (
        raise_on_signals(),  # SIGTERM as Ctrl-C: the folder is kept for --resume
        run_dir(out, overwrite=config.overwrite, resume=resume) as work,
        resume_hint_on_stop(out),
    ):
        if not resume:
            write_json_atomic(work / CONFIG_FILE, {**config.as_given(), "out": str(out)})
        teaching = _teaching(run)
        sizing = _size(run, time.perf_counter() - clock, work, resume, teaching)
        laps["teacher+size"], clock = time.perf_counter() - clock, time.perf_counter()
        student, history, init = _train(run, sizing, teaching, work / CHECKPOINT_FILE, resume)
        laps["distill"], clock = time.perf_counter() - clock, time.perf_counter()
        exported, selection = _export_and_quantize(run, student, work)
        laps["export+quantize"], clock = time.perf_counter() - clock, time.perf_counter()
        rows, teacher_onnx = _bench(run, selection)
        laps["bench"] = time.perf_counter() - clock
        report = _report(run, sizing, history, exported, selection, rows, laps, out)
        report["resumed"] = resume  # and the teacher's top-k: "cache hit" on a resumed run
        report["teacher_top_k"] = None if teaching.top_k is None else teaching.top_k.source
        report["init_from_teacher"] = init  # which teacher layers the student started from
        report["teacher"]["onnx"] = teacher_onnx.to_dict()
        report = json.loads(json.dumps(report, default=plain).replace(str(work), str(out)))
        _write(report, run, rows, work)
    return report


# --- inputs ---------------------------------------------------------------------------------------


def _inputs(config: DistillConfig) -> LMRun:
    """Target, method, teacher and text, checked before anything is trained."""
    target = load_target(config.target)
    method = config.method or DEFAULT_METHOD
    if "causal-lm" not in get_method(method).tasks:
        raise BadInputError(
            f"method {method!r} distils {' or '.join(get_method(method).tasks)} outputs, not "
            f"--task causal-lm (use fkl, rkl, gkd or seqkd)"
        )
    alpha = get_method(method).default_alpha if config.alpha is None else config.alpha
    method_options(config, method)  # refuses a method's knob given to another method
    settings = lm_settings(config, LM_DEFAULTS)
    teacher = _teacher(config)
    if config.init_from_teacher:  # a teacher the student cannot start from: said before any work
        from edgekd.lm.init import teacher_shape

        teacher_shape(teacher)
    context = _context(config, target, teacher)
    settings.update(steps=config.steps or DEFAULT_STEPS, context=context)
    train, val, test = _text(config, teacher, context)
    vocab = None
    if config.prune_vocab:
        from edgekd.lm.vocab import VocabMap

        blocks = (train.blocks, val.blocks, test.blocks)
        vocab = VocabMap.from_blocks(blocks, teacher.output_size, teacher.tokenizer.eos_id)
        status(f"--prune-vocab: {vocab.size} of {teacher.output_size} tokens used by the text")
    return LMRun(config, target, teacher, train, val, test, method, alpha, settings, vocab)


def lm_settings(config: DistillConfig, replacements: dict[str, Any]) -> dict[str, Any]:
    """``replacements``' values for the options ``config`` left unset (it took a task default
    for them), the user's own values for the others: an explicit value always wins."""
    given = config.setting_sources()
    return {
        k: (getattr(config, k) if given.get(k, "given") == "given" else v)
        for k, v in replacements.items()
    }


def method_options(config: DistillConfig, method: str) -> dict[str, Any]:
    """The run options ``method`` reads (its ``run_options``: field -> argument) that ``config``
    sets; a knob of another method (``--gkd-beta`` with fkl) is refused in one line."""
    from edgekd.distill.methods import all_methods

    own = getattr(get_method(method), "run_options", {})
    for name, cls in all_methods().items():
        for field in getattr(cls, "run_options", {}):
            if field not in own and getattr(config, field, None) is not None:
                flag = "--" + field.replace("_", "-")
                raise BadInputError(f"{flag} is a knob of --method {name}, not of {method}")
    return {arg: getattr(config, f) for f, arg in own.items() if getattr(config, f) is not None}


def _teacher(config: DistillConfig) -> LMTeacher:
    if config.teacher is None:
        from edgekd.lm.default import default_lm_teacher

        return default_lm_teacher(config.seed)
    return load_lm_teacher(config.teacher, config.tokenizer, config.trust_checkpoint)


def _context(config: DistillConfig, target: TargetProfile, teacher: LMTeacher) -> int:
    """--context, else the target's context_tokens, else 128; at most the teacher's positions."""
    hf = teacher.hf_config or {}
    most = hf.get("max_position_embeddings") or hf.get("n_positions")
    context = config.context or target.lm.context_tokens or DEFAULT_CONTEXT
    if most and context > most:
        if config.context:
            raise BadInputError(
                f"--context {context}: the teacher reads at most {most} positions"
            )
        context = int(most)
    return int(context)


def _text(config: DistillConfig, teacher: LMTeacher, context: int):
    """(train, val, test) blocks: the default text, or --data with --val-data/--test-data or
    split off its last blocks (a tenth each)."""
    if config.data is None:
        if config.teacher is not None:
            raise BadInputError("--task causal-lm with --teacher needs --data (text to distil on)")
        from edgekd.lm.default import default_blocks

        return default_blocks(teacher.tokenizer, context)

    def load(path: str) -> TokenBlocks:
        return load_blocks(path, teacher.tokenizer, context, teacher.output_size)

    train = load(config.data)
    test = load(config.test_data) if config.test_data else None
    val = load(config.val_data) if config.val_data else None
    n = len(train)
    cut = max(1, n // 10)
    if test is None:
        if n < 3:
            raise BadInputError(f"{config.data}: {n} blocks, too few to split off a test set; "
                                "give more text, a smaller --context, or --test-data")
        test, train = _slice(train, n - cut, n), _slice(train, 0, n - cut)
    if val is None:
        n = len(train)
        val = _slice(train, n - max(1, n // 10), n) if n >= 2 else test
        train = _slice(train, 0, n - max(1, n // 10)) if n >= 2 else train
    return train, val, test


def _slice(blocks: TokenBlocks, start: int, stop: int) -> TokenBlocks:
    return dataclasses.replace(blocks, blocks=blocks.blocks[start:stop])


# --- teaching, sizing, training -------------------------------------------------------------------


def _teaching(run: LMRun):
    """What the method needs of the teacher: the top-k over the training blocks (cached), the
    live module (on-policy steps), or its greedy continuations (seqkd); nothing for alpha 1."""
    from edgekd.lm.train import TeacherSide

    cls = get_method(run.method)
    if run.alpha >= 1.0:
        return TeacherSide()
    from edgekd.train.device import training_device

    train, _, teacher = run.training_space()
    device = training_device(run.config.device)  # the teacher's one pass runs where training does
    if getattr(cls, "teacher_sequences", False):
        from edgekd.lm.sample import teacher_sequences

        return TeacherSide(sequences=teacher_sequences(teacher, train, device=str(device)))
    from edgekd.lm.topk import teacher_top_k

    top = teacher_top_k(teacher, train, k=run.config.top_k, device=device)
    status(f"teacher top-{top.k} over {len(run.train)} blocks: {top.source} ({top.precision})")
    return TeacherSide(top_k=top, live=teacher)


def _size(run: LMRun, spent_s: float, work: Path, resume: bool, teaching):
    """The student: the largest that fits the target's ``[lm]`` lines, half the teacher and
    what training affords (``edgekd.lm.affordable``), checked on its own training steps. Kept in
    the run folder, so that a resumed run trains the same student whatever the host measures
    now."""
    from edgekd.lm.sizing import size_lm_student

    saved = work / SIZING_FILE
    if resume and saved.is_file():
        chosen = json.loads(saved.read_text())
        run.settings["steps"] = chosen.get("steps", run.settings["steps"])
        return _saved_sizing(run, chosen)
    vocab_size = run.vocab.size if run.vocab else run.teacher.output_size
    if run.config.init_from_teacher:  # the teacher's width: only the depth is chosen
        from edgekd.lm.init import size_from_teacher, teacher_shape

        shape = teacher_shape(run.teacher)

        def size(cap):
            return size_from_teacher(shape, run.target.lm, run.target.device, vocab_size,
                                     run.settings["context"], STUDENT_SHARE, training=cap)
    else:

        def size(cap):
            return size_lm_student(
                run.target.lm, run.target.device, vocab_size=vocab_size,
                context=run.settings["context"], max_params=run.teacher.params // STUDENT_SHARE,
                training=cap,
            )  # fmt: skip

    cap = _training_cap(run, spent_s, vocab_size)
    sizing = size(cap)
    if cap is not None:
        sizing, cap = _calibrated(run, sizing, cap, size, teaching)
    if (sizing.limits or {}).get("over_budget") and run.config.steps is None:
        sizing = _fewer_steps(run, sizing, cap)
    status(sizing.reason)
    write_json_atomic(saved, {"config": sizing.config.to_dict(), "reason": sizing.reason,
                              "limits": sizing.limits, "steps": run.settings["steps"]})  # fmt: skip
    return sizing


CALIBRATION_STEPS = 2  # timed, after a warm-up step
CALIBRATION_ROUNDS = 2


def _calibrated(run: LMRun, sizing, cap, size, teaching):
    """The chosen student's own training steps timed (``edgekd.lm.train.time_training_steps``);
    when they run slower than estimated, the throughput is scaled to what they took and the
    student sized again (at most twice). The student timed last, when still the choice, then
    settles its own training: the cap is calibrated on its steps whichever way the estimate
    erred, and admits no larger student (``TrainingCap.vouched_by``), so its steps, or fewer
    (``_fewer_steps``), are fitted to what it measured. Even 5% matters: the scale run's steps
    at 3.24 s against 3.06 s estimated would have ended 46 s past its 40 minutes. The probe that
    measured the throughput is a 4-layer, 192-wide model at a 128-token context; FLOPs and
    logits do not count all a student's attention costs over a longer context, its norms or its
    optimizer step: at 512 tokens a dim-96, 6-layer student's steps took 1.31 times the
    estimate, a dim-64, 12-layer one's 1.70 times, and the scale fitted to that one made the
    2-layer student's estimate 1.9 times what its steps took (which, before this last
    calibration, cut its training to 395 steps it then ran in about half the budget). The time
    spent timing comes off the default budget (an explicit ``--time-budget`` is training's own)."""
    start, rounds, timed = time.perf_counter(), [], []
    for _ in range(CALIBRATION_ROUNDS):
        measured = _step_seconds(run, sizing.config, teaching)
        estimated = cap.step_seconds(sizing.config)
        timed.append((sizing.config, measured))
        rounds.append({"params": sizing.config.param_count(), "dim": sizing.config.dim,
                       "layers": sizing.config.n_layers, "estimated_step_s": round(estimated, 3),
                       "measured_step_s": round(measured, 3)})  # fmt: skip
        if measured <= estimated:  # the estimate holds, or errs towards a shorter run
            break
        cap = cap.calibrated(sizing.config, measured)
        before, sizing = sizing.config, size(cap)
        if sizing.config == before:  # the same student: fewer steps, if any, come next
            break
    took = time.perf_counter() - start
    if run.config.time_budget is None:
        from edgekd.lm.affordable import MIN_TRAINING_S, TrainingBudget

        budget = TrainingBudget(max(MIN_TRAINING_S, cap.budget.seconds - took),
                                f"{cap.budget.why}, less {took:.0f} s timing the student's steps")
        cap = dataclasses.replace(cap, budget=budget)
    last, measured = timed[-1]
    if last == sizing.config:  # still the choice: its own steps decide its training
        cap = cap.vouched_by(last, measured)
    sizing = size(cap)
    status("training steps timed: " + "; ".join(
        f"{r['params']:,} params {r['measured_step_s']:.2f} s a step against "
        f"{r['estimated_step_s']:.2f} s estimated" for r in rounds))  # fmt: skip
    limits = {**(sizing.limits or {}), "calibration": rounds}
    if "training" in limits:
        limits["training"] = cap.to_dict(sizing.config)
    return dataclasses.replace(sizing, limits=limits), cap


def _step_seconds(run: LMRun, config, teaching) -> float:
    """Seconds of one training step of a student of ``config``, timed on this run's blocks."""
    from edgekd.lm.student import LMStudent
    from edgekd.lm.train import time_training_steps

    student = LMStudent(dataclasses.replace(config, context=max(config.context,
                                                               run.settings["context"])))
    train, _, _ = run.training_space()
    return time_training_steps(student, train, _train_config(run), _method(run), teaching,
                               steps=CALIBRATION_STEPS)  # fmt: skip


def _fewer_steps(run: LMRun, sizing, cap):
    """Even the smallest student's default steps are over the training budget: as many steps
    as it affords (the learning-rate schedule then spans them, which stopping early on the
    clock would not). An explicit ``--steps`` is kept; ``--time-budget`` then stops training."""
    steps = min(run.settings["steps"], cap.steps_within(sizing.config))
    run.settings["steps"] = steps  # the report's settings record it
    fitted = dataclasses.replace(cap, steps=steps)
    limits = {**sizing.limits, "training": fitted.to_dict(sizing.config), "steps_fitted": steps}
    reason = (f"{sizing.reason}; so {steps} steps instead of {cap.steps} (--steps keeps a "
              "number of your own)")  # fmt: skip
    return dataclasses.replace(sizing, reason=reason, limits=limits)


def _training_cap(run: LMRun, spent_s: float, vocab_size: int):
    """What training affords this run: ``--time-budget`` or the default share of the run's
    budget, at this host's measured throughput (None on a GPU without ``--time-budget``)."""
    from edgekd.lm.affordable import training_cap

    context = run.settings["context"]  # the training blocks', not the device's
    tokens = min(run.settings["batch_size"], len(run.train)) * context
    return training_cap(run.config.time_budget, run.config.device, run.config.precision,
                        spent_s, run.settings["steps"], tokens, context, vocab_size)  # fmt: skip


def _saved_sizing(run: LMRun, saved: dict):
    """The sizing an interrupted run chose, its estimates computed again (they are pure)."""
    from edgekd.lm.sizing import size_lm_student
    from edgekd.lm.student import LMStudentConfig

    config = LMStudentConfig.from_dict(saved["config"], where=SIZING_FILE)
    again = size_lm_student(run.target.lm, run.target.device, config.vocab_size, config.context,
                            grid=[config])  # fmt: skip
    return dataclasses.replace(again, reason=saved["reason"], limits=saved["limits"])


def _train(run: LMRun, sizing, teaching, checkpoint: Path, resume: bool):
    """The sized student trained; its state saved to ``checkpoint`` on the clock and when
    stopped, and read back from it when ``resume`` finds one (stopped before training: none)."""
    import torch

    from edgekd.lm.student import LMStudent
    from edgekd.lm.train import train_lm

    config = run.config
    torch.manual_seed(config.seed)
    student_config = dataclasses.replace(
        sizing.config, context=max(sizing.config.context, run.settings["context"])
    )
    student = LMStudent(student_config)
    init = None
    if config.init_from_teacher:
        from edgekd.lm.init import init_from_teacher

        init = init_from_teacher(student, run.teacher, run.vocab)
        status(f"student initialised from the teacher: layers {init['kept_layers']} of "
               f"{init['teacher_layers']}")  # fmt: skip
    method = _method(run)
    train_config = _train_config(run, sizing)
    train, val, _ = run.training_space()
    history = train_lm(student, train, val, train_config, method, teaching, checkpoint=checkpoint,
                       resume=resume and checkpoint.is_file())  # fmt: skip
    return student.cpu().eval(), history, init


def _train_config(run: LMRun, sizing=None):
    """Training's settings. The time budget: ``--time-budget``; else, when the steps are the
    run's own (no ``--steps``), the training budget sizing chose the student for, so that the
    default run keeps to its 40 minutes on a host slower than measured (training stops at the
    first step past it, evaluates and keeps the best step); else none."""
    from edgekd.lm.train import LMTrainConfig

    config = run.config
    budget = config.time_budget
    if budget is None and config.steps is None and sizing is not None:
        budget = ((sizing.limits or {}).get("training") or {}).get("budget_s")
    return LMTrainConfig(
        steps=run.settings["steps"], lr=run.settings["lr"],
        batch_size=run.settings["batch_size"], alpha=run.alpha, seed=config.seed,
        device=config.device, precision=config.precision, time_budget=budget,
        checkpoint_every=config.checkpoint_every,
    )  # fmt: skip


def _method(run: LMRun):
    """The method with the run's settings (None for alpha 1: nothing is distilled)."""
    if run.alpha >= 1.0:
        return None
    return make_method(run.method, temperature=run.settings["temperature"],
                       weight=run.config.weight, **method_options(run.config, run.method))


# --- export, quantization, bench ------------------------------------------------------------------


def _export_and_quantize(run: LMRun, student, work: Path):
    return export_and_quantize(
        student, work, run.prompts, run.val.blocks[: min(len(run.val), 16)],
        run.target.lm.perplexity_increase, run.vocab,
    )  # fmt: skip


def export_and_quantize(student, work: Path, prompts, val_blocks: np.ndarray,
                        perplexity_increase: float | None, vocab=None):  # fmt: skip
    """Save the student, export it with a KV cache (parity-checked on ``prompts``) and keep the
    quantized variant chosen on ``val_blocks``' perplexity (at most ``perplexity_increase`` over
    fp32, 5% when the target sets none) and decode speed. ``vocab``: a pruned vocabulary the
    export maps back to the tokenizer's ids. Shared by the black-box path."""
    from edgekd.lm.bench import variant_meter
    from edgekd.lm.export import export_lm
    from edgekd.lm.quantize import MODES, LMQuantConfig, select_lm_quantization
    from edgekd.lm.student import save_student

    save_student(student, work / "student")
    if vocab is not None:  # the export reads and writes the tokenizer's own ids
        from edgekd.lm.vocab import PrunedLM

        write_json_atomic(work / "student" / "vocab.json", vocab.to_dict())
        student = PrunedLM(student, vocab).eval()
    exported = export_lm(student, work / "student.onnx", prompts, new_tokens=NEW_TOKENS // 2)
    measure = variant_meter(val_blocks, PROMPT_TOKENS, NEW_TOKENS, runs=2)
    allowed = perplexity_increase or 0.05
    selection = select_lm_quantization(
        work / "student.onnx", work, [LMQuantConfig(m) for m in MODES], measure, allowed
    )
    status(f"quantization: {selection.reason}")
    return exported, selection


def _bench(run: LMRun, selection):
    """The benchmark's rows, and the teacher's ONNX export (benched as ``teacher-onnx`` where
    it exported with parity; ``edgekd.lm.export.export_teacher``)."""
    from edgekd.lm.export import cached_teacher_export

    teacher = getattr(run.teacher.module, "model", run.teacher.module)  # transformers: its cache
    teacher_onnx = cached_teacher_export(run.teacher.module, run.prompts)
    status(f"teacher in ONNX: {teacher_onnx.reason}")
    blocks = run.test.blocks[: min(len(run.test), 32)]
    rows = bench_students(selection, blocks, run.prompts, run.settings["context"],
                          teacher=teacher, teacher_onnx=teacher_onnx.path)  # fmt: skip
    return rows, teacher_onnx


def bench_students(selection, blocks: np.ndarray, prompts, context: int, teacher=None,
                   teacher_onnx: str | None = None):  # fmt: skip
    """The chosen student variant (and fp32 when another was chosen), with the teacher module
    when there is one (and its ONNX graph, ``teacher_onnx``), through
    ``edgekd.lm.bench.bench_lm``."""
    from edgekd.lm.bench import bench_lm

    models: dict[str, Any] = {} if teacher is None else {"teacher": teacher}
    models["student"] = selection.chosen.path
    if selection.chosen.name != "fp32":
        models["student-fp32"] = next(v.path for v in selection.variants if v.name == "fp32")
    if teacher_onnx is not None:  # last: the rows before it keep their places
        models["teacher-onnx"] = teacher_onnx
    return bench_lm(
        models, blocks, prompts, teacher="teacher" if teacher is not None else None,
        prompt_tokens=PROMPT_TOKENS, context_tokens=context, new_tokens=NEW_TOKENS,
        runs=_per_row(models, BENCH_RUNS, TEACHER_RUNS),
        prefills=_per_row(models, BENCH_PREFILLS, TEACHER_PREFILLS),
    )  # fmt: skip


def _per_row(models, student_count: int, teacher_count: int) -> dict[str, int]:
    """A count for each bench row: ``teacher_count`` for the teacher's rows, else
    ``student_count``."""
    return {name: teacher_count if name in TEACHER_ROWS else student_count for name in models}


# --- the report -----------------------------------------------------------------------------------


def _report(run, sizing, history, exported, selection, rows, laps, out: Path) -> dict[str, Any]:
    from edgekd.lm.bench import budget_lines

    by_name = {r.name: r for r in rows}
    lines = budget_lines(by_name["student"], run.target.lm, by_name["teacher"].perplexity)
    sources = run.config.setting_sources()
    changed = {k: v for k, v in run.settings.items() if k in LM_DEFAULTS and sources[k] != "given"}
    report = {
        "task": "causal-lm",
        "out_dir": str(out),
        "target": run.target.name,
        "target_lm": dataclasses.asdict(run.target.lm),
        "teacher": run.teacher.describe(),
        "data": {"train": run.train.describe(), "val": run.val.describe(),
                 "test": run.test.describe()},  # fmt: skip
        "prune_vocab": None if run.vocab is None else {
            "kept": run.vocab.size, "of": run.vocab.full_size},
        "method": {"name": run.method, "alpha": run.alpha, "top_k": run.config.top_k,
                   **({} if run.alpha >= 1 else _method(run).describe())},
        "settings": {**run.settings, "lm_defaults_used": changed, "settings_sources": sources},
        "continuations": continuation_texts(run.teacher.tokenizer, run.prompts, rows),
    }  # fmt: skip
    return with_deployment(report, sizing, history, exported, selection, rows, lines, laps)


def with_deployment(report: dict[str, Any], sizing, history, exported, selection, rows, lines,
                    laps: dict[str, float]) -> dict[str, Any]:  # fmt: skip
    """``report`` (which names its target's ``target_lm``) with the fields both LM paths share:
    the student and its training, export, quantization, the benchmark's rows, the budget lines
    and the verdict ``edgekd gate`` gives them (``edgekd.gate.lm``), timings and host."""
    from edgekd.gate.lm import gate_lm

    report = {
        **report,
        "student": {**sizing.config.to_dict(), "params": sizing.config.param_count(),
                    "sizing": sizing.reason, "sizing_limits": getattr(sizing, "limits", None),
                    "estimate_lines": [line.to_dict() for line in sizing.lines]},
        "training": history.to_dict(),
        "export": exported.to_dict(),
        "quantization": {"chosen": selection.chosen.name, "reason": selection.reason,
                         "variants": [dataclasses.asdict(v) for v in selection.variants]},
        "models": [r.to_dict() for r in rows],
        "budget": [line.to_dict() for line in lines],
        "timings_s": {k: round(v, 3) for k, v in laps.items()},
        "host": host_info(),
    }  # fmt: skip
    report = json.loads(json.dumps(report, default=plain))
    gated = gate_lm(report, report.get("out_dir", "report"))
    report["verdict"] = str(gated.verdict).lower()
    verdicts = {line.name: line for line in gated.lines}
    for line in report["budget"]:  # the gate's verdict per line: latency by its interval
        if line["name"] in verdicts:
            line["verdict"] = str(verdicts[line["name"]].verdict).lower()
            line["reason"] = verdicts[line["name"]].reason
    return report


def _write(report: dict[str, Any], run: LMRun, rows, work: Path) -> None:
    write_json_atomic(work / "report.json", report)
    write_text_atomic(work / "report.md", lm_markdown(report))


def plain(value: Any) -> Any:
    """JSON for what ``json`` cannot write itself: numpy scalars as numbers, the rest as text."""
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def print_lm_summary(report: dict[str, Any]) -> None:
    """The terminal lines after a run: the student against the teacher, and the verdict."""
    rows = {m["name"]: m for m in report["models"]}
    t, s = rows["teacher"], rows["student"]
    print(
        f"student ({report['quantization']['chosen']}, {report['student']['params']:,} params): "
        f"perplexity {s['perplexity']:.2f} vs teacher {t['perplexity']:.2f}; "
        f"{s['decode_tokens_per_s']:.0f} tokens/s, ttft {s['ttft_ms']:.1f} ms"
    )
    print(f"report: {report['out_dir']}/report.md")
    print(f"budget: {report['verdict']}")
