"""Training threads that fit the machine: how many torch threads training uses, and why.

torch's default intra-op thread count is the machine's physical cores, whatever else runs there.
On a busy 2-core host (issue 15) a distillation epoch took 2.2 s at 1 thread and 13.0 s at 2, and
a default teacher trained in 804 s instead of about 50. So before the first training of a process,
a few steps of the model being trained are timed on real batches at 1 thread and at N = the cores
this process may use (``edgekd.hostinfo.usable_cores``), interleaved, and the faster count is kept
for intra-op (``torch.set_num_threads``) and inter-op threads. The decision is made once per
process and reused: the default teacher's training decides for the student's.

The trial never changes what training computes: it runs on a copy of the model, with its own
optimizer and batch order, and puts torch's random state back. It times the model's forward,
backward and optimizer step only, not the teacher's side: a teacher signal may be a black box
or train a peer of its own, and calling it would change what it holds.

Overrides, the first one set wins, each capped at the usable cores: a run's ``train_threads``
(``request_train_threads``, from ``DistillConfig.train_threads``), ``$EDGEKD_TRAIN_THREADS``,
``$OMP_NUM_THREADS`` (a person who set it has chosen). Under torchrun the workers keep the count
torchrun gave them (it sets ``OMP_NUM_THREADS=1`` per worker) unless overridden. A resumed
training goes on with the count in its checkpoint (``resume_threads``): float reductions are
split by thread count, and the resumed run must end bit-identical.
"""

from __future__ import annotations

import copy
import itertools
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgekd.errors import BadInputError
from edgekd.hostinfo import usable_cores

ENV = "EDGEKD_TRAIN_THREADS"
# More threads win only in under (1 - MARGIN) of one thread's time. The risks are lopsided: N
# threads gain at most N-fold, but lose 7-80x when another process takes a core (issue 15; 1.2 s
# against 15 ms a step on a loaded 2-core host), and a short trial can catch a quiet moment
# (benchmarks/engine.py: 2 threads 1.17x faster in a trial, 13x slower over the epochs before).
# Within the margin, one thread also leaves the machine's other work alone.
MARGIN = 0.25
TRIAL_SECONDS = 0.25  # time the rounds until this much has passed (and at least MIN_ROUNDS)
MIN_ROUNDS, MAX_ROUNDS = 2, 5
# First steps this many times slower than at the other count settle it without more rounds: on
# a loaded 2-core host one step at 2 threads took 1.2 s against 15 ms at 1.
DECISIVE = 10.0


@dataclass(frozen=True)
class ThreadChoice:
    """The threads training runs with, as torch reports them, and how they were chosen."""

    intra_op: int  # torch.get_num_threads() once chosen
    inter_op: int  # torch.get_num_interop_threads() once chosen
    usable_cores: int
    source: str  # measured | train_threads | EDGEKD_TRAIN_THREADS | OMP_NUM_THREADS | resumed ...
    why: str
    trial_ms_per_step: dict[int, float] = field(default_factory=dict)  # median, by thread count
    trial_seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.intra_op < 1 or self.inter_op < 1 or self.usable_cores < 1:
            raise ValueError(f"thread counts must be >= 1: {self}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "intra_op_threads": self.intra_op,
            "inter_op_threads": self.inter_op,
            "usable_cores": self.usable_cores,
            "source": self.source,
            "why": self.why,
            "trial_ms_per_step": {str(k): round(v, 3) for k, v in self.trial_ms_per_step.items()},
            "trial_seconds": round(self.trial_seconds, 3),
        }


# Process-wide, as torch's thread settings are.
_requested: int | None = None
_measured: tuple[int, dict[int, float], float, str] | None = None  # count, timings, seconds, why
_current: ThreadChoice | None = None


def request_train_threads(threads: int | None) -> None:
    """This process's training thread count from now on (a run's ``train_threads``); None: the
    environment's override if any, else measured."""
    global _requested
    if threads is not None and threads < 1:
        raise BadInputError(f"train_threads must be >= 1, got {threads}")
    _requested = threads


def forget_measurement() -> None:
    """Measure again before the next training (benchmarks; a process's load rarely changes
    enough to be worth the trial twice)."""
    global _measured
    _measured = None


def current_choice() -> ThreadChoice | None:
    """The choice the last training in this process ran with (None: none trained yet)."""
    return _current


def fit_training_threads(
    trial: Callable[[], Callable[[], None]] | None = None, distributed: bool = False
) -> ThreadChoice:
    """Set torch's training threads and say why: an override, else (one process) the faster of
    1 and N threads over ``trial()``'s steps, measured once per process. ``trial()`` returns one
    training step that has no effect outside itself (see :func:`model_step_trial`)."""
    global _current, _measured
    cores = usable_cores()
    override = _override()
    if override is not None:
        source, wanted = override
        threads = min(wanted, cores)
        capped = f", capped at {cores} usable cores" if threads < wanted else ""
        _current = _apply(threads, cores, source, f"{source}={wanted}{capped}")
    elif distributed:
        threads = torch.get_num_threads()
        _current = _apply(threads, cores, "distributed", "torchrun's per-worker count, kept")
    elif cores == 1:
        _current = _apply(1, cores, "one usable core", "1 usable core: nothing to measure")
    else:
        if _measured is None:
            _measured = _measure(trial, cores)
        threads, timings, seconds, why = _measured
        _current = _apply(threads, cores, "measured", why, timings, seconds)
    return _current


def resume_threads(threads: int) -> ThreadChoice | None:
    """Go on with the intra-op count an interrupted training ran with, whatever was chosen now:
    torch splits float reductions by thread count, so another count would not end bit-identical
    to the run that was never stopped."""
    global _current
    if torch.get_num_threads() == threads:
        return _current
    was = f"{_current.intra_op} ({_current.source})" if _current else str(torch.get_num_threads())
    why = f"resumed: the interrupted run's {threads}, not {was}, so that it ends bit-identical"
    _current = _apply(threads, usable_cores(), "resumed", why)
    return _current


def model_step_trial(model: nn.Module, batches: Sequence[Sequence[torch.Tensor]]):
    """A training step of a copy of ``model`` (forward, backward, AdamW) cycling over
    ``batches``; the stand-in loss costs what any loss on the output costs."""
    clone = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(clone.parameters(), lr=1e-3)
    cycle = itertools.cycle(batches)

    def step() -> None:
        out = clone(*next(cycle))
        opt.zero_grad(set_to_none=True)
        out.float().square().mean().backward()
        opt.step()

    return step


def time_steps(step: Callable[[], None], counts: Sequence[int]) -> tuple[dict[int, float], float]:
    """Median milliseconds per ``step`` at each thread count, interleaved round by round (a
    machine whose load changes meanwhile affects every count alike), after one warm-up step
    each; and the seconds it all took. When one count's warm-up is ``DECISIVE`` times slower
    than another's, the warm-ups are the answer (each further step there would cost as much)."""
    start = time.perf_counter()
    times: dict[int, list[float]] = {n: [] for n in counts}
    for n in counts:  # warm-up: first-call allocations and kernel selection
        torch.set_num_threads(n)
        t0 = time.perf_counter()
        step()
        times[n].append(1e3 * (time.perf_counter() - t0))
    first = [t[0] for t in times.values()]
    if max(first) > DECISIVE * min(first):
        return {n: t[0] for n, t in times.items()}, time.perf_counter() - start
    times = {n: [] for n in counts}
    for rounds in range(1, MAX_ROUNDS + 1):
        for n in counts:
            torch.set_num_threads(n)
            t0 = time.perf_counter()
            step()
            times[n].append(1e3 * (time.perf_counter() - t0))
        if rounds >= MIN_ROUNDS and time.perf_counter() - start >= TRIAL_SECONDS:
            break
    return {n: statistics.median(t) for n, t in times.items()}, time.perf_counter() - start


def _override() -> tuple[str, int] | None:
    if _requested is not None:
        return "train_threads", _requested
    for name in (ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value:
            try:
                threads = int(value)
            except ValueError:
                threads = 0
            if threads < 1:
                raise BadInputError(f"${name} must be a whole number >= 1, got {value!r}")
            return name, threads
    return None


def _measure(trial, cores: int) -> tuple[int, dict[int, float], float, str]:
    """The faster of 1 and ``cores`` threads over a few steps; torch's RNG and thread count are
    as before afterwards."""
    if trial is None:
        return 1, {}, 0.0, "no trial step given: 1 thread"
    rng, before = torch.get_rng_state(), torch.get_num_threads()
    try:
        timings, seconds = time_steps(trial(), (1, cores))
    except Exception as exc:  # a model the trial cannot copy or run: training will say why
        return before, {}, 0.0, f"trial failed ({type(exc).__name__}): torch's {before} kept"
    finally:
        torch.set_rng_state(rng)
        torch.set_num_threads(before)
    one, many = timings[1], timings[cores]
    if many < one * (1 - MARGIN):
        why = f"{cores} threads: {many:.1f} ms/step vs {one:.1f} ms at 1 ({one / many:.2f}x)"
        return cores, timings, seconds, why
    why = f"1 thread: {one:.1f} ms/step vs {many:.1f} ms at {cores}"
    if many < one:
        why += f" (faster by {one / many:.2f}x, under the {1 / (1 - MARGIN):.2f}x more needs)"
    else:
        why += f" ({many / one:.2f}x slower)"
    return 1, timings, seconds, why


def _apply(threads: int, cores: int, source: str, why: str, timings=None, seconds=0.0):
    torch.set_num_threads(threads)
    try:  # torch allows it once, before any inter-op work; the count that applies is recorded
        torch.set_num_interop_threads(threads)
    except RuntimeError:
        pass
    inter = torch.get_num_interop_threads()
    if inter != threads:
        why += f"; inter-op stays {inter} (torch sets it only before its pool starts)"
    return ThreadChoice(
        torch.get_num_threads(), inter, cores, source, why, dict(timings or {}), seconds
    )
