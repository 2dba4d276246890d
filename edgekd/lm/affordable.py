"""What training can afford: an LM student's training cost, the host's measured training
throughput, and the training-time budget that caps the student's size (issue 18's scale target:
a 135M teacher and 10,000 documents within 40 minutes on 2 CPU cores).

- **Cost** (Kaplan et al., "Scaling Laws for Neural Language Models", 2020, Table 1,
  https://arxiv.org/abs/2001.08361): a forward pass costs about ``2 N + 2 n_layer n_ctx d``
  FLOPs per token, ``N`` the weights every token multiplies by (the layers' MatMuls and the output
  projection, which in a small LM with a large vocabulary is a large share; the embedding gather
  is a lookup), the second term the attention scores; the backward pass twice the forward. So
  training costs ``6 (N + n_layer n_ctx d)`` FLOPs per token, times ``batch x context`` tokens a
  step, times the steps. Plus the loss over the vocabulary, which FLOPs do not count: the
  labels' cross-entropy and the method's log-sum-exps are memory-bound passes over ``tokens x
  vocabulary`` floats, timed per logit. At a 49,152-token vocabulary they were most of a step:
  without them a scale run's steps took about 5 times their estimate (README, "At scale").
- **Throughput**: a forward + backward pass of a small student (:data:`PROBE`, with the run's
  vocabulary), timed for
  about half a second at the run's device and precision, once per process, at the thread count
  training will use: on a CPU the process's training threads (``edgekd.train.threads``: 1 or N,
  the faster) are chosen on the probe when no training chose them before; on a loaded 2-core host
  2 threads ran the probe at 8.3 GFLOP/s and 1 thread at 51 (load 1.0), so a figure at torch's
  default count could be six times too low. Its FLOPs
  are counted with the same formula, so the figure is "formula FLOPs per second" and the formula's
  own errors mostly cancel. A small model runs its kernels less efficiently than a large one, so
  the figure is on the low side for a large student: the cap errs towards a student that trains
  in less time than its budget.
- **Budget**: ``--time-budget SECONDS`` (the option classifier runs read as seconds of training;
  it also stops LM training when spent) when given; else, on a CPU, the issue's 40-minute run
  less what the run spent before sizing (teacher, text, the top-k pass) and a margin for the
  stages after training; on a GPU none (training there is not the bottleneck).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

from edgekd.errors import BadInputError
from edgekd.lm.sizing import matmul_params
from edgekd.lm.student import LMStudentConfig

FLOPS_PER_PARAM_TOKEN = 6  # forward 2, backward 4 (Kaplan et al. 2020)
RUN_BUDGET_S = 2400.0  # issue 18: the default run within 40 minutes on 2 CPU cores
# Export with parity, quantization and the bench after training: 305 s of wall time with a 135M
# teacher in the scale run (load 2; the bench's 5 runs x 24 prefills of the teacher in ONNX are
# most of it), README "At scale"; 400 s, for a margin.
LATER_STAGES_S = 400.0
MIN_TRAINING_S = 60.0  # a run that spent its budget before training still trains a little
# Big enough that MatMuls dominate as they do in a student (a 4,096-wide output layer, 4 layers
# of 192), small enough that a step takes tens of milliseconds on 2 cores.
PROBE = LMStudentConfig(vocab_size=4096, dim=192, n_layers=4, n_heads=6, n_kv_heads=3,
                        ffn_hidden=512, context=128)  # fmt: skip
PROBE_BATCH = 4
PROBE_SECONDS = 0.5
PROBE_MIN_STEPS, PROBE_MAX_STEPS = 3, 20
# Tokens of the logit probe: enough for several of training's chunks at a large vocabulary
# (85 tokens of 49,152 logits, edgekd.lm.head), so that it times the chunks as training runs them.
LOGIT_TOKENS, LOGIT_TOP_K = 1024, 32


def training_flops(c: LMStudentConfig, tokens_per_step: int, steps: int,
                   context: int | None = None) -> float:  # fmt: skip
    """FLOPs of ``steps`` training steps of ``tokens_per_step`` tokens each at ``context``.

    >>> c = LMStudentConfig(vocab_size=10, dim=4, n_layers=1, n_heads=2, n_kv_heads=1,
    ...                     ffn_hidden=6, context=8)
    >>> training_flops(c, tokens_per_step=16, steps=2)  # 6 * (160 + 1*8*4) * 16 * 2
    36864.0
    """
    context = context or c.context
    per_token = FLOPS_PER_PARAM_TOKEN * (matmul_params(c) + c.n_layers * context * c.dim)
    return float(per_token) * tokens_per_step * steps


@dataclass(frozen=True)
class Throughput:
    """Training FLOPs per second on this host, as measured (or given, in tests)."""

    flops_per_s: float
    seconds_per_logit: float = 0.0  # the loss over the vocabulary, per token and vocab entry
    device: str = "cpu"
    threads: int = 1
    precision: str = "fp32"
    seconds: float = 0.0  # what measuring took
    source: str = "measured"
    scale: float = 1.0  # step seconds over the probe's estimate, as a student's own steps took

    def __post_init__(self) -> None:
        if not self.flops_per_s > 0:
            raise BadInputError(f"training throughput must be > 0 FLOP/s, got {self.flops_per_s}")
        if not self.seconds_per_logit >= 0:
            raise BadInputError(f"seconds per logit must be >= 0, got {self.seconds_per_logit}")

    def describe(self) -> str:
        return (f"{self.source} {self.flops_per_s / 1e9:.1f} GFLOP/s and "
                f"{self.seconds_per_logit * 1e9:.1f} ns per logit ({self.device}, "
                f"{self.threads} thread{'s' if self.threads != 1 else ''}, {self.precision})")


_measured: dict[tuple[str, int, str, int], Throughput] = {}  # per process, as torch's threads are


def measure_training_throughput(device: str = "cpu", precision: str = "fp32",
                                vocab_size: int = PROBE.vocab_size) -> Throughput:
    """Formula FLOPs per second of a forward + backward pass of :data:`PROBE` with the run's
    ``vocab_size`` at the threads training uses on ``device`` (a ``torch.device`` spec) in
    ``precision`` (``fp32``, ``bf16``, ``fp16``: autocast as training runs it); measured once
    per process and setting. torch's random state is as before afterwards.

    The run's vocabulary, because in a small student the output layer and the softmax over it
    are most of a step: its MatMul has a short inner dimension (the student's width) and runs
    below the rate of the layers' square ones (a 192-wide output layer of 49,152 tokens ran at
    22 GFLOP/s on one loaded core where the 4,096-token probe ran at 51; load 4); the loss over
    the vocabulary is timed on its own, per logit (:func:`_logit_step`).

    >>> measure_training_throughput().flops_per_s > 0  # doctest: +SKIP
    True
    """
    import torch

    dev = torch.device(device)
    start = time.perf_counter()
    if dev.type == "cpu":
        _fit_threads()
    key = (str(device), torch.get_num_threads(), precision, vocab_size)
    if key not in _measured:
        probe = dataclasses.replace(PROBE, vocab_size=vocab_size)
        per_logit = _median(_logit_step(vocab_size, dev)) / (LOGIT_TOKENS * vocab_size)
        seconds = _median(_probe_step(probe, dev, precision))
        # the probe's own loss over the vocabulary is counted by the logit term, not the rate
        matmuls = max(0.2 * seconds, seconds - PROBE_BATCH * PROBE.context * vocab_size * per_logit)
        flops = training_flops(probe, PROBE_BATCH * PROBE.context, 1)
        _measured[key] = Throughput(flops / matmuls, per_logit, str(device), key[1], precision,
                                    time.perf_counter() - start)  # fmt: skip
    return _measured[key]


def _fit_threads() -> None:
    """The process's training threads (``edgekd.train.threads``), chosen now on the probe when
    not chosen yet, so that the figure is for the threads training will run with. Training then
    reuses the choice (made once per process) instead of trialling its own, much larger, student:
    a few steps of a 38M student at a 512-token context cost about 230 CPU seconds."""
    import torch

    from edgekd.lm.student import LMStudent
    from edgekd.train.threads import fit_training_threads, model_step_trial

    rng = torch.get_rng_state()
    try:
        torch.manual_seed(0)
        probe = LMStudent(PROBE)
        x = torch.randint(0, PROBE.vocab_size, (PROBE_BATCH, PROBE.context))
    finally:
        torch.set_rng_state(rng)
    fit_training_threads(lambda: model_step_trial(probe, [[x]]))


def _median(make) -> float:
    """Median seconds of the step ``make()`` builds (a callable that returns the seconds it
    took), after one warm-up call (first-call allocations and kernel selection); torch's random
    state is as before afterwards."""
    import torch

    rng = torch.get_rng_state()
    try:
        torch.manual_seed(0)
        run = make()
        run()  # warm-up
        times, start = [], time.perf_counter()
        while len(times) < PROBE_MIN_STEPS or (
            time.perf_counter() - start < PROBE_SECONDS and len(times) < PROBE_MAX_STEPS
        ):
            times.append(run())
    finally:
        torch.set_rng_state(rng)
    return statistics.median(times)


def _probe_step(probe: LMStudentConfig, device, precision: str):
    """A builder of one timed forward + backward of the probe student (for :func:`_median`),
    its loss as training computes it (:func:`_loss_of`)."""

    def make():
        import torch

        from edgekd.lm.head import head_loss
        from edgekd.lm.student import LMStudent
        from edgekd.train.device import autocast

        model = LMStudent(probe).train().to(device)
        x = torch.randint(0, probe.vocab_size, (PROBE_BATCH, probe.context + 1)).to(device)
        loss_of = _loss_of(x[:, 1:].flatten(), probe.vocab_size, device)

        def step() -> float:
            t0 = time.perf_counter()
            model.zero_grad(set_to_none=True)
            with autocast(device, precision):
                loss = head_loss(model, x[:, :-1], loss_of)
            loss.backward()
            _sync(device)
            return time.perf_counter() - t0

        return step

    return make


def _logit_step(vocab_size: int, device):
    """The loss over :data:`LOGIT_TOKENS` tokens' logits, forward and backward, timed as
    training computes it (:func:`_loss_of`) behind an 8-wide output layer, whose MatMuls are a
    small part of it: the elementwise passes over ``tokens x vocabulary`` floats, memory-bound,
    that at 49,152 entries cost more than the output layer's MatMul of a 64-wide student. In
    float32 under every precision, as the loss runs."""

    def make():
        import torch
        from torch import nn

        from edgekd.lm.head import head_loss

        class Head(nn.Module):  # hidden states of its own, then an output layer
            def __init__(self) -> None:
                super().__init__()
                self.hidden = nn.Parameter(torch.randn(1, LOGIT_TOKENS, 8))
                self.lm_head = nn.Linear(8, vocab_size, bias=False)

            def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
                return self.hidden

        model = Head().to(device)
        y = torch.randint(0, vocab_size, (LOGIT_TOKENS,)).to(device)
        loss_of = _loss_of(y, vocab_size, device)
        ids = torch.zeros(1, LOGIT_TOKENS, dtype=torch.long, device=device)

        def step() -> float:
            t0 = time.perf_counter()
            model.zero_grad(set_to_none=True)
            head_loss(model, ids, loss_of).backward()
            _sync(device)
            return time.perf_counter() - t0

        return step

    return make


def _loss_of(labels, vocab_size: int, device):
    """Training's loss at scale on a chunk of logits (``edgekd.lm.train``): the labels'
    cross-entropy and the cached teacher's top-k view, from one softmax
    (``methods._tokens.top_k_scores``), for random top-k ids."""
    import torch

    from edgekd.distill.methods._tokens import top_k_scores

    k = min(LOGIT_TOP_K, vocab_size)
    index = torch.randint(0, vocab_size, (len(labels), k)).to(device)

    def loss_of(logits, part):
        buckets, ce = top_k_scores(logits, index[part], labels[part])
        return ce.sum() + buckets.mean()

    return loss_of


def _sync(device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class TrainingBudget:
    """Seconds training may take (None: no limit) and where the figure comes from."""

    seconds: float | None
    why: str

    def __post_init__(self) -> None:
        if self.seconds is not None and not self.seconds > 0:
            raise BadInputError(f"training budget must be > 0 seconds, got {self.seconds}")


def training_budget(time_budget: float | None, on_gpu: bool, spent_s: float) -> TrainingBudget:
    """``time_budget`` (``--time-budget``) when given; else on a GPU none, and on a CPU the
    issue's 40-minute run less ``spent_s`` (what the run spent before sizing) and
    :data:`LATER_STAGES_S`, at least :data:`MIN_TRAINING_S`.

    >>> training_budget(None, on_gpu=False, spent_s=600.0).seconds  # 2400 - 600 - 400
    1400.0
    """
    if time_budget is not None:
        return TrainingBudget(float(time_budget), f"--time-budget {time_budget:g} s")
    if on_gpu:
        return TrainingBudget(None, "no default training budget on a GPU")
    seconds = max(MIN_TRAINING_S, RUN_BUDGET_S - spent_s - LATER_STAGES_S)
    return TrainingBudget(seconds, (
        f"the run's {RUN_BUDGET_S / 60:.0f} minutes less {spent_s:.0f} s spent before sizing "
        f"and {LATER_STAGES_S:.0f} s kept for export, quantization and the bench"
    ))  # fmt: skip


@dataclass(frozen=True)
class TrainingCap:
    """The training limit of ``edgekd.lm.sizing.size_lm_student``: a student is affordable when
    ``steps`` steps of ``tokens_per_step`` tokens at ``context`` (the training blocks' length;
    None: the student's own) are estimated within ``budget``."""

    budget: TrainingBudget
    throughput: Throughput
    steps: int
    tokens_per_step: int
    context: int | None = None
    max_params: int | None = None  # no larger student: the calibration measured none

    def seconds(self, c: LMStudentConfig) -> float:
        """The estimated seconds of training ``c`` (an estimate: FLOPs over the throughput)."""
        flops = training_flops(c, self.tokens_per_step, self.steps, self.context)
        logits = self.tokens_per_step * self.steps * c.vocab_size
        return flops / self.throughput.flops_per_s + logits * self.throughput.seconds_per_logit

    def affords(self, c: LMStudentConfig) -> bool:
        if self.max_params is not None and c.param_count() > self.max_params:
            return False
        return self.budget.seconds is None or self.seconds(c) <= self.budget.seconds

    def steps_within(self, c: LMStudentConfig) -> int:
        """How many steps of ``c`` the budget affords (at least 1; all of them without one)."""
        if self.budget.seconds is None:
            return self.steps
        return max(1, int(self.budget.seconds / (self.seconds(c) / self.steps)))

    def step_seconds(self, c: LMStudentConfig) -> float:
        """The estimated seconds of one training step of ``c``."""
        return self.seconds(c) / self.steps

    def calibrated(self, c: LMStudentConfig, measured_step_s: float) -> TrainingCap:
        """This cap with the throughput scaled so that ``c``'s step is estimated at
        ``measured_step_s``, what its own training steps took (``edgekd.lm.train.
        time_training_steps``): the probe's FLOPs and logits do not count everything a
        student's step does (attention's softmax over the context, the norms, the optimizer),
        and its share differs with the student's shape."""
        if not measured_step_s > 0:
            raise ValueError(f"a measured training step must take > 0 s, got {measured_step_s}")
        ratio = measured_step_s / self.step_seconds(c)
        t = self.throughput
        scale = t.scale * ratio  # against the probe's own estimate, however many times calibrated
        scaled = dataclasses.replace(
            t, flops_per_s=t.flops_per_s / ratio, seconds_per_logit=t.seconds_per_logit * ratio,
            scale=scale,
            source=f"calibrated ({scale:.2f} x the probe's estimate on the student's own steps)",
        )  # fmt: skip
        return dataclasses.replace(self, throughput=scaled)

    def vouched_by(self, c: LMStudentConfig, measured_step_s: float) -> TrainingCap:
        """This cap calibrated on ``c``'s own steps, whichever way the estimate erred, and
        admitting no student larger than ``c``: the calibration holds for the student it timed,
        and a deeper one can cost more a step than FLOPs say (attention over a long context; at
        dim 64 and 512 tokens a step took 4.88 s with 12 layers, 2.33 s with 2, where FLOPs
        differ by 5%)."""
        return dataclasses.replace(self.calibrated(c, measured_step_s),
                                   max_params=c.param_count())  # fmt: skip

    def describe(self, c: LMStudentConfig) -> str:
        limit = "no limit" if self.budget.seconds is None else f"{self.budget.seconds:,.0f} s"
        ceiling = ("" if self.max_params is None else
                   f"; no student over the {self.max_params:,} params timed")  # fmt: skip
        return (f"{self.steps} steps of {self.tokens_per_step:,} tokens estimated at "
                f"{self.seconds(c):,.0f} s of training against {limit} ({self.budget.why}) at "
                f"{self.throughput.describe()}{ceiling}")

    def to_dict(self, c: LMStudentConfig) -> dict[str, Any]:
        return {"budget_s": self.budget.seconds, "budget_why": self.budget.why,
                "steps": self.steps, "tokens_per_step": self.tokens_per_step,
                "context": self.context or c.context,
                "estimate_s": round(self.seconds(c), 1), "kind": "estimate",
                "max_params": self.max_params, "throughput": asdict(self.throughput)}  # fmt: skip


def training_cap(time_budget: float | None, device: str, precision: str, spent_s: float,
                 steps: int, tokens_per_step: int, context: int,
                 vocab_size: int = PROBE.vocab_size) -> TrainingCap | None:  # fmt: skip
    """The cap for a run: None when there is no budget (a GPU without ``--time-budget``), else
    the budget with this host's measured throughput on ``device`` in ``precision``."""
    from edgekd.train.device import resolve_precision, training_device

    dev = training_device(device)
    budget = training_budget(time_budget, dev.type == "cuda", spent_s)
    if budget.seconds is None:
        return None
    measured = measure_training_throughput(str(dev), resolve_precision(precision, dev),
                                           vocab_size)
    return TrainingCap(budget, measured, steps, tokens_per_step, context)
