"""Bad input, hostile files and faults, as a table: each case is one ``edgekd distill`` command
that must end with its exit code and exactly one stderr line naming the culprit, and leave
nothing behind (no ``OUT``, no ``OUT.partial``, no marker file that planted code would write).

A case is ``(name, setup, code, culprit)``: ``setup(tmp)`` builds the files and returns the
arguments (``--out tmp/run`` is added), ``culprit`` is a substring of the error line (``{tmp}``
is replaced by the case's folder). Cases that fail at validation run in this process through
``CliRunner`` and cost well under a second; the lock and the signals need real processes, at the
end of the file. Security cases that already hold (``tests/test_safety.py`` tests the layer
underneath) are here at the command line so that they stay held.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.rundir import lock_holder, partial_dir
from tests.test_safety import WritesMarker, matmul_model, point_weights_at

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
MARKER = "marker"  # planted code would create tmp/marker


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Path], list[str]]
    code: int
    culprit: str
    skip: str = ""  # why the case cannot run here ("" = it runs)

    def __str__(self) -> str:
        return self.name


# --- builders --------------------------------------------------------------------------------


def _xy(n: int = 60, classes: int = 3, features: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, features)).astype(np.float32), np.arange(n) % classes


def npz(**arrays) -> Callable[[Path], list[str]]:
    """``--data tmp/data.npz`` holding ``arrays`` (x and y by default)."""

    def setup(tmp: Path) -> list[str]:
        x, y = _xy()
        np.savez(tmp / "data.npz", **{"x": x, "y": y, **arrays})
        return ["--data", str(tmp / "data.npz")]

    return setup


def _with_nan(x: np.ndarray, at: tuple[int, int], value: float) -> np.ndarray:
    x = x.copy()
    x[at] = value
    return x


def held_out_inf(tmp: Path) -> list[str]:
    x, y = _xy()
    np.savez(tmp / "train.npz", x=x, y=y)
    np.savez(tmp / "test.npz", x=_with_nan(x[:20], (7, 2), np.inf), y=y[:20])
    return ["--data", str(tmp / "train.npz"), "--test-data", str(tmp / "test.npz")]


def csv_with_nan(tmp: Path) -> list[str]:
    x, y = _xy()
    rows = [f"{a},{b},{c},{d},{label}" for (a, b, c, d), label in zip(x, y, strict=True)]
    rows[5] = "1,nan,2,3,0"
    (tmp / "data.csv").write_text("a,b,c,d,label\n" + "\n".join(rows) + "\n")
    return ["--data", str(tmp / "data.csv")]


def args(*extra: str) -> Callable[[Path], list[str]]:
    return lambda tmp: list(extra)


def target_with(**fields: object) -> Callable[[Path], list[str]]:
    """``--target tmp/t.toml``: the shipped mobile profile with ``fields`` changed."""

    def setup(tmp: Path) -> list[str]:
        text = (REPO / "targets" / "mobile.toml").read_text()
        lines = []
        for line in text.splitlines():
            key = line.split("=")[0].strip()
            lines.append(f"{key} = {fields[key]}" if key in fields else line)
        (tmp / "t.toml").write_text("\n".join(lines) + "\n")
        return ["--target", str(tmp / "t.toml")]

    return setup


def python_file(name: str, body: str, flag: str, factory: str = "make"):
    def setup(tmp: Path) -> list[str]:
        (tmp / name).write_text(textwrap.dedent(body))
        return [flag, f"{tmp / name}:{factory}"]

    return setup


EXITS_IN_FACTORY = """
    import sys

    def make():
        sys.exit(0)
"""
EXITS_ON_IMPORT = """
    import sys

    sys.exit(3)

    def make():
        return None
"""


def out_under_a_file(tmp: Path) -> list[str]:
    (tmp / "file.txt").write_text("not a folder")
    return ["--out", str(tmp / "file.txt" / "run")]


def out_is_a_file(tmp: Path) -> list[str]:
    (tmp / "file.txt").write_text("not a folder")
    return ["--out", str(tmp / "file.txt"), "--overwrite"]


def read_only_parent(tmp: Path) -> list[str]:
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o500)
    return ["--out", str(tmp / "ro" / "run")]


# Security: planted code must never run (each would create tmp/marker).


def pickled_teacher(tmp: Path) -> list[str]:
    torch.save({"w": WritesMarker(tmp / MARKER)}, tmp / "teacher.pt")
    return ["--teacher", str(tmp / "teacher.pt")]


def archive_with_bait(name: str, member: str) -> Callable[[Path], list[str]]:
    """``--teacher NAME``: a zip archive (as TorchScript and ``.pt2`` files are) whose pickle
    would create the marker if it were loaded."""

    def setup(tmp: Path) -> list[str]:
        with zipfile.ZipFile(tmp / name, "w") as z:
            z.writestr(member, pickle.dumps(WritesMarker(tmp / MARKER)))
        return ["--teacher", str(tmp / name), *npz()(tmp)]

    return setup


def remote_code_bait(tmp: Path) -> list[str]:
    """A Hugging Face folder whose config asks for its own Python (``auto_map``)."""
    folder = tmp / "hf"
    folder.mkdir()
    plant = f"open({str(tmp / MARKER)!r}, 'w').close()\n"
    (folder / "configuration_evil.py").write_text(plant)
    (folder / "modeling_evil.py").write_text(plant)
    config = {
        "model_type": "evil",
        "architectures": ["EvilModel"],
        "auto_map": {
            "AutoConfig": "configuration_evil.EvilConfig",
            "AutoModel": "modeling_evil.EvilModel",
        },
    }
    (folder / "config.json").write_text(json.dumps(config))
    return ["--teacher", str(folder)]


def onnx_escape(location: str) -> Callable[[Path], list[str]]:
    """``--teacher-onnx`` whose weights live "outside" its folder (tests/test_safety.py has the
    26 ways; two at the command line)."""

    def setup(tmp: Path) -> list[str]:
        folder = tmp / "model"
        folder.mkdir()
        onnx.save_model(
            matmul_model(),
            folder / "m.onnx",
            save_as_external_data=True,
            location="weights.bin",
            size_threshold=0,
        )
        (tmp / "secret.bin").write_bytes(b"s" * 256)
        point_weights_at(folder / "m.onnx", location.format(tmp=tmp))
        return ["--teacher-onnx", str(folder / "m.onnx"), *npz(x=_xy(features=8)[0])(tmp)]

    return setup


def shell_metacharacters(command: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        return ["--teacher-cmd", command.format(marker=tmp / MARKER), *npz()(tmp)]

    return setup


X, Y = _xy()
AS_ROOT = "root ignores folder permissions" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""

CASES = [
    # data: refused when read, named by file, array and index
    Case("npz-no-samples", npz(x=X[:0], y=Y[:0]), 2, "data.npz: no samples"),
    Case("npz-one-sample", npz(x=X[:1], y=Y[:1]), 2, "too few samples to split"),
    Case("npz-1d-x", npz(x=X[:, 0]), 2, "array 'x' is float32[60]: inputs need a feature axis"),
    Case("npz-complex-x", npz(x=X.astype(np.complex64)), 2, "inputs must be real numbers"),
    Case("npz-label-2**40", npz(y=np.r_[Y[:-1], 2**40]), 2, "label 1099511627776 at index 59"),
    Case("npz-nan", npz(x=_with_nan(X, (13, 1), np.nan)), 2, "'x' holds nan at index [13, 1]"),
    Case("test-data-inf", held_out_inf, 2, "test.npz: array 'x' holds inf at index [7, 2]"),
    Case("csv-nan", csv_with_nan, 2, "data.csv: array 'x' holds nan at index [5, 1]"),
    Case("single-class", npz(y=np.zeros(60, np.int64)), 2, "every training label is class 0"),
    # options: finite and in range, named by option
    Case("temperature-inf", args("--temperature", "inf"), 2, "temperature must be a finite"),
    Case("lr-inf", args("--lr", "inf"), 2, "lr must be a finite number, got inf"),
    Case("lr-nan", args("--lr", "nan"), 2, "lr must be a finite number, got nan"),
    Case("blackbox-topk-0", args("--blackbox-output", "topk:0"), 2, "blackbox_output must be"),
    Case("out-empty", args("--out", ""), 2, "out must name a folder"),
    # target profiles: sizes bounded, figures finite, named by file and field
    Case("target-batch-1e8", target_with(batch_size=10**8), 2, "t.toml: field 'batch_size'"),
    Case("target-threads-0", target_with(threads=0), 2, "t.toml: field 'threads'"),
    Case("target-gflops-nan", target_with(fp32_gflops="nan"), 2, "'device.fp32_gflops': must be"),
    # code users bring: sys.exit is not an exit code for edgekd
    Case(
        "teacher-sys-exit-0",
        python_file("t.py", EXITS_IN_FACTORY, "--teacher"),
        2,
        "the teacher factory called sys.exit(0)",
    ),
    Case(
        "data-sys-exit-on-import",
        python_file("d.py", EXITS_ON_IMPORT, "--data"),
        2,
        "d.py: importing it called sys.exit(3)",
    ),
    # output paths: one line with the path and the reason
    Case("out-under-a-file", out_under_a_file, 2, "file.txt is a file, not a folder"),
    Case("out-is-a-file", out_is_a_file, 2, "file.txt: it is a file, not a folder"),
    Case("out-read-only", read_only_parent, 2, "Permission denied", skip=AS_ROOT),
    Case(
        "out-impossible",
        args("--out", "/proc/edgekd-adversarial/run"),
        2,
        "cannot write /proc/edgekd-adversarial/run.partial: ",
        skip="" if Path("/proc/self").exists() else "no /proc here",
    ),
    # security: refused, and nothing planted runs
    Case("pickle-teacher", pickled_teacher, 2, "teacher.pt: contains pickled code"),
    Case("torchscript-teacher", archive_with_bait("t.ts", "t/constants.pkl"), 2, "NOT loaded"),
    Case("pt2-teacher", archive_with_bait("t.pt2", "t/models/model.json"), 2, "NOT loaded"),
    Case("remote-code-bait", remote_code_bait, 2, "hf: cannot load the model"),
    Case("onnx-escape-parent", onnx_escape("../secret.bin"), 2, "m.onnx"),
    Case("onnx-escape-absolute", onnx_escape("{tmp}/secret.bin"), 2, "m.onnx"),
    Case("cmd-semicolon", shell_metacharacters("echo x; touch {marker}"), 2, "--teacher-cmd"),
    Case("cmd-subshell", shell_metacharacters("true $(touch {marker})"), 2, "--teacher-cmd"),
    Case("cmd-pipe", shell_metacharacters("true | touch {marker}"), 2, "--teacher-cmd"),
]


def assert_one_error_line(stderr: str, culprit: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("edgekd: error:")]
    assert len(errors) == 1, stderr
    assert stderr.strip().splitlines()[-1] == errors[0], stderr  # the error is the last word
    assert culprit in errors[0], errors[0]
    return errors[0]


def assert_nothing_left(tmp: Path, out: Path) -> None:
    assert not out.exists(), sorted(out.iterdir())
    assert not partial_dir(out).exists()
    assert not (tmp / MARKER).exists(), "planted code ran"


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_is_one_line_and_leaves_nothing(case: Case, tmp_path: Path) -> None:
    if case.skip:
        pytest.skip(case.skip)
    argv = case.setup(tmp_path)
    out = tmp_path / "run"
    given_out = "--out" in argv
    argv = ["distill", "--epochs", "1", "--teacher-epochs", "1", *argv]
    argv += [] if given_out else ["--out", str(out)]
    result = runner.invoke(app, argv)
    assert result.exit_code == case.code, result.output
    assert_one_error_line(result.stderr, case.culprit.format(tmp=tmp_path))
    assert_nothing_left(tmp_path, out)
    if (tmp_path / "file.txt").exists():  # the --out cases: the file in the way is untouched
        assert (tmp_path / "file.txt").read_text() == "not a folder"


def test_a_full_disk_is_said_plainly_and_leaves_nothing(tmp_path, monkeypatch) -> None:
    """ENOSPC on the first file of the run (its config.json): exit 2, "disk full", no folder."""
    import edgekd.fileio

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(edgekd.fileio.os, "fsync", full)
    x, y = _xy()
    np.savez(tmp_path / "data.npz", x=x, y=y)
    out = tmp_path / "run"
    argv = ["distill", "--data", str(tmp_path / "data.npz"), "--out", str(out)]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    line = assert_one_error_line(result.stderr, "disk full: cannot write")
    assert "config.json" in line
    assert_nothing_left(tmp_path, out)


# --- processes: the lock and the signals -----------------------------------------------------


def _start(out: Path, data: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "edgekd", "distill", "--data", str(data), "--out", str(out)]
    cmd += ["--teacher-epochs", "1", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


@pytest.mark.slow
def test_a_second_writer_is_refused_and_sigterm_in_the_bench_exits_130(tmp_path) -> None:
    """Two runs started together on one --out: one takes OUT.partial, the other exits 2 naming
    its PID. While it runs, a fresh start, --resume and --overwrite on the same --out are refused
    the same way (its files untouched). SIGTERM while it benchmarks: exit 130, one line with the
    resume command, the folder kept and unlocked; the resume then finishes the run."""
    x, y = _xy(300)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    out, work = tmp_path / "run", partial_dir(tmp_path / "run")
    racers = [_start(out, tmp_path / "data.npz", "--epochs", "3", "--bench-seconds", "0.2")]
    racers.append(_start(out, tmp_path / "data.npz", "--epochs", "3", "--bench-seconds", "0.2"))
    try:
        while all(r.poll() is None for r in racers):
            time.sleep(0.05)
        loser = next(r for r in racers if r.poll() is not None)
        proc = next(r for r in racers if r is not loser)
        _, stderr = loser.communicate()
        assert loser.returncode == 2, stderr
        assert_one_error_line(stderr, f"in use by another edgekd run (PID {proc.pid})")
        _wait_for(work / "config.json", proc)
        for extra in ([], ["--overwrite"]):
            second = runner.invoke(app, ["distill", "--out", str(out), "--epochs", "1", *extra])
            assert second.exit_code == 2, second.output
            assert_one_error_line(second.stderr, f"in use by another edgekd run (PID {proc.pid})")
        resumed = runner.invoke(app, ["distill", "--resume", str(out)])
        assert resumed.exit_code == 2 and f"PID {proc.pid}" in resumed.stderr, resumed.output
        assert (work / "config.json").is_file()
        _wait_for(work / "student-int8.onnx", proc)  # the last file before the benchmark
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        for racer in racers:
            racer.kill()
    assert proc.returncode == 130, stderr
    line = assert_one_error_line(stderr, "stopped by SIGTERM")
    assert line.endswith(f"resume with: edgekd distill --resume {out}")
    assert (work / "config.json").is_file() and (work / "checkpoint.pt").is_file()
    assert not out.exists() and lock_holder(work) is None
    finished = runner.invoke(app, ["distill", "--resume", str(out)])
    assert finished.exit_code == 0, finished.output
    assert (out / "report.json").is_file() and not work.exists()
    assert not (out / ".lock").exists()


def _sigterm_self(*_args, **_kwargs):
    os.kill(os.getpid(), signal.SIGTERM)  # delivered at the next bytecode, in this frame
    raise AssertionError("SIGTERM did not stop the command")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_in_any_command_is_130_and_one_line(monkeypatch, signum) -> None:
    import edgekd.targets

    monkeypatch.setattr(edgekd.targets, "list_targets", lambda: os.kill(os.getpid(), signum))
    before = signal.getsignal(signal.SIGTERM)
    result = runner.invoke(app, ["targets"])
    assert result.exit_code == 130, result.output
    assert_one_error_line(result.stderr, f"stopped by {signal.Signals(signum).name}")
    assert signal.getsignal(signal.SIGTERM) == before  # the command gave the handlers back


def test_sigterm_after_training_keeps_the_folder_for_resume(tmp_path, monkeypatch) -> None:
    """SIGTERM in the export stage, in this process (the slow test above stops a real process in
    the benchmark): exit 130, the resume command, and OUT.partial with its config and final
    checkpoint, unlocked."""
    import edgekd.pipeline

    # sized from estimates only (the host measurements are sizing's tests' business)
    quick = {"widths": (0.25, 0.5), "measure_host": False, "baseline_mb": 56.0}
    import edgekd.sizing.trial

    sized = functools.partial(edgekd.sizing.trial.SizingRequest, **quick)
    monkeypatch.setattr(edgekd.sizing.trial, "SizingRequest", sized)
    monkeypatch.setattr(edgekd.pipeline, "_export", _sigterm_self)
    x, y = _xy(90)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    out, work = tmp_path / "run", partial_dir(tmp_path / "run")
    argv = ["distill", "--data", str(tmp_path / "data.npz"), "--out", str(out)]
    result = runner.invoke(app, [*argv, "--epochs", "2", "--teacher-epochs", "1"])
    assert result.exit_code == 130, result.output
    line = assert_one_error_line(result.stderr, "distill: stopped by SIGTERM; ")
    assert line.endswith(f"resume with: edgekd distill --resume {out}")
    assert (work / "config.json").is_file() and (work / "checkpoint.pt").is_file()
    assert not out.exists() and lock_holder(work) is None
