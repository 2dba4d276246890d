"""Distillation methods: every registered method trains a student on toy data, layer pairing
(defaults, --pair, adapters, pooling, clear errors), schedules and the `edgekd methods` command.

The method list comes from the registry, so a new method file is tested without editing this one.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from toydata import FAST, test_accuracy, tiny_student, toy_bundle, toy_teacher
from typer.testing import CliRunner

import edgekd.losses as losses
from edgekd.cli import app
from edgekd.distill import DEFAULT_TEMPERATURE, MethodOptions
from edgekd.distill.methods import DistillBatch, Method, all_methods, get_method, make_method
from edgekd.distill.pairing import LayerPair, align_spatial, parse_pair, parse_pairs, pooled
from edgekd.distill.strategies import DistillJob, run_strategy
from edgekd.errors import BadInputError
from edgekd.teacher.outputs import TeacherOutputs
from edgekd.train.loop import TrainConfig, predict_logits
from edgekd.train.taps import capture

METHODS = sorted(all_methods())


@pytest.fixture(scope="module")
def toy():
    return toy_bundle()


@pytest.fixture(scope="module")
def teacher(toy):
    return toy_teacher(toy)


@pytest.mark.parametrize("name", METHODS)
def test_every_method_trains_a_student_from_the_teacher(name, toy, teacher):
    student = tiny_student()
    before = test_accuracy(student, toy)
    cfg = replace(FAST, alpha=get_method(name).default_alpha)
    result = run_strategy("offline", DistillJob(teacher, student, toy, cfg, name))
    assert all(math.isfinite(v) for v in result.history.loss)
    after = test_accuracy(result.student, toy)
    assert after > before + 0.15, (before, after)


@pytest.mark.parametrize("name", METHODS)
def test_every_method_is_documented(name):
    cls = get_method(name)
    assert cls.name == name and cls.description and "https://" in cls.paper
    assert 0.0 <= cls.default_alpha <= 1.0 and cls.default_weight > 0
    assert cls.__module__ == f"edgekd.distill.methods.{name}"  # one file per method, same name
    if cls.loss_function is not None:  # one paper, one file: its loss function sits above it
        assert cls.loss_function.__module__ == cls.__module__


def test_losses_publishes_every_method_loss_function():
    published = {
        cls.loss_function.__name__: cls.loss_function
        for cls in all_methods().values()
        if cls.loss_function is not None
    }
    assert sorted(published) == losses.__all__
    assert all(getattr(losses, name) is fn for name, fn in published.items())


@pytest.mark.parametrize("name", METHODS)
def test_every_method_loss_is_zero_when_student_is_teacher(name, toy, teacher):
    if getattr(get_method(name), "teacher_sequences", False):
        pytest.skip("a cross-entropy on the teacher's tokens (seqkd), not a divergence")
    method = make_method(name)
    method.setup(teacher, teacher, {"x": toy.train.inputs["x"][:8]})
    if hasattr(method, "adapters"):  # make the regressor the identity
        for a in method.adapters:
            if a.weight.dim() > 2:
                torch.nn.init.dirac_(a.weight)
            else:
                torch.nn.init.eye_(a.weight)
            torch.nn.init.zeros_(a.bias)
    x = torch.from_numpy(toy.train.inputs["x"][:16])
    teacher.eval()
    with torch.no_grad(), capture(teacher, method.student_taps + method.teacher_taps) as feats:
        logits = teacher(x)
    batch = DistillBatch(logits, logits, torch.from_numpy(toy.train.y[:16]), feats, feats, 5, 10)
    assert float(method.loss(batch).detach()) == pytest.approx(0.0, abs=1e-5)


def test_methods_command_lists_the_registry():
    result = CliRunner().invoke(app, ["methods", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [m["name"] for m in data["methods"]] == METHODS
    assert {s["name"] for s in data["strategies"]} >= {
        "offline",
        "online",
        "self",
        "assistant",
        "blackbox",
    }
    table = CliRunner().invoke(app, ["methods"])
    assert table.exit_code == 0 and "Hinton" in table.output


def test_unknown_method_is_a_clear_error():
    with pytest.raises(BadInputError, match="unknown method 'nope'.*known: at, .*dkd"):
        make_method("nope")


# ---------------------------------------------------------------- schedules and weights


def test_temperature_schedule_is_linear_from_start_to_end():
    m = make_method("kd", temperature=8.0, temperature_end=2.0)
    assert [m.temperature_at(e, 4) for e in range(4)] == [8.0, 6.0, 4.0, 2.0]
    assert make_method("kd", temperature=4.0).temperature_at(3, 4) == 4.0
    with pytest.raises(BadInputError, match="temperature must be > 0"):
        make_method("kd", temperature=0.0)


@pytest.mark.parametrize("field", ["temperature", "temperature_end"])
def test_temperatures_are_checked_once_where_method_options_are_built(field):
    # One check, one line: a run's MethodOptions and a direct make_method() share it.
    message = f"^{field} must be > 0, got -1.0$"
    with pytest.raises(BadInputError, match=message):
        MethodOptions(**{field: -1.0})
    with pytest.raises(BadInputError, match=message):
        make_method("kd", **{field: -1.0})
    with pytest.raises(BadInputError, match=message):
        DistillJob(None, tiny_student(), None, FAST, "kd", {field: -1.0})
    assert MethodOptions.field_problems({field: 0}) == [(field, "must be > 0, got 0")]
    assert MethodOptions().temperature == DEFAULT_TEMPERATURE == make_method("kd").temperature


def test_job_method_options_are_typed():
    job = DistillJob(None, tiny_student(), None, FAST, "fitnet", {"pairs": ["features:features"]})
    assert job.method_options == MethodOptions(pairs=("features:features",))
    assert DistillJob(None, tiny_student(), None, FAST).method_options == MethodOptions()


def test_kd_uses_the_scheduled_temperature():
    from edgekd.losses import kd

    s, t = torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[0.0, 2.0, 0.0]])
    m = make_method("kd", temperature=8.0, temperature_end=2.0, weight=3.0)
    got = m.loss(DistillBatch(s, t, None, epoch=3, epochs=4))
    assert float(got) == pytest.approx(3.0 * float(kd(s, t, 2.0)))


def test_dkd_warmup_follows_mdistiller():
    # mdistiller: min(epoch / warmup, 1) with 1-based epochs; warm-up 20 of 240 by default.
    m = make_method("dkd", warmup=4)
    assert [m.warmup_factor(e, 10) for e in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    default = make_method("dkd")
    assert default.warmup_factor(0, 240) == pytest.approx(1 / 20)
    assert default.warmup_factor(19, 240) == 1.0
    assert default.warmup_factor(0, 6) == 1.0  # never less than one epoch of warm-up


def test_dkd_needs_labels():
    m = make_method("dkd")
    with pytest.raises(BadInputError, match="needs class labels"):
        m.loss(DistillBatch(torch.zeros(2, 3), torch.zeros(2, 3), None))


# ---------------------------------------------------------------- one method object per student


@pytest.fixture
def built(monkeypatch):
    """The Method instances built while a test runs."""
    made = []
    init = Method.__init__

    def counting(self, *args, **kwargs):
        made.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(Method, "__init__", counting)
    return made


@pytest.mark.parametrize("name", METHODS)
def test_offline_teaches_from_the_prepared_outputs_unless_the_method_taps_layers(
    name, toy, teacher, built
):
    outputs = TeacherOutputs(predict_logits(teacher, toy.train), predict_logits(teacher, toy.val))
    cfg = replace(FAST, epochs=1, alpha=get_method(name).default_alpha)
    job = DistillJob(teacher, tiny_student(), toy, cfg, name, outputs=outputs)
    signal = run_strategy("offline", job).info["teacher_signal"]
    cached = signal == "teacher outputs computed once (cached)"
    assert cached is not get_method(name).needs_layers, signal
    assert len(built) == 1  # one method object for the one student, whichever signal


def test_one_method_object_per_student(toy, teacher, built):
    run_strategy("offline", DistillJob(teacher, tiny_student(), toy, FAST, "kd"))
    assert len(built) == 1
    built.clear()
    run_strategy("online", DistillJob(teacher, tiny_student(), toy, FAST, "kd"))
    assert len(built) == 2  # the student and its peer each learn from the other


# ---------------------------------------------------------------- layer pairing


def test_parse_pair_and_defaults():
    assert parse_pair("features.1:features.3") == LayerPair("features.1", "features.3")
    assert parse_pairs(None) == (LayerPair("features", "features"),)
    assert parse_pairs(["a:b", LayerPair("c", "d")]) == (LayerPair("a", "b"), LayerPair("c", "d"))
    for bad in ("features", "a:b:c", ":b", "a: "):
        with pytest.raises(BadInputError, match="STUDENT_LAYER:TEACHER_LAYER"):
            parse_pair(bad)


def test_align_spatial_pools_the_larger_map_and_pooled_gives_embeddings():
    s, t = torch.ones(2, 3, 8, 8), torch.arange(2 * 5 * 4 * 4.0).reshape(2, 5, 4, 4)
    a, b = align_spatial(s, t)
    assert a.shape == (2, 3, 4, 4) and b is t
    assert pooled(t).shape == (2, 5)
    assert pooled(t)[0, 0] == pytest.approx(float(t[0, 0].mean()))
    v = torch.ones(2, 7)
    assert pooled(v) is v


def test_named_pairs_bridge_widths_and_spatial_sizes(toy, teacher):
    # student features.0 is the stem (4 channels, 8x8); teacher features.4 is 16 channels, 4x4
    student = tiny_student()
    method = make_method("fitnet", pairs=["features.0:features.4"])
    method.setup(student, teacher, {"x": toy.train.inputs["x"][:8]})
    assert method.student_taps == ("features.0",) and method.teacher_taps == ("features.4",)
    assert method.adapters[0].in_channels == 4 and method.adapters[0].out_channels == 16
    cfg = TrainConfig(epochs=2, lr=1e-2, batch_size=16, alpha=0.5)
    job = DistillJob(
        teacher,
        student,
        toy,
        cfg,
        "fitnet",
        MethodOptions(pairs=("features.0:features.4", "features:features")),
    )
    result = run_strategy("offline", job)
    assert result.info["method"]["pairs"] == ["features.0:features.4", "features:features"]
    assert "live teacher" in result.info["teacher_signal"]


def test_fitnet_pools_a_feature_map_against_a_vector(toy, teacher):
    student = tiny_student("mlp")  # its features are (B, 16) vectors
    method = make_method("fitnet")
    method.setup(student, teacher, {"x": toy.train.inputs["x"][:8]})
    assert isinstance(method.adapters[0], torch.nn.Linear)


def test_unbridgeable_pair_names_both_layers_and_shapes(toy, teacher):
    method = make_method("at")
    with pytest.raises(BadInputError) as err:
        method.setup(tiny_student("mlp"), teacher, {"x": toy.train.inputs["x"][:8]})
    msg = str(err.value)
    assert (
        "student layer 'features' (8, 16)" in msg
        and "teacher layer 'features' (8, 16, 4, 4)" in msg
    )


def test_unknown_layer_says_which_model_and_how_to_fix(toy, teacher):
    method = make_method("sp", pairs=["features.9:features"])
    with pytest.raises(BadInputError, match="student layer 'features.9' not found.*--pair"):
        method.setup(tiny_student(), teacher, {"x": toy.train.inputs["x"][:8]})


def test_feature_method_refuses_a_teacher_without_activations(toy):
    with pytest.raises(BadInputError, match="needs the teacher's activations"):
        make_method("rkd").setup(tiny_student(), None, {"x": toy.train.inputs["x"][:8]})


def test_rkd_ignores_a_last_batch_of_one():
    m = make_method("rkd")
    one = torch.ones(1, 4, requires_grad=True)
    loss = m.loss(DistillBatch(torch.zeros(1, 3), torch.zeros(1, 3), None, {"features": one},
                               {"features": torch.ones(1, 4)}))  # fmt: skip
    assert float(loss.detach()) == 0.0


def test_pairs_are_refused_by_logit_methods():
    with pytest.raises(BadInputError, match="--pair applies only to feature methods"):
        make_method("kd", pairs=["features:features"])
    assert make_method("kd", pairs=()).name == "kd"
