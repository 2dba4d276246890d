"""``tune``: search distillation settings within a time budget; write the winner as a run config.

Searched (for the run's data, teacher and sized student, all fixed and prepared once by
``edgekd.pipeline.prepare_run``, as ``distill`` prepares them): temperature, alpha, peak
learning rate, augmentation level and logit method. Each trial trains the student exactly as
``edgekd distill`` would (``edgekd.distill.job``) and is scored on validation accuracy
(agreement with the teacher where the validation split has no labels). The first trial is the
defaults, so tuning never reports a winner worse than them on validation.

Backends (``edgekd.tune.search``), same interface: Optuna (TPE sampler and median pruner;
``pip install edgekd[tune]``) when importable, else random search with the same median-stop
rule: after ``warmup`` epochs (default: half of them, past the one-cycle peak, where early scores
say little) and once ``startup`` trials have completed, a trial whose best score so far is below
the median of the completed trials' scores at the same epoch is stopped. Combinations that
cannot run (a method that needs labels with mixed views) are redrawn by random search and fail at
once under Optuna. Classification only: a causal-LM configuration or report is refused in one
line (``LM_REFUSAL``); an LM search (its methods, top-k, steps, scored on perplexity) would be a
feature of its own.

The budget covers everything (teacher, sizing, trials): no trial starts once it is spent, and a
running trial is stopped at its next epoch boundary. Written to ``out``: ``tune.json`` (every
trial, the winner, the search space, timings) and ``run.toml`` (``edgekd distill --config``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.errors import BadInputError
from edgekd.fileio import write_json_atomic, write_text_atomic
from edgekd.tune.search import OptunaSearcher, RandomSearcher, make_searcher, median_stop

if TYPE_CHECKING:
    from edgekd.pipeline import PreparedRun

__all__ = [
    "OptunaSearcher",
    "RandomSearcher",
    "TrialRecord",
    "TrialRunner",
    "TuneResult",
    "TuneSettings",
    "check_config_file",
    "make_searcher",
    "median_stop",
    "run_toml",
    "tune",
]

BACKENDS = ("auto", "optuna", "random")
# Tuning an LM would search its own space (method fkl/rkl/gkd/seqkd, temperature, alpha, top-k,
# steps) scored on validation perplexity: a feature of its own, not this search with new names.
LM_REFUSAL = (
    "tune searches classifier distillation settings (temperature, alpha, learning rate, "
    "augmentation, logit method) for --task classification; causal-LM runs are not tuned: set "
    "--method, --temperature, --alpha and --lr on edgekd distill --task causal-lm"
)
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
        from edgekd.config import DistillConfig

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
    check_tunable(config)  # before anything is made or prepared
    start = time.monotonic()
    deadline = start + settings.budget_s
    out = Path(out) if out else Path("runs") / f"tune-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and any(out.iterdir()):
        raise BadInputError(f"{out}: exists and is not empty; pick another --out")
    runner = TrialRunner.prepare(config)
    if config.epochs is None:  # every trial runs the same (patient) schedule
        config = runner.patient_schedule()
    setup_s = time.monotonic() - start
    space = runner.space(settings.methods)
    warmup = settings.warmup_epochs
    warmup = max(1, config.epochs // 2) if warmup is None else warmup
    searcher = make_searcher(
        settings.backend, space, config.seed, settings.startup_trials, warmup, runner.feasible
    )
    backend = searcher.name
    trials: list[TrialRecord] = []
    searcher.enqueue(runner.defaults)
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
            record.score = runner.evaluate(handle.params, on_epoch)
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
        runner.metric,
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
    from edgekd.config import DistillConfig

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


def check_config_file(path: str | None) -> None:
    """Refuse a causal-LM report given as ``--config`` (tune reads a run's TOML configuration)."""
    from edgekd.gate.inputs import lm_report

    if path is not None and lm_report(path) is not None:
        raise BadInputError(f"{path}: a causal-LM report; {LM_REFUSAL}")


def check_tunable(config) -> None:
    """What tuning searches: a PyTorch teacher, classification, the offline strategy, one seed
    and logit methods; anything else is refused before the teacher is prepared."""
    if config.teacher_onnx or config.teacher_cmd:
        raise BadInputError("tune needs a PyTorch teacher (not --teacher-onnx/--teacher-cmd)")
    if config.task == "causal-lm":
        raise BadInputError(LM_REFUSAL)
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


class TrialRunner:
    """What every trial shares, prepared once as ``distill`` prepares a run
    (``edgekd.pipeline.prepare_run``: data, teacher outputs, the sized student), and one trial's
    training on it."""

    def __init__(self, run: PreparedRun) -> None:
        self.run = run
        val = run.data.val
        self.metric = (
            "validation accuracy" if val.y is not None else "validation agreement with the teacher"
        )
        self.reference = val.y if val.y is not None else run.teaching.val_outputs.argmax(-1)

    @classmethod
    def prepare(cls, config) -> TrialRunner:
        from edgekd.pipeline import prepare_run

        check_tunable(config)
        return cls(prepare_run(config))

    def patient_schedule(self):
        """The run's configuration with the patient schedule's epochs for its data (the step
        budget of augmented views, ``edgekd.distill.job.default_epochs``), which every trial
        runs and run.toml keeps."""
        from edgekd.distill.job import default_epochs

        config = self.run.config
        epochs = default_epochs("strong", self.run.data.train.n, config.batch_size)
        self.run = dataclasses.replace(self.run, config=dataclasses.replace(config, epochs=epochs))
        return self.run.config

    @property
    def defaults(self) -> dict[str, Any]:
        """The first trial: what a plain ``edgekd distill`` with this config would use."""
        from edgekd.distill.methods import get_method

        config = self.run.config
        method = config.method or "kd"
        cls = get_method(method)
        level = self._augment(config.augment, cls.needs_labels)
        alpha = cls.default_alpha if config.alpha is None else config.alpha
        return {
            "temperature": config.temperature,
            "alpha": alpha,
            "lr": config.lr,
            "augment": level,
            "method": method,
        }

    def feasible(self, params: dict[str, Any]) -> bool:
        """False for a method that needs labels with views that have none (mixup)."""
        from edgekd.distill.methods import get_method

        try:
            self._augment(params["augment"], get_method(params["method"]).needs_labels)
        except BadInputError:
            return False
        return True

    def _augment(self, level: str | None, needs_labels: bool) -> str:
        from edgekd.distill.views import choose_augment

        teaching = self.run.teaching
        args = (teaching.data.input_kind, "classification", "offline", teaching.params)
        return choose_augment(level, *args, needs_labels)[0]

    def space(self, methods: tuple[str, ...]) -> dict[str, Any]:
        from edgekd.data.augment import LEVELS, make_augmenter

        data = self.run.data
        levels = ["none"]
        for level in LEVELS[1:]:
            try:
                make_augmenter(data.input_kind, level)
                levels.append(level)
            except BadInputError:
                pass
        usable = [m for m in methods if m != "dkd" or data.train.y is not None]
        return {
            **{k: list(v) for k, v in NUMERIC_SPACE.items()},
            "augment": ["categorical", *levels],
            "method": ["categorical", *usable],
        }

    def evaluate(self, params: dict[str, Any], on_epoch: Callable[[float], None]) -> float:
        """Train the student as ``distill`` would with ``params``; its validation score."""
        from edgekd.config import DistillConfig
        from edgekd.distill.job import make_job
        from edgekd.distill.strategies import run_strategy
        from edgekd.train.loop import predict_logits

        run = self.run
        config = DistillConfig(**{**dataclasses.asdict(run.config), **params})
        student, _ = run.seeded_student()  # as distill: the same seed, the same initial weights
        job, _ = make_job(config, run.teaching, student, run.strategy, config.method)
        val = run.data.val

        def score(model) -> float:
            return float((predict_logits(model, val).argmax(-1) == self.reference).mean())

        job = dataclasses.replace(job, on_epoch=lambda m: on_epoch(score(m)))
        return score(run_strategy(run.strategy, job).student)
