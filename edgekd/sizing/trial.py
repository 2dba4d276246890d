"""Choosing the student: the evidence's families sized, then a short trial between them.

:func:`choose_student` is what ``distill`` asks: read the teacher's structure and the data
(``edgekd.sizing.evidence``), size every plausible family to the target (its largest fitting
candidate), and where more than one fits, train each briefly and keep the one that agrees best
with the teacher on validation data. Then the same short trial for the augmentation levels of the
chosen family (``none``, ``light`` and ``strong`` where a policy exists and the method allows it).

A trial run is the run's own training in miniature: the same method, loss, strategy code
(``offline``), teacher outputs and augmentation, on a seeded subset (``TRIAL_TRAIN`` training and
``TRIAL_VAL`` validation samples) for a fixed number of optimizer steps (``TRIAL_STEPS``, counted,
never timed, so the choice does not depend on the machine's load). All trial runs together take
at most ``TRIAL_SHARE`` of the run's own training steps; a run too short for that keeps the
evidence's choice and says so.

The evidence's choice (its first family; the input kind's default augmentation, itself measured
on long schedules, see ``edgekd.distill.views``) is kept unless a challenger beats it by more
than ``MARGIN`` in validation agreement: a short trial favours whatever learns fastest, and a
difference of a few validation samples is noise.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekd.data import DataBundle
from edgekd.errors import BadInputError, EdgekdError
from edgekd.progress import status
from edgekd.sizing.candidate import Candidate, SizingRequest
from edgekd.sizing.evidence import (
    UNKNOWN,
    FamilyEvidence,
    Plausible,
    TeacherStructure,
    plausible_families,
    structure_of_module,
    structure_of_onnx,
)
from edgekd.sizing.search import NothingFitsError, SizingResult, size_family
from edgekd.targets import TargetProfile

TRIAL_STEPS = 64  # optimizer steps per trial run (batch 64: 4,096 samples seen)
TRIAL_TRAIN = 512  # training samples in the trial's subset
TRIAL_VAL = 512  # validation samples the trial scores on
TRIAL_SHARE = 0.2  # every trial run together: at most this share of the run's training steps
# Fewer steps per trial run than this tell nothing: no trial. On digits at 16 steps an MLP led a
# CNN by 36 points of validation agreement (the CNN then won by 1.4 points of test accuracy after
# a full run); at 64 steps the CNN led (0.983 against 0.961), as after the full run.
MIN_TRIAL_STEPS = 32
MARGIN = 0.01  # validation agreement a challenger must gain over the evidence's choice


@dataclass(frozen=True)
class TrialRow:
    """One trial run: a family's candidate at one augmentation level, and how it did."""

    stage: str  # "family" or "augment"
    family: str
    candidate: str
    params: int
    view: tuple[int, ...] | None
    augment: str
    steps: int  # optimizer steps taken (counted)
    agreement: float  # validation agreement with the teacher
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["view"] = None if self.view is None else list(self.view)
        return d


@dataclass(frozen=True)
class TrialResult:
    """The trial: every run, what it chose and why; ``skipped`` says why a stage did not run."""

    rows: tuple[TrialRow, ...]
    steps_per_run: int
    family_why: str
    augment: str | None  # None: the run's own default (no augmentation trial)
    augment_why: str
    seconds: float
    sized: tuple[tuple[str, str, int], ...] = ()  # each family's largest fitting candidate

    def __post_init__(self) -> None:
        if self.steps_per_run < 0 or self.seconds < 0:
            raise BadInputError("a trial's step budget and time cannot be negative")

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps_per_run": self.steps_per_run,
            "train_samples": TRIAL_TRAIN,
            "val_samples": TRIAL_VAL,
            "margin": MARGIN,
            "rows": [r.to_dict() for r in self.rows],
            "family_why": self.family_why,
            "augment": self.augment,
            "augment_why": self.augment_why,
            "seconds": round(self.seconds, 3),
            "sized": [{"family": f, "candidate": label, "params": n} for f, label, n in self.sized],
        }


def read_structure(teaching: Any, config: Any) -> TeacherStructure:
    """The structure of the run's teacher: its ONNX graph where it is one (``--teacher-onnx``, a
    ``.onnx`` ``--teacher``), else its PyTorch modules traced on one training sample."""
    loaded = getattr(teaching, "loaded", None)
    onnx_path = getattr(loaded, "onnx_path", None) or getattr(config, "teacher_onnx", None)
    if onnx_path:
        try:
            return structure_of_onnx(onnx_path)
        except Exception:  # an unreadable graph leaves the choice to the data's shape
            return UNKNOWN
    if teaching.model is None:
        return UNKNOWN
    import torch

    example = [torch.as_tensor(np.asarray(a)) for a in teaching.data.example_inputs(1).values()]
    return structure_of_module(teaching.model, example)


def evidence_for(structure: TeacherStructure, data: DataBundle) -> FamilyEvidence:
    arrays = data.train.inputs
    shapes = [tuple(a.shape[1:]) for a in arrays.values()]
    float_input = len(arrays) == 1 and np.issubdtype(next(iter(arrays.values())).dtype, np.floating)
    return plausible_families(structure, data.input_kind, shapes, float_input)


def augment_kind(data_kind: str, shape: tuple[int, ...], view: tuple[int, ...] | None) -> str:
    """The input kind whose augmentation policy fits a student's view of the data: the view's
    kind where the view only adds a leading axis (``[L]`` as ``[1, L]``: shifting along the last
    axis is the same), else the data's own (a flat ``[64]`` shifted as a sequence is not an
    8x8 image shifted)."""
    if view is None or tuple(view) != (1, *shape):
        return data_kind
    return {2: "sequence", 3: "image"}.get(len(view), data_kind)


def choose_student(
    config: Any,
    target: TargetProfile,
    teaching: Any,
    sized_data: DataBundle,
    method: str,
    strategy: str,
    run_trial: bool = True,
    precision: str = "fp32",
) -> SizingResult:
    """The sized student ``distill`` trains, with the evidence and the trial that chose it.

    ``config``: the ``DistillConfig``; ``teaching``: ``edgekd.teacher.prepare.Teaching``;
    ``sized_data``: the data with one output per class. ``--student`` fixes the family (no family
    trial); ``--augment`` fixes the level (no augmentation trial). ``run_trial=False``: size the
    plausible families and keep the evidence's choice (``edgekd size`` without ``--trial``).
    ``precision``: the budget lines are checked at it (``edgekd size --precision``).

    >>> choose_student(config, load_target("iot"), teaching, data, "kd", "offline").chosen.family
    ... # doctest: +SKIP
    'cnn1d'
    """
    evidence = evidence_for(read_structure(teaching, config), sized_data)
    request = SizingRequest(target, sized_data, teaching.params, precision=precision)
    sized = _size_plausible(request, evidence, config.student)
    trial = Trial(config, teaching, sized_data, method, strategy)
    if not run_trial:
        trial.why_not = "not run here (edgekd size --trial runs it)"
    t0 = time.perf_counter()
    rows: list[TrialRow] = []
    plausible, result, family_why = trial.families(sized, rows, config.student)
    level, augment_why = trial.augmentation(plausible, result.chosen, rows)
    kind = augment_kind(sized_data.input_kind, _shape(sized_data), plausible.view)
    seconds = time.perf_counter() - t0
    each = tuple((p.family, r.chosen.label, r.chosen.params) for p, r in sized)
    outcome = TrialResult(tuple(rows), trial.steps, family_why, level, augment_why, seconds, each)
    return dataclasses.replace(result, evidence=evidence, trial=outcome, augment_kind=kind)


def as_student_sees(teaching: Any, sized_data: DataBundle, sizing: SizingResult) -> tuple:
    """``teaching`` and ``sized_data`` with the input kind whose augmentation the chosen student
    gets (``[N, 40]`` data under a 1-D conv student is augmented as a sequence)."""
    kind = sizing.augment_kind
    if kind is None or kind == sized_data.input_kind:
        return teaching, sized_data
    data = dataclasses.replace(teaching.data, input_kind=kind)
    return dataclasses.replace(teaching, data=data), dataclasses.replace(
        sized_data, input_kind=kind
    )


def _shape(data: DataBundle) -> tuple[int, ...]:
    return tuple(next(iter(data.train.inputs.values())).shape[1:])


def _size_plausible(
    request: SizingRequest, evidence: FamilyEvidence, student: str | None
) -> list[tuple[Plausible, SizingResult]]:
    """Every plausible family's sizing (``student``: that one alone), those where nothing fits
    left out; the first family's error when none fits."""
    if student is not None:
        given = next((p for p in evidence.families if p.family == student), None)
        plausible = given or Plausible(student, None, "--student given")
        return [(plausible, size_family(request, student, plausible.view))]
    sized, first_error = [], None
    for i, p in enumerate(evidence.families):
        # The evidence's choice gets the full table; the others only their largest fitting
        # candidate, measured from the top down without host timing (they are only tried).
        asked = request if i == 0 else dataclasses.replace(request, measure_host=False)
        try:
            sized.append((p, size_family(asked, p.family, p.view, top_down=i > 0)))
        except NothingFitsError as exc:
            first_error = first_error or exc
        except EdgekdError:
            # A challenger that cannot take this data (inputs it does not read, an export it
            # refuses) is not tried; the evidence's own choice still fails loudly.
            if i == 0:
                raise
    if not sized:
        assert first_error is not None
        raise first_error
    if sized[0][0] is not evidence.families[0]:
        first = evidence.families[0].family
        note = f"the evidence's first family {first!r} did not fit ({first_error})"
        sized[0] = (sized[0][0], dataclasses.replace(sized[0][1], notes=(*sized[0][1].notes, note)))
    return sized


class Trial:
    """Short training runs on a seeded subset, scored by validation agreement with the teacher."""

    def __init__(
        self, config: Any, teaching: Any, data: DataBundle, method: str, strategy: str
    ) -> None:
        self.config, self.teaching, self.method, self.strategy = config, teaching, method, strategy
        self.data = data
        self.why_not = self._why_not()
        self.steps = 0 if self.why_not else TRIAL_STEPS

    def _why_not(self) -> str | None:
        t, config = self.teaching, self.config
        if t.model is None or t.train_outputs is None:
            return "a black-box teacher: no outputs to train against before the run"
        if config.task != "classification":
            return f"--task {config.task}: no agreement to compare"
        return None

    def budget(self, runs: int) -> int:
        """Steps per trial run: ``TRIAL_STEPS``, or less to keep ``runs`` of them within
        ``TRIAL_SHARE`` of the run's own training steps; 0: too few for a trial."""
        from edgekd.distill.job import default_epochs

        if self.why_not:
            return 0
        n, batch = self.data.train.n, self.config.batch_size
        epochs = self.config.epochs or default_epochs("none", n, batch)
        run_steps = epochs * math.ceil(n / batch)
        steps = min(TRIAL_STEPS, int(TRIAL_SHARE * run_steps / max(1, runs)))
        if steps < MIN_TRIAL_STEPS:
            self.why_not = (
                f"the run trains {run_steps:,} steps; {runs} trial runs within "
                f"{TRIAL_SHARE:.0%} of that would be under {MIN_TRIAL_STEPS} steps each"
            )
            return 0
        return steps

    def families(
        self, sized: list[tuple[Plausible, SizingResult]], rows: list[TrialRow], student: str | None
    ) -> tuple[Plausible, SizingResult, str]:
        first, result = sized[0]
        if student is not None:
            return first, result, f"--student {student} given: no family trial"
        if len(sized) == 1:
            return first, result, f"{first.family}: the only plausible family that fits"
        runs = len(sized) + 2  # each family, then up to two more augmentation levels
        self.steps = self.budget(runs)
        if not self.steps:
            return (
                first,
                result,
                f"{first.family}: the evidence's choice (no trial: {self.why_not})",
            )
        for p, r in sized:
            level = self.default_level(p)
            rows.append(self.run(r.chosen, p, level, "family"))
        best = max(range(len(sized)), key=lambda i: rows[i].agreement)
        if rows[best].agreement > rows[0].agreement + MARGIN:
            p, r = sized[best]
            why = (
                f"{p.family}: best validation agreement in the trial ({rows[best].agreement:.3f} "
                f"against {rows[0].agreement:.3f} for the evidence's choice {first.family})"
            )
            return p, r, why
        why = f"{first.family}: the evidence's choice, not beaten by more than {MARGIN:g}"
        return first, result, why

    def default_level(self, p: Plausible) -> str:
        from edgekd.distill.methods import get_method
        from edgekd.distill.views import choose_augment

        kind = augment_kind(self.data.input_kind, _shape(self.data), p.view)
        level, _ = choose_augment(
            self.config.augment, kind, self.config.task, self.strategy, self.teaching.params,
            get_method(self.method).needs_labels,
        )  # fmt: skip
        return level

    def augmentation(
        self, p: Plausible, chosen: Candidate, rows: list[TrialRow]
    ) -> tuple[str | None, str]:
        if self.config.augment is not None:
            return None, "--augment given: no augmentation trial"
        levels = self.levels(p)
        incumbent = self.default_level(p)
        if len(levels) < 2:
            return None, f"{incumbent}: the only level that applies"
        if not self.steps and not self.why_not:
            self.steps = self.budget(len(levels))
        if not self.steps:
            return None, f"{incumbent}: the default (no trial: {self.why_not})"
        tried = {r.augment: r for r in rows if r.stage == "family" and r.family == p.family}
        for level in levels:
            if level not in tried:
                tried[level] = self.run(chosen, p, level, "augment")
                rows.append(tried[level])
        base = tried[incumbent].agreement
        best = max(levels, key=lambda lv: tried[lv].agreement)
        if tried[best].agreement > base + MARGIN:
            return best, (
                f"{best}: best validation agreement in the trial ({tried[best].agreement:.3f} "
                f"against {base:.3f} for the default {incumbent}); tried {', '.join(levels)}"
            )
        return incumbent, (
            f"{incumbent}: the default for the input, not beaten by more than {MARGIN:g} in the "
            f"trial (tried {', '.join(levels)})"
        )

    def levels(self, p: Plausible) -> list[str]:
        """The levels that apply: a policy for the view's kind, a frozen teacher to run on the
        views, and no mixup (unlabelled views) for a method that needs labels."""
        from edgekd.data.augment import POLICIES
        from edgekd.distill.methods import get_method
        from edgekd.distill.views import LIVE_TEACHER_MAX_PARAMS, NO_AUGMENT_STRATEGIES

        if self.teaching.model is None or self.strategy in NO_AUGMENT_STRATEGIES:
            return []
        if self.teaching.params > LIVE_TEACHER_MAX_PARAMS:
            return []
        kind = augment_kind(self.data.input_kind, _shape(self.data), p.view)
        labels = get_method(self.method).needs_labels
        levels = ["none"]
        for level in ("light", "strong"):
            policy = POLICIES.get((kind, level))
            if policy and not (labels and "mixup" in policy[0]):
                levels.append(level)
        return levels

    def run(self, candidate: Candidate, p: Plausible, level: str, stage: str) -> TrialRow:
        """Train ``candidate`` for ``self.steps`` steps at ``level``; its validation agreement."""
        import torch

        from edgekd.distill.job import make_job
        from edgekd.distill.strategies import run_strategy
        from edgekd.sizing.candidate import build_candidate
        from edgekd.train.loop import predict_logits

        kind = augment_kind(self.data.input_kind, _shape(self.data), p.view)
        teaching, val_teacher = self._subset(kind)
        status(f"trial: {candidate.label}, augmentation {level}, {self.steps} steps")
        torch.manual_seed(self.config.seed)
        student = build_candidate(candidate, teaching.data)
        steps = _count_training_forwards(student)
        per_epoch = math.ceil(teaching.data.train.n / self.config.batch_size)
        config = dataclasses.replace(
            self.config, augment=level, epochs=max(1, self.steps // per_epoch), patience=0,
            time_budget=None, init_from_teacher=False, seeds=1,
        )  # fmt: skip
        start = time.perf_counter()
        job, _ = make_job(config, teaching, student, "offline", self.method)
        trained = run_strategy("offline", job).student
        seconds = time.perf_counter() - start
        agree = predict_logits(trained, teaching.data.val).argmax(-1) == val_teacher.argmax(-1)
        return TrialRow(
            stage, p.family, candidate.label, candidate.params, p.view, level, steps[0],
            float(np.mean(agree)), round(seconds, 3),
        )  # fmt: skip

    def _subset(self, kind: str) -> tuple[Any, np.ndarray]:
        """The teaching on a seeded subset (its teacher outputs sliced alike), as ``kind``."""
        rng = np.random.default_rng(self.config.seed)
        t, data = self.teaching, self.data
        # No epoch longer than the step budget: the budget holds whatever the batch size.
        n_train = min(TRIAL_TRAIN, self.steps * self.config.batch_size)
        tr = np.sort(rng.permutation(data.train.n)[:n_train])
        va = np.sort(rng.permutation(data.val.n)[:TRIAL_VAL])
        sub = dataclasses.replace(
            data, train=data.train.part(tr), val=data.val.part(va), input_kind=kind
        )
        val_outputs = np.asarray(t.val_outputs)[va]
        teaching = dataclasses.replace(
            t, data=sub, train_outputs=np.asarray(t.train_outputs)[tr], val_outputs=val_outputs,
            test_outputs=None,
        )  # fmt: skip
        return teaching, val_outputs


def _count_training_forwards(model: Any) -> list[int]:
    """A counter of the model's forward calls in training mode: one per optimizer step. Copies
    of the model (the trainer times a few steps of one to fit its threads) are not counted."""
    counter = [0]

    def hook(module: Any, args: Any) -> None:
        if module is model and module.training:
            counter[0] += 1

    model.register_forward_pre_hook(hook)
    return counter
