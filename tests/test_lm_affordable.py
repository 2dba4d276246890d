"""What training can afford (``edgekd.lm.affordable``): the student capped by a training budget,
worked by hand on a given throughput; the budget's default and ``--time-budget``; the words and
fields that say which limit chose the student; a resumed run keeping the student it chose."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from edgekd.config import DistillConfig
from edgekd.lm.affordable import (
    Throughput,
    TrainingBudget,
    TrainingCap,
    measure_training_throughput,
    training_budget,
    training_flops,
)
from edgekd.lm.sizing import size_lm_student
from edgekd.lm.student import LMStudentConfig
from edgekd.targets import DeviceSpec, LMBudget

# 600 steps of 16 blocks x 128 tokens = 1,228,800 tokens at 1e9 FLOP/s.
STEPS, TOKENS = 600, 16 * 128
DEVICE = DeviceSpec(name="hand", fp32_gflops=10.0, int8_gops=20.0, memory_bandwidth_gbs=1.0,
                    op_overhead_us=0.0, call_overhead_us=0.0)  # fmt: skip


def _cap(seconds: float) -> TrainingCap:
    return TrainingCap(TrainingBudget(seconds, "a test's"), Throughput(1e9, source="given"),
                       STEPS, TOKENS)  # fmt: skip


def _size(cap: TrainingCap | None, max_params: int | None = None):
    # no device line set: only the teacher share and the training budget bound the student
    return size_lm_student(LMBudget(), DEVICE, vocab_size=1000, context=128, dims=(32, 64),
                           layers=(1, 2), max_params=max_params, training=cap)  # fmt: skip


def test_training_flops_by_hand():
    # dim 32 (1 head of 32, ffn 96), 2 layers, vocabulary 1000, context 128: MatMul weights per
    # layer q,o 2*32*32 + k,v 2*32*32 + ffn 3*32*96 = 13,312; output projection 1000*32 = 32,000;
    # attention scores n_layer * n_ctx * d = 2*128*32 = 8,192 (Kaplan et al. 2020, Table 1).
    c = LMStudentConfig(vocab_size=1000, dim=32, n_layers=2, n_heads=1, n_kv_heads=1,
                        ffn_hidden=96, context=128)  # fmt: skip
    per_token = 6 * (2 * 13_312 + 32_000 + 8_192)  # 400,896
    assert training_flops(c, TOKENS, STEPS) == per_token * 1_228_800
    assert _cap(600).seconds(c) == pytest.approx(492.6, abs=0.1)  # 4.926e11 FLOP at 1e9/s
    # + the loss over the vocabulary: 1,228,800 tokens x 1,000 logits at 100 ns each = 122.9 s
    slow_loss = TrainingCap(TrainingBudget(600, "a test's"), Throughput(1e9, 1e-7), STEPS, TOKENS)
    assert slow_loss.seconds(c) == pytest.approx(492.6 + 122.9, abs=0.1)


def test_the_training_budget_caps_the_student_by_hand():
    # at 1e9 FLOP/s: dim 32 x 1 layer 364.3 s, dim 32 x 2 layers 492.6 s, dim 64 x 1 layer
    # (2 heads of 32, ffn 160: 47,104 + 64,000 + 8,192 per token) 879.5 s, dim 64 x 2 1,287 s.
    got = _size(_cap(600))
    assert (got.config.dim, got.config.n_layers) == (32, 2) and got.fits
    assert got.config.param_count() == 58_784  # 32,000 table + 2 * (13,312 + 64) + 32
    assert got.limits["chosen_by"] == "training"
    assert got.limits["training_max_params"] == 58_784
    assert got.limits["device_max_params"] > 58_784  # the device alone admits dim 64 x 2
    assert got.limits["training"]["estimate_s"] == pytest.approx(492.6, abs=0.1)
    assert "chosen by the training budget" in got.reason and "493 s of training" in got.reason
    assert "given 1.0 GFLOP/s" in got.reason


def test_a_wider_or_narrower_budget_moves_the_cap():
    wide = _size(_cap(900))
    assert (wide.config.dim, wide.config.n_layers) == (64, 1)  # 879.5 s fits, 1,287 s not
    narrow = _size(_cap(400))
    assert (narrow.config.dim, narrow.config.n_layers) == (32, 1)  # 364.3 s
    none = _size(_cap(100))  # not even the smallest: it is kept, and the reason says so
    assert (none.config.dim, none.config.n_layers) == (32, 1) and none.fits
    assert none.limits["chosen_by"] == "training"
    assert "no student's training fits the training budget" in none.reason
    unbounded = _size(None)
    assert (unbounded.config.dim, unbounded.config.n_layers) == (64, 2)
    assert unbounded.limits["chosen_by"] == "device" and "training" not in unbounded.limits


def test_the_teacher_share_when_it_binds_first():
    got = _size(_cap(900), max_params=60_000)  # the share admits dim 32 x 2 (58,784) only
    assert (got.config.dim, got.config.n_layers) == (32, 2)
    assert got.limits["chosen_by"] == "teacher_share"
    assert "chosen by the teacher share" in got.reason
    assert "the training budget alone admits 111,296" in got.reason


def test_the_default_budget_and_time_budget():
    assert training_budget(None, on_gpu=False, spent_s=600.0).seconds == 2400 - 600 - 400
    assert training_budget(None, on_gpu=False, spent_s=5000.0).seconds == 60  # at least a minute
    assert training_budget(None, on_gpu=True, spent_s=0.0).seconds is None
    given = training_budget(90.0, on_gpu=True, spent_s=0.0)
    assert given.seconds == 90.0 and given.why == "--time-budget 90 s"
    with pytest.raises(ValueError):
        Throughput(0.0)


def test_throughput_is_measured_once_per_process():
    import torch

    rng = torch.get_rng_state()
    first = measure_training_throughput()
    assert first.flops_per_s > 0 and first.source == "measured" and first.device == "cpu"
    assert measure_training_throughput() is first
    assert torch.equal(torch.get_rng_state(), rng)  # what training draws is unchanged


def _stub_run(tmp_path, time_budget):
    from edgekd.targets import load_target

    config = DistillConfig(task="causal-lm", time_budget=time_budget)
    teacher = SimpleNamespace(output_size=1000, params=10**9)
    return SimpleNamespace(config=config, target=load_target("mobile"), vocab=None,
                           teacher=teacher, train=[0] * 64,
                           settings={"context": 128, "batch_size": 16, "steps": STEPS})


@pytest.fixture
def steps_as_fast_as(monkeypatch):
    """The run's timed training steps (pipeline._step_seconds), stubbed: ``factor`` x the FLOPs
    estimate of the student's step at ``rate`` FLOP/s, plus ``per_layer`` seconds a layer (what
    FLOPs miss: attention over a long context)."""
    from edgekd.lm import pipeline

    def stub(factor: float, rate: float = 1e9, per_layer: float = 0.0) -> None:
        monkeypatch.setattr(pipeline, "_step_seconds", lambda run, c, teaching: factor * (
            training_flops(c, TOKENS, 1, 128) / rate) + per_layer * c.n_layers)  # fmt: skip

    stub(1.0)
    return stub


def test_the_run_sizes_to_time_budget_and_a_resume_keeps_the_student(tmp_path, monkeypatch,
                                                                      steps_as_fast_as):
    from edgekd.lm import affordable, pipeline

    monkeypatch.setattr(affordable, "measure_training_throughput",
                        lambda *args: Throughput(1e9, source="given"))
    run = _stub_run(tmp_path, time_budget=600.0)
    sizing = pipeline._size(run, spent_s=10.0, work=tmp_path, resume=False, teaching=None)
    assert sizing.limits["chosen_by"] == "training"
    assert "--time-budget 600 s" in sizing.reason
    assert sizing.limits["training"]["tokens_per_step"] == TOKENS
    wider = pipeline._size(_stub_run(tmp_path, 6000.0), 10.0, tmp_path / "w", resume=False,
                           teaching=None)
    assert wider.config.param_count() > sizing.config.param_count()
    # resumed: the saved choice, whatever the budget or the host says now
    again = pipeline._size(_stub_run(tmp_path, 6000.0), 10.0, tmp_path, resume=True, teaching=None)
    assert again.config == sizing.config and again.reason == sizing.reason
    saved = json.loads((tmp_path / pipeline.SIZING_FILE).read_text())
    assert saved["limits"]["training"]["budget_s"] == 600.0


def test_a_student_slower_than_estimated_is_sized_again(tmp_path, monkeypatch,
                                                        steps_as_fast_as):
    from edgekd.lm import affordable, pipeline

    monkeypatch.setattr(affordable, "measure_training_throughput",
                        lambda *args: Throughput(1e11, source="given"))
    steps_as_fast_as(2.0, rate=1e11)  # every student's steps take twice their estimate
    sizing = pipeline._size(_stub_run(tmp_path, 600.0), 10.0, tmp_path / "a", resume=False,
                            teaching=None)
    first, second = sizing.limits["calibration"]
    assert first["measured_step_s"] == pytest.approx(2 * first["estimated_step_s"], rel=1e-3)
    assert second["params"] < first["params"]  # sized again, smaller ...
    assert second["measured_step_s"] == pytest.approx(second["estimated_step_s"], rel=1e-3)
    assert sizing.limits["chosen_by"] == "training"
    assert sizing.limits["training"]["throughput"]["flops_per_s"] == pytest.approx(5e10)
    assert "calibrated (2.00 x" in sizing.limits["training"]["throughput"]["source"]
    # ... at half the rate: what half the budget affords at the probe's rate
    steps_as_fast_as(1.0, rate=1e11)
    half = pipeline._size(_stub_run(tmp_path, 300.0), 10.0, tmp_path / "b", resume=False,
                          teaching=None)
    assert sizing.config == half.config


def test_steps_shrink_when_not_even_the_smallest_affords_the_default(tmp_path, monkeypatch,
                                                                     steps_as_fast_as):
    from edgekd.lm import affordable, pipeline

    monkeypatch.setattr(affordable, "measure_training_throughput",
                        lambda *args: Throughput(1e8, source="given"))
    steps_as_fast_as(1.0, rate=1e8)  # as estimated
    run = _stub_run(tmp_path, time_budget=None)  # the default budget: 2400 - 10 - 400 s
    sizing = pipeline._size(run, spent_s=10.0, work=tmp_path, resume=False, teaching=None)
    # mobile's smallest at context 128: dim 64 x 2 layers, 2 * 47,104 + 64,000 + 2*128*64 =
    # 174,592 per token, 6 x that x 2,048 tokens = 2.145e9 FLOP a step: 21.45 s at 1e8 FLOP/s,
    # so 1,990 s afford 92 steps (not 600).
    assert (sizing.config.dim, sizing.config.n_layers) == (64, 2)
    assert run.settings["steps"] == 92 and sizing.limits["steps_fitted"] == 92
    assert sizing.limits["training"]["estimate_s"] <= 1990
    assert "so 92 steps instead of 600" in sizing.reason
    again = _stub_run(tmp_path, time_budget=None)
    pipeline._size(again, 10.0, tmp_path, resume=True, teaching=None)
    assert again.settings["steps"] == 92  # the resumed run trains the same schedule
    mine = _stub_run(tmp_path, time_budget=None)
    mine.config = DistillConfig(task="causal-lm", steps=600)  # --steps given: kept
    pipeline._size(mine, 10.0, tmp_path / "m", resume=False, teaching=None)
    assert mine.settings["steps"] == 600


def test_the_default_run_stops_training_at_the_budget_it_was_sized_for(tmp_path):
    from edgekd.lm import pipeline

    sized = SimpleNamespace(limits={"training": {"budget_s": 1234.0}})

    def budget(**given) -> float | None:
        run = _stub_run(tmp_path, given.pop("time_budget", None))
        run.config = DistillConfig(task="causal-lm", time_budget=run.config.time_budget, **given)
        run.settings.update(lr=3e-3, temperature=1.0)
        run.alpha = 0.1
        return pipeline._train_config(run, sized).time_budget

    assert budget() == 1234.0  # the steps are the run's own: its 40 minutes hold
    assert budget(steps=600) is None  # --steps: the user's number of steps, all of them
    assert budget(time_budget=90.0) == 90.0  # --time-budget: that


# Seconds a layer that FLOPs miss, in the stub below: at 1e9 FLOP/s the 3-layer first choice
# (2.825 s a step by FLOPs) steps in 4.625 s, 1.64 x; scaled by that, the 2-layer one (2.145 s)
# is estimated at 3.51 s but steps in 3.345 s: 1,990 s afford 594 of its steps, not 566.
PER_LAYER_S = 0.6


def test_the_student_timed_last_settles_its_own_steps(tmp_path, monkeypatch, steps_as_fast_as):
    # The scale run's case: FLOPs miss a per-layer cost, so the first choice, deep, steps slower
    # than estimated; the scale fitted to it overshoots the shallower second choice, whose own
    # steps then decide how many it trains (before: 395 steps run in about half the budget).
    from edgekd.lm import affordable, pipeline

    monkeypatch.setattr(affordable, "measure_training_throughput",
                        lambda *args: Throughput(1e9, source="given"))
    steps_as_fast_as(1.0, rate=1e9, per_layer=PER_LAYER_S)
    run = _stub_run(tmp_path, time_budget=None)  # 2400 - 10 - 400 = 1,990 s
    sizing = pipeline._size(run, spent_s=10.0, work=tmp_path, resume=False, teaching=None)
    first, second = sizing.limits["calibration"]
    assert first["measured_step_s"] > first["estimated_step_s"]
    assert second["params"] < first["params"]
    assert second["measured_step_s"] < second["estimated_step_s"]  # the first's scale overshot
    assert sizing.config.param_count() == second["params"]  # kept: no larger one untimed
    training = sizing.limits["training"]
    assert training["max_params"] == second["params"]
    per_step = second["measured_step_s"]
    steps = run.settings["steps"]
    assert steps == min(STEPS, int(training["budget_s"] / per_step)) == 594
    assert steps > int(training["budget_s"] / second["estimated_step_s"])  # 566 before
    assert training["estimate_s"] == pytest.approx(per_step * steps, rel=1e-3)
    assert "no student over the" in sizing.reason
