"""The searchers ``edgekd tune`` drives: Optuna's TPE sampler and median pruner, or random search
with the same median-stop rule. Both have one interface: ``enqueue(params)`` (a trial to run
first), ``ask() -> handle`` (its ``params``, ``should_prune(epoch, score)`` and
``finish(state, score, curve)``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np

from edgekd.errors import BadInputError


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
