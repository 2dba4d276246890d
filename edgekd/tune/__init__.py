"""``tune``: search distillation settings within a time budget; write the winner as a run config.

Searched (for the run's data, teacher and sized student, all fixed): temperature, alpha, peak
learning rate, augmentation level and logit method. Each trial trains the student exactly as
``edgekd distill`` would (``edgekd.distill.job``) and is scored on validation accuracy
(agreement with the teacher where the validation split has no labels). The first trial is the
defaults, so tuning never reports a winner worse than them on validation.

Backends, same interface: Optuna (TPE sampler and median pruner; ``pip install edgekd[tune]``)
when importable, else random search with the same median-stop rule: after ``warmup`` epochs
(default: half of them, past the one-cycle peak, where early scores say little) and once
``startup`` trials have completed, a trial whose best score so far is below the median of the
completed trials' scores at the same epoch is stopped. Combinations that cannot run (a method
that needs labels with mixed views) are redrawn by random search and fail at once under Optuna.

The budget covers everything (teacher, sizing, trials): no trial starts once it is spent, and a
running trial is stopped at its next epoch boundary. Written to ``out``: ``tune.json`` (every
trial, the winner, the search space, timings) and ``run.toml`` (``edgekd distill --config``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import BadInputError
from edgekd.fileio import write_json_atomic, write_text_atomic

BACKENDS = ("auto", "optuna", "random")
LOGIT_METHODS = ("kd", "mse", "dkd")
# The search space: (kind, low, high) for numbers; categorical lists are set per run.
NUMERIC_SPACE = {
    "temperature": ("log", 1.0, 10.0),
    "alpha": ("uniform", 0.0, 0.5),
    "lr": ("log", 1e-3, 3e-2),
}


@dataclass(frozen=True)
class TuneSettings:
    """How to search. ``budget_s`` bounds the whole search, ``max_trials`` the trial count."""

    budget_s: float = 600.0
    max_trials: int | None = None
    backend: str = "auto"
    methods: tuple[str, ...] = LOGIT_METHODS
    warmup_epochs: int | None = None  # no pruning up to this epoch; None: half of the epochs
    startup_trials: int = 5  # no pruning until this many trials have completed (Optuna's default)

    def __post_init__(self) -> None:
        if not self.budget_s > 0:
            raise BadInputError(f"--time-budget must be > 0 seconds, got {self.budget_s}")
        if self.max_trials is not None and self.max_trials < 1:
            raise BadInputError(f"--trials must be >= 1, got {self.max_trials}")
        if self.backend not in BACKENDS:
            raise BadInputError(f"--backend must be one of {', '.join(BACKENDS)}")
        unknown = set(self.methods) - set(LOGIT_METHODS)
        if unknown or not self.methods:
            raise BadInputError(
                f"--methods: tuning searches logit methods ({', '.join(LOGIT_METHODS)}), got "
                f"{', '.join(sorted(unknown)) or 'none'}"
            )


@dataclass
class TrialRecord:
    number: int
    params: dict[str, Any]
    state: str  # complete | pruned | stopped (budget) | failed
    score: float | None
    epochs_run: int
    seconds: float
    scores: list[float] = field(default_factory=list)  # validation score after each epoch
    note: str = ""


@dataclass
class TuneResult:
    base: dict[str, Any]  # the DistillConfig fields the search started from
    best: TrialRecord
    trials: list[TrialRecord]
    backend: str
    budget_s: float
    elapsed_s: float
    metric: str
    space: dict[str, Any]
    out: str | None = None

    def best_config(self):
        from edgekd.pipeline import DistillConfig

        return DistillConfig(**{**self.base, **self.best.params})

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "budget_s": self.budget_s,
            "elapsed_s": round(self.elapsed_s, 2),
            "metric": self.metric,
            "space": self.space,
            "best": dataclasses.asdict(self.best),
            "base": self.base,
            "trials": [dataclasses.asdict(t) for t in self.trials],
            "reproduce": "edgekd distill --config run.toml",
        }


class Pruned(Exception):
    """Raised inside a trial to stop it (a bad trial, or the budget is spent)."""

    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.state = state


def tune(config, settings: TuneSettings = TuneSettings(), out: str | Path | None = None):
    """Search settings for ``config`` (a ``DistillConfig``); write tune.json and run.toml to
    ``out`` (default ``runs/tune-TIMESTAMP``) and return the :class:`TuneResult`.

    >>> result = tune(DistillConfig(data="mnist1d"), TuneSettings(budget_s=600))  # doctest: +SKIP
    >>> result.best.params  # doctest: +SKIP
    {'temperature': 2.7, 'alpha': 0.21, 'lr': 0.0041, 'augment': 'light', 'method': 'kd'}
    """
    start = time.monotonic()
    deadline = start + settings.budget_s
    out = Path(out) if out else Path("runs") / f"tune-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and any(out.iterdir()):
        raise BadInputError(f"{out}: exists and is not empty; pick another --out")
    if config.epochs is None:  # every trial runs the same (patient) schedule
        from edgekd.distill.job import PATIENT_EPOCHS

        config = dataclasses.replace(config, epochs=PATIENT_EPOCHS)
    setup = _Setup.build(config)
    setup_s = time.monotonic() - start
    space = setup.space(settings.methods)
    warmup = settings.warmup_epochs
    warmup = max(1, config.epochs // 2) if warmup is None else warmup
    feasible = getattr(setup, "feasible", None)
    searcher = make_searcher(
        settings.backend, space, config.seed, settings.startup_trials, warmup, feasible
    )
    backend = searcher.name
    trials: list[TrialRecord] = []
    searcher.enqueue(setup.defaults)
    while time.monotonic() < deadline and (
        settings.max_trials is None or len(trials) < settings.max_trials
    ):
        handle = searcher.ask()
        record = TrialRecord(len(trials), handle.params, "complete", None, 0, 0.0)
        began = time.monotonic()

        def on_epoch(score: float, record=record, handle=handle) -> None:
            record.scores.append(score)
            if time.monotonic() > deadline:
                raise Pruned("stopped")
            if handle.should_prune(len(record.scores), score):
                raise Pruned("pruned")

        try:
            record.score = setup.evaluate(handle.params, on_epoch)
        except Pruned as stop:
            record.state = stop.state
        except BadInputError as exc:  # e.g. a method that needs labels with mixed views
            record.state, record.note = "failed", str(exc)
        record.epochs_run = len(record.scores)
        record.seconds = round(time.monotonic() - began, 2)
        handle.finish(record.state, record.score, record.scores)
        trials.append(record)
    done = [t for t in trials if t.state == "complete"]
    if not done:
        raise BadInputError(
            f"--time-budget {settings.budget_s:g} s: no trial finished (setting up the teacher "
            f"and student took {setup_s:.0f} s, then {len(trials)} trials were stopped or failed); "
            "raise the budget"
        )
    best = max(done, key=lambda t: t.score)
    base = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("out", "overwrite")}
    result = TuneResult(
        base,
        best,
        trials,
        backend,
        settings.budget_s,
        time.monotonic() - start,
        setup.metric,
        space,
        str(out),
    )
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "tune.json", result.to_dict())
    write_text_atomic(out / "run.toml", run_toml(result))
    return result


def run_toml(result: TuneResult) -> str:
    """The winner as a ``DistillConfig`` TOML: the settings that differ from the defaults plus
    every searched one, so ``edgekd distill --config run.toml`` reproduces the winning trial."""
    from edgekd.pipeline import DistillConfig

    defaults = dataclasses.asdict(DistillConfig())
    values = {**result.base, **result.best.params}
    lines = [
        "# edgekd tune: the best of "
        f"{len(result.trials)} trials ({result.metric} {result.best.score:.4f}, trial "
        f"{result.best.number}, {result.backend} search, {result.elapsed_s:.0f} s)",
        "# reproduce: edgekd distill --config run.toml",
    ]
    for key, value in values.items():
        if value is None or key == "trust_checkpoint":
            continue  # TOML has no null; trust is given on the command line only
        if key not in result.best.params and value == defaults.get(key):
            continue
        if isinstance(value, tuple | list):
            if not value:
                continue
            raise BadInputError(f"tune: cannot write list setting {key!r} to run.toml")
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a basic TOML string: JSON escapes are valid there


class _Setup:
    """The fixed part of every trial: data, teacher outputs, the sized student's recipe."""

    def __init__(self, config, teaching, candidate, sized_data, strategy: str) -> None:
        self.config, self.teaching, self.candidate = config, teaching, candidate
        self.sized_data, self.strategy = sized_data, strategy
        val = teaching.data.val
        self.metric = (
            "validation accuracy" if val.y is not None else "validation agreement with the teacher"
        )
        self.reference = val.y if val.y is not None else teaching.val_outputs.argmax(-1)

    @classmethod
    def build(cls, config) -> _Setup:
        from edgekd.data import load_data
        from edgekd.sizing import size_student_to_budget
        from edgekd.targets import load_target
        from edgekd.teacher.prepare import prepare_teaching

        if config.teacher_onnx or config.teacher_cmd:
            raise BadInputError("tune needs a PyTorch teacher (not --teacher-onnx/--teacher-cmd)")
        if config.task != "classification":
            raise BadInputError("tune searches classification settings (--task classification)")
        if config.strategy not in (None, "offline"):
            raise BadInputError("tune searches the offline strategy (drop --strategy)")
        if config.seeds != 1:
            raise BadInputError("tune trains one seed per trial (drop --seeds)")
        if config.method is not None and config.method not in LOGIT_METHODS:
            raise BadInputError(
                f"tune searches logit methods ({', '.join(LOGIT_METHODS)}), not {config.method!r}"
            )
        target = load_target(config.target)
        data = load_data(
            config.data,
            seed=config.seed,
            test_data=config.test_data,
            val_data=config.val_data,
            label_column=config.label_column,
        )
        teaching = prepare_teaching(config, data)
        sized = dataclasses.replace(teaching.data, num_classes=teaching.num_outputs)
        sizing = size_student_to_budget(target, sized, teaching.params, config.student)
        return cls(config, teaching, sizing.chosen, sized, "offline")

    @property
    def defaults(self) -> dict[str, Any]:
        """The first trial: what a plain ``edgekd distill`` with this config would use."""
        from edgekd.distill.methods import get_method
        from edgekd.distill.views import choose_augment

        method = self.config.method or "kd"
        cls = get_method(method)
        level, _ = choose_augment(
            self.config.augment,
            self.teaching.data.input_kind,
            "classification",
            "offline",
            self.teaching.params,
            cls.needs_labels,
        )
        alpha = cls.default_alpha if self.config.alpha is None else self.config.alpha
        return {
            "temperature": self.config.temperature,
            "alpha": alpha,
            "lr": self.config.lr,
            "augment": level,
            "method": method,
        }

    def feasible(self, params: dict[str, Any]) -> bool:
        """False for a method that needs labels with views that have none (mixup)."""
        from edgekd.distill.methods import get_method
        from edgekd.distill.views import choose_augment

        try:
            choose_augment(
                params["augment"],
                self.teaching.data.input_kind,
                "classification",
                "offline",
                self.teaching.params,
                get_method(params["method"]).needs_labels,
            )
        except BadInputError:
            return False
        return True

    def space(self, methods: tuple[str, ...]) -> dict[str, Any]:
        from edgekd.data.augment import LEVELS, make_augmenter

        levels = ["none"]
        for level in LEVELS[1:]:
            try:
                make_augmenter(self.teaching.data.input_kind, level)
                levels.append(level)
            except BadInputError:
                pass
        usable = [m for m in methods if m != "dkd" or self.teaching.data.train.y is not None]
        return {
            **{k: list(v) for k, v in NUMERIC_SPACE.items()},
            "augment": ["categorical", *levels],
            "method": ["categorical", *usable],
        }

    def evaluate(self, params: dict[str, Any], on_epoch: Callable[[float], None]) -> float:
        """Train the student as ``distill`` would with ``params``; its validation score."""
        import torch

        from edgekd.distill.job import make_job, train_offline
        from edgekd.pipeline import DistillConfig
        from edgekd.sizing import build_candidate
        from edgekd.train.loop import predict_logits

        config = DistillConfig(**{**dataclasses.asdict(self.config), **params})
        torch.manual_seed(config.seed)  # as distill: the initial weights depend on the seed
        student = build_candidate(self.candidate, self.sized_data)
        if config.init_from_teacher:
            from edgekd.students.teacher_init import init_from_teacher

            init_from_teacher(student, self.teaching.model)
        job, _ = make_job(config, self.teaching, student, self.strategy, config.method)
        val = self.teaching.data.val

        def score(model) -> float:
            return float((predict_logits(model, val).argmax(-1) == self.reference).mean())

        trained = train_offline(
            job, self.teaching, self.teaching.data.train, on_epoch=lambda m: on_epoch(score(m))
        )
        return score(trained.student)


# --- search backends -------------------------------------------------------------------------


class _Handle:
    """One trial: its parameters, the pruning question, and how it ended."""

    def __init__(self, params, should_prune, finish) -> None:
        self.params = params
        self.should_prune = should_prune  # (epoch, score) -> bool; epochs count from 1
        self.finish = finish  # (state, score, per-epoch scores) -> None


class RandomSearcher:
    """Random search with a median-stop rule (the rule of Optuna's MedianPruner)."""

    name = "random"

    def __init__(
        self,
        space: dict[str, Any],
        seed: int = 0,
        startup: int = 5,
        warmup: int = 1,
        feasible: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        self.space, self.startup, self.warmup = space, startup, warmup
        self.feasible = feasible or (lambda params: True)  # False: redraw (cannot run)
        self.rng = np.random.default_rng(seed)
        self.queue: list[dict[str, Any]] = []
        self.curves: list[list[float]] = []  # per-epoch scores of completed trials

    def enqueue(self, params: dict[str, Any]) -> None:
        self.queue.append(dict(params))

    def sample(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for name, spec in self.space.items():
            kind, *rest = spec
            if kind == "categorical":
                params[name] = rest[int(self.rng.integers(len(rest)))]
            elif kind == "log":
                low, high = math.log(rest[0]), math.log(rest[1])
                params[name] = float(math.exp(self.rng.uniform(low, high)))
            else:
                params[name] = float(self.rng.uniform(rest[0], rest[1]))
        return params

    def ask(self) -> _Handle:
        params = self.queue.pop(0) if self.queue else self.sample()
        for _ in range(100):  # redraw combinations that cannot run
            if self.feasible(params):
                break
            params = self.sample()

        best = -math.inf

        def should_prune(step: int, score: float) -> bool:
            nonlocal best
            best = max(best, score)
            return step > self.warmup and median_stop(self.curves, step, best, self.startup)

        def finish(state: str, score: float | None, curve: list[float]) -> None:
            if state == "complete":  # as Optuna's pruners: finished trials are the reference
                self.curves.append(list(curve))

        return _Handle(params, should_prune, finish)


def median_stop(curves: list[list[float]], step: int, best: float, startup: int) -> bool:
    """Stop when ``best`` (the trial's best score up to ``step``, 1-based) is below the median
    of the completed trials' scores at that step; only once ``startup`` of them reached it."""
    at_step = [c[step - 1] for c in curves if len(c) >= step]
    return len(at_step) >= startup and best < statistics.median(at_step)


class OptunaSearcher:
    """Optuna's TPE sampler and median pruner through its ask-and-tell interface."""

    name = "optuna"

    def __init__(self, space: dict[str, Any], seed: int, startup: int, warmup: int) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.space = space
        self.study = optuna.create_study(
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup),
        )

    def enqueue(self, params: dict[str, Any]) -> None:
        self.study.enqueue_trial(params)

    def ask(self) -> _Handle:
        trial = self.study.ask()
        params: dict[str, Any] = {}
        for name, spec in self.space.items():
            kind, *rest = spec
            if kind == "categorical":
                params[name] = trial.suggest_categorical(name, rest)
            else:
                params[name] = trial.suggest_float(name, rest[0], rest[1], log=kind == "log")

        def should_prune(step: int, score: float) -> bool:
            trial.report(score, step)
            return trial.should_prune()

        def finish(state: str, score: float | None, _curve: list[float]) -> None:
            states = self.optuna.trial.TrialState
            if state == "complete":
                self.study.tell(trial, score)
            elif state == "pruned":
                self.study.tell(trial, state=states.PRUNED)
            else:
                self.study.tell(trial, state=states.FAIL)

        return _Handle(params, should_prune, finish)


def make_searcher(
    backend: str,
    space: dict[str, Any],
    seed: int,
    startup: int,
    warmup: int,
    feasible: Callable[[dict[str, Any]], bool] | None = None,
):
    """Optuna when asked for or importable (``auto``), else random search. Neither prunes in
    the first ``warmup`` epochs of a trial, nor before ``startup`` trials have finished.
    Random search redraws combinations ``feasible`` rejects; under Optuna they fail at once and
    TPE learns to avoid them."""
    if backend in ("auto", "optuna"):
        try:
            import optuna  # noqa: F401
        except ImportError:
            if backend == "optuna":
                raise BadInputError(
                    "--backend optuna needs Optuna: pip install 'edgekd[tune]'"
                ) from None
        else:
            return OptunaSearcher(space, seed, startup, warmup)
    return RandomSearcher(space, seed, startup, warmup, feasible)
