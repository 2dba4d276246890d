"""Training on the device the user has: --device and --precision resolved, mixed precision on the
CPU where PyTorch supports it, checkpoints that move between devices, and the CUDA paths (the
``gpu`` tests skip cleanly on a machine without a GPU: tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.config import DistillConfig
from edgekd.data import Split
from edgekd.distill.methods import make_method
from edgekd.errors import EXIT_BAD_INPUT, BadInputError
from edgekd.students import build_student
from edgekd.teacher.outputs import teacher_outputs
from edgekd.train import device as dev
from edgekd.train.loop import TrainConfig, cached_teacher, live_teacher, train_student
from edgekd.train.resume import load_training_state, save_training_state

runner = CliRunner()
CPU = torch.device("cpu")


def _data(n: int = 96):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return Split({"x": x}, y), Split({"x": x[:32]}, y[:32]), rng.normal(size=(n, 2))


STEPS_PER_EPOCH = 6  # 96 samples, batches of 16


def _train(checkpoint=None, resume=False, epochs=3, crash_at=None, **placement):
    """KD into a tiny MLP; ``crash_at=n`` fails the n-th step (the last checkpoint stays)."""
    train, val, logits = _data()
    torch.manual_seed(0)
    student = build_student("mlp", (6,), 2, width=0.25, depth=1)
    config = TrainConfig(epochs=epochs, lr=1e-2, batch_size=16, **placement)
    cached, calls = cached_teacher(logits), [0]

    def teacher(index, batch):
        calls[0] += 1
        if calls[0] == crash_at:
            raise RuntimeError("power cut")
        return cached(index, batch)

    history = train_student(
        student,
        train,
        val,
        config,
        method=make_method("kd"),
        teacher=teacher,
        checkpoint=checkpoint,
        resume=resume,
    )
    return student, history


def _crash_after_two_epochs(ckpt, **placement) -> dict:
    """The checkpoint a 3-epoch run leaves when it dies in its third epoch."""
    with pytest.raises(RuntimeError, match="power cut"):
        _train(ckpt, crash_at=2 * STEPS_PER_EPOCH + 2, **placement)
    state = load_training_state(ckpt)
    assert state["epoch"] == 2
    return state


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def _no_gpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# -- resolving --device and --precision ---------------------------------------------------------
def test_auto_is_the_cpu_without_a_gpu_and_fp32_there(monkeypatch) -> None:
    _no_gpu(monkeypatch)
    assert dev.resolve_device("auto") == CPU and dev.resolve_device("cpu") == CPU
    assert dev.resolve_precision("auto", CPU) == "fp32"
    assert dev.resolve_precision("bf16", CPU) == "bf16"  # asked for explicitly: allowed


@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_a_gpu_asked_for_without_one_is_one_clear_error(monkeypatch, spec) -> None:
    _no_gpu(monkeypatch)
    with pytest.raises(BadInputError, match=f"--device {spec}: no CUDA GPU") as err:
        dev.resolve_device(spec)
    assert "\n" not in str(err.value)


def test_unknown_device_and_precision_are_refused() -> None:
    for bad in ("tpu", "cuda:", "gpu0", "CPU"):
        assert not dev.valid_device_spec(bad)
        with pytest.raises(BadInputError, match="--device"):
            dev.resolve_device(bad)
    with pytest.raises(BadInputError, match="--precision fp16 needs a CUDA device"):
        dev.resolve_precision("fp16", CPU)
    with pytest.raises(BadInputError, match="--precision must be one of"):
        dev.resolve_precision("fp8", CPU)


def test_auto_precision_on_cuda_is_bf16_where_supported_else_fp16(monkeypatch) -> None:
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert dev.resolve_precision("auto", cuda) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert dev.resolve_precision("auto", cuda) == "fp16"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Old GPU")
    with pytest.raises(BadInputError, match="Old GPU does not support bfloat16"):
        dev.resolve_precision("bf16", cuda)


def test_fp32_adds_no_autocast_and_no_scaler() -> None:
    import contextlib

    assert isinstance(dev.autocast(CPU, "fp32"), contextlib.nullcontext)
    assert dev.gradient_scaler(CPU, "fp32") is None and dev.gradient_scaler(CPU, "bf16") is None


def test_config_fields_are_checked() -> None:
    assert (DistillConfig().device, DistillConfig().precision) == ("auto", "auto")
    DistillConfig(device="cuda:3", precision="bf16")  # valid words; the machine is asked later
    with pytest.raises(BadInputError, match="device must be auto, cpu, cuda or cuda:N"):
        DistillConfig(device="tpu")
    with pytest.raises(BadInputError, match="precision must be one of"):
        DistillConfig(precision="fp8")
    with pytest.raises(ValueError, match="unknown device"):
        TrainConfig(device="gpu")


def test_cli_refuses_cuda_without_a_gpu_in_one_line(tmp_path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = runner.invoke(app, ["distill", "--device", "cuda", "--out", str(tmp_path / "r")])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert any("--device cuda: no CUDA GPU" in line for line in lines), result.output
    assert not (tmp_path / "r").exists() and not (tmp_path / "r.partial").exists()


def test_describe_device_on_the_cpu_has_no_peak_device_memory() -> None:
    info = dev.describe_device(CPU, "fp32")
    assert info["device"] == "cpu" and info["device_type"] == "cpu" and info["device_name"]
    assert info["precision"] == "fp32" and info["peak_device_memory_bytes"] is None


# -- training -----------------------------------------------------------------------------------
def test_explicit_cpu_fp32_trains_exactly_like_the_default() -> None:
    default, _ = _train()
    explicit, _ = _train(device="auto", precision="auto")
    assert _same_weights(default, explicit)


def test_bf16_on_cpu_autocast_trains_with_finite_loss_and_fp32_weights() -> None:
    if not torch.amp.autocast_mode.is_autocast_available("cpu"):
        pytest.skip("this PyTorch has no CPU autocast")
    student, history = _train(epochs=2, device="cpu", precision="bf16")
    assert all(np.isfinite(history.loss)) and len(history.loss) == 2
    assert all(p.dtype == torch.float32 for p in student.parameters())
    fp32, _ = _train(epochs=2)
    assert not _same_weights(student, fp32)  # bf16 really ran


def test_a_checkpoint_loads_onto_another_device_via_map_location(tmp_path) -> None:
    ckpt = tmp_path / "checkpoint.pt"
    _train(ckpt, epochs=2)
    state = load_training_state(ckpt, map_location="meta")  # "as if" on another device
    assert all(t.device.type == "meta" for t in state["student"].values())
    assert all(t.device == CPU for t in load_training_state(ckpt)["student"].values())


def test_a_run_started_elsewhere_resumes_here_exactly(tmp_path) -> None:
    """A checkpoint written under another device and precision (a GPU run's) resumes on the CPU:
    neither is a training setting a checkpoint must match, and the weights end as an
    uninterrupted CPU run's."""
    uninterrupted, _ = _train(epochs=3)
    ckpt = tmp_path / "checkpoint.pt"
    state = _crash_after_two_epochs(ckpt)
    state["config"] = {**state["config"], "device": "cuda:0", "precision": "bf16"}
    state.pop("format")
    save_training_state(ckpt, state)
    resumed, _ = _train(ckpt, resume=True, epochs=3)
    assert _same_weights(resumed, uninterrupted)


def test_an_old_checkpoint_without_device_keys_still_resumes(tmp_path) -> None:
    uninterrupted, _ = _train(epochs=3)
    ckpt = tmp_path / "checkpoint.pt"
    state = _crash_after_two_epochs(ckpt)
    state.pop("format")
    for key in ("device", "precision"):
        state["config"].pop(key)
    for key in ("scaler", "cuda_rng"):
        state.pop(key)
    save_training_state(ckpt, state)
    resumed, _ = _train(ckpt, resume=True, epochs=3)
    assert _same_weights(resumed, uninterrupted)


def test_other_training_settings_are_still_refused(tmp_path) -> None:
    ckpt = tmp_path / "checkpoint.pt"
    _train(ckpt, epochs=2)
    with pytest.raises(BadInputError, match="epochs: 2 there, 3 now"):
        _train(ckpt, resume=True, epochs=3)


# -- CUDA (skipped without a GPU) ---------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["auto", "fp32", "fp16"])
def test_gpu_training_returns_the_student_to_the_cpu(precision) -> None:
    cuda = dev.resolve_device("cuda")
    dev.reset_peak_memory(cuda)
    student, history = _train(epochs=2, device="cuda", precision=precision)
    assert all(np.isfinite(history.loss))
    assert all(p.device == CPU and p.dtype == torch.float32 for p in student.parameters())
    info = dev.describe_device(cuda, dev.resolve_precision(precision, cuda))
    assert info["device_type"] == "cuda" and info["peak_device_memory_bytes"] > 0


@pytest.mark.gpu
def test_gpu_fp16_checkpoint_keeps_the_scaler_and_resumes_on_the_cpu(tmp_path) -> None:
    ckpt = tmp_path / "checkpoint.pt"
    state = _crash_after_two_epochs(ckpt, device="cuda", precision="fp16")
    assert state["scaler"] and state["cuda_rng"] is not None
    assert all(t.device == CPU for t in state["student"].values())
    student, history = _train(ckpt, resume=True, device="cpu")  # the last epoch on the CPU
    assert len(history.loss) == 3 and all(np.isfinite(history.loss))


@pytest.mark.gpu
def test_cpu_checkpoint_resumes_on_the_gpu(tmp_path) -> None:
    ckpt = tmp_path / "checkpoint.pt"
    _crash_after_two_epochs(ckpt)
    student, history = _train(ckpt, resume=True, device="cuda", precision="fp32")
    assert len(history.loss) == 3 and next(student.parameters()).device == CPU


@pytest.mark.gpu
def test_teacher_outputs_and_a_live_teacher_on_the_gpu_match_the_cpu() -> None:
    train, _, _ = _data(200)
    torch.manual_seed(1)
    teacher = build_student("mlp", (6,), 2, width=1.0, depth=2)
    on_cpu = teacher_outputs(teacher, train, device="cpu")
    on_gpu = teacher_outputs(teacher, train, device="cuda")
    assert next(teacher.parameters()).device == CPU  # it went back
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-3, atol=1e-3)
    teacher.to("cuda")
    logits, _ = live_teacher(teacher)(np.arange(8), train.take(np.arange(8)))
    assert logits.device.type == "cuda"
    teacher.to("cpu")


def test_the_report_records_where_training_ran() -> None:
    from types import SimpleNamespace

    from edgekd.pipeline import Training
    from edgekd.train.loop import TrainHistory

    job = SimpleNamespace(
        train=TrainConfig(),
        options=SimpleNamespace(augment="none"),
        data=SimpleNamespace(train=SimpleNamespace(n=100)),  # the step budget is the data's
    )
    result = SimpleNamespace(history=TrainHistory(), info={})
    used = dev.describe_device(CPU, "fp32")
    run = SimpleNamespace(config=DistillConfig(), method="kd", strategy="offline")
    section = Training(job, result, None, None, used).report_section(run, resumed=False)
    assert {k: section[k] for k in used} == used  # new keys; the old ones keep their meaning
    assert section["precision"] == "fp32" and section["peak_device_memory_bytes"] is None
