"""Strategies on toy data: each one improves over the untrained student; the offline logit cache;
black-box teachers (ONNX file, command) in probs / top-k / labels modes, and their failures;
the hard-label fine-tune stage; choosing a strategy from the options."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from toydata import FAST, test_accuracy, tiny_student, toy_bundle, toy_teacher

from edgekd.cache import cache_dir
from edgekd.distill.strategies import (
    DistillJob,
    StrategyOptions,
    all_strategies,
    resolve_strategy,
    run_strategy,
)
from edgekd.distill.strategies.assistant import size_assistant
from edgekd.errors import BadInputError
from edgekd.students import count_params
from edgekd.teacher.blackbox import CommandTeacher, OutputMode, query, teacher_targets
from edgekd.teacher.outputs import module_outputs, weights_hash

TOY_TEACHER = Path(__file__).parent / "fixtures" / "toy_teacher.py"


@pytest.fixture(scope="module")
def toy():
    return toy_bundle()


@pytest.fixture(scope="module")
def teacher(toy):
    return toy_teacher(toy)


@pytest.fixture(scope="module")
def teacher_onnx(teacher, toy, tmp_path_factory) -> str:
    from edgekd.export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "teacher.onnx"
    export_onnx(teacher, path, {"x": toy.test.inputs["x"][:1]}, parity_inputs=toy.test.inputs)
    return str(path)


def command(emit: str) -> str:
    return f"{sys.executable} {TOY_TEACHER} --emit {emit}"


def run(name: str, toy, teacher, method: str = "kd", **options):
    student = tiny_student()
    before = test_accuracy(student, toy)
    job = DistillJob(teacher, student, toy, FAST, method, {}, StrategyOptions(**options))
    result = run_strategy(name, job)
    return before, test_accuracy(result.student, toy), result


# One entry per strategy: the option sets its improvement test runs with. A new strategy is one
# new file in edgekd/distill/strategies/ plus its line here (the test below fails until it has one).
STRATEGY_OPTIONS: dict[str, list[dict]] = {
    "offline": [{}],
    "online": [{"peer": "teacher"}, {"peer": "student"}],
    "self": [{"generations": 2}],
    "assistant": [{}],
    # no PyTorch teacher: the toy teacher's command, see also the black-box tests below
    "blackbox": [{"teacher_cmd": command("probs"), "teacher_output": "probs"}],
}
STRATEGY_CASES = [
    (name, options)
    for name in sorted(all_strategies())
    for options in STRATEGY_OPTIONS.get(name, [None])
]


def test_every_strategy_is_registered_under_its_file_name():
    for name, strategy in all_strategies().items():
        assert strategy.name == name and strategy.description
        assert strategy.run.__module__ == f"edgekd.distill.strategies.{name}"
    with pytest.raises(BadInputError, match="unknown strategy 'nope' \\(known: assistant, "):
        run_strategy("nope", None)


@pytest.mark.parametrize("name, options", STRATEGY_CASES)
def test_strategy_improves_over_the_untrained_student(name, options, toy, teacher):
    assert options is not None, f"add strategy {name!r} to STRATEGY_OPTIONS in this file"
    blackbox = options.get("teacher_cmd") or options.get("teacher_onnx")
    before, after, result = run(name, toy, None if blackbox else teacher, **options)
    assert after > before + 0.15, (before, after)
    assert result.info["strategy"] == name and result.history.loss


def test_self_distillation_students_copy_the_teacher_architecture(toy, teacher):
    _, _, result = run("self", toy, teacher, generations=2)
    assert result.student.edgekd_arch == teacher.edgekd_arch
    assert [g["generation"] for g in result.info["generations"]] == [1, 2]


def test_online_peer_learns_too(toy, teacher):
    _, _, result = run("online", toy, teacher, peer="student")
    assert result.info["peer_val_accuracy"] > 0.5


class _CountingScaler:
    """A stand-in for torch's GradScaler: counts what the peer's step asks of it."""

    def __init__(self):
        self.calls = {"scale": 0, "step": 0, "update": 0}

    def scale(self, loss):
        self.calls["scale"] += 1
        return loss

    def step(self, opt):
        self.calls["step"] += 1
        opt.step()

    def update(self):
        self.calls["update"] += 1

    def state_dict(self):
        return {"calls": dict(self.calls)}


def test_online_peer_gets_a_gradient_scaler_only_where_the_student_would(toy, teacher, monkeypatch):
    from edgekd.distill.strategies import online
    from edgekd.train.device import gradient_scaler

    asked = []

    def spy(device, precision):
        asked.append((device.type, precision))
        return gradient_scaler(device, precision)

    monkeypatch.setattr(online, "gradient_scaler", spy)
    run("online", toy, teacher, peer="student")  # fp32 on the CPU: no scaler, plain steps
    assert asked == [("cpu", "fp32")]
    assert gradient_scaler(torch.device("cpu"), "bf16") is None  # bf16 needs none either
    # fp16 (CUDA only; a stand-in here): every peer step goes through the scaler
    scaler = _CountingScaler()
    monkeypatch.setattr(online, "gradient_scaler", lambda device, precision: scaler)
    run("online", toy, teacher, peer="student")
    steps = FAST.epochs * -(-toy.train.n // FAST.batch_size)
    assert scaler.calls == {"scale": steps, "step": steps, "update": steps}


@pytest.mark.gpu
def test_online_peer_trains_in_fp16_on_the_gpu(toy, teacher):
    student = tiny_student()
    train = replace(FAST, device="cuda", precision="fp16")
    job = DistillJob(teacher, student, toy, train, "kd", {}, StrategyOptions(peer="student"))
    result = run_strategy("online", job)
    assert all(np.isfinite(result.history.loss)) and result.info["peer_val_accuracy"] > 0.5


def test_assistant_is_sized_between_student_and_teacher(toy, teacher):
    knobs = size_assistant(tiny_student(), teacher)
    p_s, p_t = count_params(tiny_student()), count_params(teacher)
    assert p_s < knobs["params"] < p_t
    assert knobs["family"] == "cnn" and knobs["depth"] == 2  # halfway between depths 1 and 2
    # the geometric mean, within the width grid's resolution
    assert abs(np.log(knobs["params"]) - np.log(np.sqrt(p_s * p_t))) < 0.3
    with pytest.raises(BadInputError, match="not larger than the student"):
        size_assistant(teacher, tiny_student())


def test_offline_caches_teacher_logits_on_disk(toy, teacher):
    logits, status = module_outputs(teacher, toy.train)
    assert status in ("cache hit", "cache miss")
    again, status = module_outputs(teacher, toy.train)
    assert status == "cache hit" and np.array_equal(again, logits)
    assert list(cache_dir().glob("outputs-*.npy"))
    assert module_outputs(teacher, toy.train, use_cache=False)[1] == "no cache"
    _, _, result = run("offline", toy, teacher)
    assert result.info["teacher_signal"] == "cached logits (cache hit)"


def test_teacher_outputs_fit_torch_threads_first_without_touching_the_teacher(
    toy, teacher, monkeypatch
):
    from edgekd.teacher import outputs

    timed = []

    def fit(trial, distributed=False):  # what edgekd.train.threads would time: one forward
        step = trial()
        step()
        timed.append(distributed)

    monkeypatch.setattr(outputs, "fit_training_threads", fit)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    expected = module_outputs(teacher, toy.train, use_cache=False)[0]
    assert timed == [False]
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())  # eval mode
    np.testing.assert_array_equal(module_outputs(teacher, toy.train, use_cache=False)[0], expected)


def test_cache_key_changes_with_the_teacher_weights(teacher):
    other = tiny_student()
    assert weights_hash(teacher) == weights_hash(teacher)
    assert weights_hash(teacher) != weights_hash(other)


def test_finetune_stage_runs_after_any_strategy(toy, teacher):
    _, after, result = run("offline", toy, teacher, finetune_epochs=2)
    ft = result.info["finetune"]
    assert ft["epochs"] == 2 and isinstance(ft["kept"], bool)
    assert ft["val_accuracy_after"] >= ft["val_accuracy_before"] or not ft["kept"]


# ---------------------------------------------------------------- black box


@pytest.mark.parametrize("mode", ["probs", "topk:2", "labels"])
def test_blackbox_onnx_teacher(mode, toy, teacher_onnx):
    before, after, result = run(
        "blackbox", toy, None, teacher_onnx=teacher_onnx, teacher_output=mode
    )
    assert after > before + 0.15, (before, after)
    assert result.info["teacher_output"] == mode and result.info["teacher_train_accuracy"] > 0.9


@pytest.mark.parametrize(
    "emit, mode", [("logits", "probs"), ("topk2", "topk:2"), ("labels", "labels")]
)
def test_blackbox_command_teacher(emit, mode, toy):
    before, after, result = run(
        "blackbox", toy, None, teacher_cmd=command(emit), teacher_output=mode
    )
    assert after > before + 0.15, (before, after)
    assert "command" in result.info["teacher_signal"]


def test_blackbox_refuses_feature_methods(toy):
    with pytest.raises(BadInputError, match="needs the teacher's activations"):
        run("blackbox", toy, None, "fitnet", teacher_cmd=command("probs"))


@pytest.mark.parametrize(
    "emit, match",
    [
        ("fail", "exited with code 3: toy teacher: refusing on purpose"),
        ("bad-shape", r"output 'logits' has shape \(30, 2\), expected \(B, 3\)"),
        ("nothing", "wrote no output file"),
    ],
)
def test_command_failures_are_clear(emit, match, toy):
    raw_teacher = CommandTeacher(command(emit))
    with pytest.raises(BadInputError, match=match):
        teacher_targets(query(raw_teacher, toy.val), OutputMode("probs"), 3, str(raw_teacher))


def test_command_timeout_and_missing_program(toy):
    with pytest.raises(BadInputError, match="timed out after 0.5 s"):
        query(CommandTeacher(command("sleep"), timeout_s=0.5), toy.val)
    with pytest.raises(BadInputError, match="program 'no-such-teacher' not found"):
        CommandTeacher("no-such-teacher --fast")


def test_command_placeholders():
    py = sys.executable
    t = CommandTeacher(f"{py} --in {{input}} --out={{output}}")
    assert t._argv(Path("a.npz"), Path("b.npz")) == [py, "--in", "a.npz", "--out=b.npz"]
    assert CommandTeacher(f"{py} -v")._argv(Path("a"), Path("b")) == [py, "-v", "a", "b"]


def test_output_mode_parsing():
    assert OutputMode.parse("topk:5") == OutputMode("topk", 5)
    assert str(OutputMode.parse("labels")) == "labels"
    for bad in ("topk", "topk:0", "top5", "soft"):
        with pytest.raises(BadInputError, match="--blackbox-output"):
            OutputMode.parse(bad)


# ---------------------------------------------------------------- what the student learns from


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_topk_spreads_the_missing_mass_evenly_by_hand():
    probs = np.array([[0.5, 0.3, 0.15, 0.05]])
    got = teacher_targets({"probs": probs}, OutputMode("topk", 2), 4)
    # top-2 kept (0.5, 0.3); the missing 0.2 is split evenly over the other two classes
    assert softmax(got.logits) == pytest.approx(np.array([[0.5, 0.3, 0.1, 0.1]]), abs=1e-6)
    assert got.labels.tolist() == [0]
    # the same from a teacher that only returns its top 2
    only = {"topk_indices": np.array([[1, 0]]), "topk_probs": np.array([[0.3, 0.5]])}
    again = teacher_targets(only, OutputMode("topk", 2), 4)
    assert softmax(again.logits) == pytest.approx(softmax(got.logits), abs=1e-6)
    assert again.labels.tolist() == [0]


def test_full_outputs_keep_logits_and_turn_probs_into_centred_log_probs():
    logits = np.array([[2.0, 0.0, -1.0]])
    assert teacher_targets({"logits": logits}, OutputMode("probs"), 3).logits.tolist() == [
        [2.0, 0.0, -1.0]
    ]
    got = teacher_targets({"probs": softmax(logits)}, OutputMode("probs"), 3).logits
    assert got == pytest.approx(logits - logits.mean(), abs=1e-5)
    assert teacher_targets({"logits": logits}, OutputMode("labels"), 3).logits is None


def test_teacher_that_gives_less_than_asked_is_refused():
    top = {"topk_indices": np.array([[1, 0]]), "topk_probs": np.array([[0.6, 0.3]])}
    with pytest.raises(BadInputError, match="use --teacher-output topk:2"):
        teacher_targets(top, OutputMode("probs"), 3)
    with pytest.raises(BadInputError, match="use --teacher-output labels"):
        teacher_targets({"labels": np.array([1])}, OutputMode("topk", 2), 3)
    with pytest.raises(BadInputError, match=r"integer classes in \[0, 3\)"):
        teacher_targets({"labels": np.array([3])}, OutputMode("labels"), 3)
    with pytest.raises(BadInputError, match="not probability distributions"):
        teacher_targets({"probs": np.array([[0.5, 0.6, 0.1]])}, OutputMode("probs"), 3)
    with pytest.raises(BadInputError, match="none of 'logits'"):
        teacher_targets({"scores": np.zeros((1, 3))}, OutputMode("probs"), 3)


# ---------------------------------------------------------------- choosing a strategy


def test_resolve_strategy():
    assert resolve_strategy(None, blackbox_teacher=False) == "offline"
    assert resolve_strategy(None, blackbox_teacher=True) == "blackbox"
    assert resolve_strategy("self", blackbox_teacher=False) == "self"
    with pytest.raises(BadInputError, match="needs a PyTorch teacher"):
        resolve_strategy("online", blackbox_teacher=True)
    with pytest.raises(BadInputError, match="needs --teacher-onnx FILE or --teacher-cmd"):
        resolve_strategy("blackbox", blackbox_teacher=False)


def test_strategy_options_are_validated():
    with pytest.raises(BadInputError, match="--generations must be >= 1"):
        StrategyOptions(generations=0)
    with pytest.raises(BadInputError, match="online peer"):
        StrategyOptions(peer="friend")
    with pytest.raises(BadInputError, match="--finetune-epochs"):
        replace(StrategyOptions(), finetune_epochs=-1)


def test_cli_refuses_a_blackbox_strategy_without_a_blackbox(tmp_path):
    from typer.testing import CliRunner

    from edgekd.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["distill", "--strategy", "blackbox", "--out", str(out)])
    assert result.exit_code == 2
    assert "needs --teacher-onnx FILE or --teacher-cmd" in result.output
    assert not out.exists()
