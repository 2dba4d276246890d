"""`edgekd bench`: report contents, runtimes and their fallback, model specs, bad input.

Timings are never asserted: only that they exist, are positive, and are labelled with what ran.
Measurements use few processes and short sampling to keep the file quick on a busy machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from edgekd.bench.runner import BenchSettings, ModelRef, measure_models
from edgekd.bench.sources import resolve_model
from edgekd.bench.suite import benchmark
from edgekd.cli import app
from edgekd.runtimes import all_runtimes, get_runtime

runner = CliRunner()
FAST = ["--processes", "2", "--min-time", "0.01"]
SETTINGS = BenchSettings(processes=1, min_samples=10, seconds_per_process=0.01, large_batch=8)

REPORT_MODEL_KEYS = {
    "name", "path", "format", "precision", "provider", "params", "size_bytes", "latency_ms",
    "peak_rss_mb", "accuracy", "agreement_with_teacher", "device", "gpu_memory_mb",
    "latency_processes", "throughput", "latency_samples_ms",
}  # fmt: skip
LATENCY_KEYS = {"p50", "p90", "p95", "p99", "mean", "std", "min", "n", "ci_low", "ci_high"}


def _mlp(path, sizes=(16, 32, 10), batch="batch", external: str | None = None):
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}"),
        ]
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"h{i}"]))
        prev = f"h{i}"
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, sizes[0]])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [batch, sizes[-1]])],
        initializer=inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if external:
        tensor = model.graph.initializer[0]
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        tensor.external_data.add(key="location", value=external)
    onnx.save(model, str(path))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    rng = np.random.default_rng(1)
    np.savez(d / "data.npz", x=rng.standard_normal((120, 16)).astype(np.float32),
             y=rng.integers(0, 10, 120))  # fmt: skip
    return {
        "student": _mlp(d / "student.onnx"),
        "teacher": _mlp(d / "teacher.onnx", (16, 64, 64, 10)),
        "data": str(d / "data.npz"),
        "dir": d,
    }


@pytest.fixture(scope="module")
def bench_json(files):
    out = files["dir"] / "report.json"
    result = runner.invoke(
        app,
        ["bench", files["student"], "--teacher", files["teacher"], "--data", files["data"],
         "--target", "iot", *FAST, "--json", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), json.loads(out.read_text())


def test_bench_report_has_the_contract_keys(bench_json):
    printed, written = bench_json
    assert printed == written
    assert written["target"]["name"] == "iot"
    assert {"cpu_model", "cpu_flags", "cores", "os", "onnxruntime", "threads"} <= set(
        written["host"]
    )
    assert written["host"]["threads"]["target_threads"] == 4
    names = [m["name"] for m in written["models"]]
    assert names == ["teacher", "student"]
    for m in written["models"]:
        assert REPORT_MODEL_KEYS <= set(m)
        assert LATENCY_KEYS <= set(m["latency_ms"])
        assert m["provider"] == "CPUExecutionProvider" and m["device"] == "cpu"
        assert m["gpu_memory_mb"] is None
        assert len(m["latency_processes"]) >= 2  # several fresh processes, raw samples kept
        assert all(s > 0 for p in m["latency_processes"] for s in p["samples_ms"])
        assert sum(len(p["samples_ms"]) for p in m["latency_processes"]) >= 72  # p95 bound
        assert m["peak_rss_mb"] > 0 and 0 <= m["accuracy"] <= 1
        assert [t["batch_size"] for t in m["throughput"]] == [1, 32]
    student = written["models"][1]
    assert student["params"] == 16 * 32 + 32 + 32 * 10 + 10
    assert student["role"] == "student" and student["agreement_with_teacher"] is not None
    assert written["models"][0]["agreement_with_teacher"] == 1.0  # the reference itself
    assert written["data"]["test_fingerprint"]


def test_bench_report_feeds_the_gate(bench_json, files):
    result = runner.invoke(app, ["gate", str(files["dir"] / "report.json"), "--json"])
    assert result.exit_code in (0, 3, 4), result.output  # a verdict, whatever the machine did
    lines = {line["name"] for line in json.loads(result.stdout)["lines"]}
    assert {"latency_ms", "peak_memory_mb", "model_size_kb", "params", "accuracy_drop"} <= lines


def test_bench_table_output(files):
    result = runner.invoke(app, ["bench", files["student"], "--target", "iot", *FAST])
    assert result.exit_code == 0, result.output
    assert "student" in result.output and "ort:CPU (CPU)" in result.output


# ------------------------------------------------------------------- GPU runtimes, fallback


def _has_provider(name: str) -> bool:
    import onnxruntime as ort

    return name in ort.get_available_providers()


def _torch_mlp():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


# A model per format a runtime may take; a new runtime is one new file in edgekd/runtimes/ (plus a
# line here only if it brings a new format).
MODEL_FOR_FORMAT = {"onnx": lambda files: files["student"], "torch": lambda files: _torch_mlp()}
GPU_ONNX_RUNTIMES = [r.name for r in all_runtimes() if r.device == "gpu" and "onnx" in r.formats]


@pytest.mark.parametrize("rt", all_runtimes(), ids=lambda r: r.name)
def test_every_runtime_runs_where_it_is_available_and_says_why_not_elsewhere(files, rt):
    assert rt.device in ("cpu", "gpu") and rt.description
    assert rt.formats and set(rt.formats) <= set(MODEL_FOR_FORMAT)
    if not rt.available():
        assert rt.why_unavailable()  # one sentence for the report
        return
    assert rt.why_unavailable() == ""
    x = np.random.default_rng(2).standard_normal((4, 16)).astype(np.float32)
    for fmt in rt.formats:
        session = rt.open(MODEL_FOR_FORMAT[fmt](files), 1)
        out = session.run({session.input_names[0]: x})
        assert out.shape == (4, 10) and np.isfinite(out).all()
        assert session.device == rt.device and not session.notes  # available: no fallback
        if session.device == "cpu":
            assert session.gpu_memory_mb() is None


@pytest.mark.parametrize("runtime", GPU_ONNX_RUNTIMES)
def test_a_session_that_falls_back_reports_cpu_and_says_so(files, runtime):
    rt = get_runtime(runtime)
    if rt.available():
        pytest.skip(f"{runtime} really works here")
    session = rt.open(files["student"], 1)  # bypasses available(): ORT falls back silently
    assert session.provider == "CPUExecutionProvider" and session.device == "cpu"
    assert session.notes and "ran on CPUExecutionProvider" in session.notes[0]
    assert session.gpu_memory_mb() is None
    assert rt.why_unavailable()


def test_a_fallback_run_is_never_labelled_gpu(files):
    if get_runtime("ort_cuda").available():
        pytest.skip("CUDA really works here")
    ref = ModelRef("student@ort_cuda", files["student"], "ort_cuda")
    (result,), _ = measure_models([ref], None, 1, 1, SETTINGS)
    assert result.provider == "CPUExecutionProvider" and result.device == "cpu"
    assert result.gpu_memory_mb is None
    assert any(
        "requested CUDAExecutionProvider, ran on CPUExecutionProvider" in n for n in result.notes
    )


def test_unavailable_gpu_runtime_is_stated_and_measures_nothing(files):
    if _has_provider("CUDAExecutionProvider") and get_runtime("ort_cuda").available():
        pytest.skip("CUDA really works here")
    report = benchmark(
        [files["student"]], "iot", runtimes=["ort_cpu", "ort_cuda"], processes=1, settings=SETTINGS
    )
    assert [m.name for m in report.models] == ["student"]
    assert all(m.device == "cpu" for m in report.models)
    assert report.bench["unavailable"][0]["runtime"] == "ort_cuda"
    assert any("ort_cuda requested but unavailable" in w for w in report.warnings)
    only_gpu = runner.invoke(app, ["bench", files["student"], "--runtime", "ort_cuda", *FAST])
    assert only_gpu.exit_code == 2 and "nothing could be measured" in only_gpu.output


@pytest.mark.gpu
def test_gpu_runtimes_report_gpu_figures(files, tmp_path):
    if get_runtime("ort_cuda").available():
        report = benchmark([files["student"]], "car", runtimes=["ort_cuda"], processes=1,
                           settings=SETTINGS)  # fmt: skip
        m = report.models[0]
        assert m.provider == "CUDAExecutionProvider" and m.device == "gpu"
    (tmp_path / "gpunet.py").write_text(FACTORY)
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        report = benchmark(["gpunet:build"], "car", data="digits", runtimes=["torch_cuda"],
                           processes=1, settings=SETTINGS)  # fmt: skip
    finally:
        sys.path.remove(str(tmp_path))
    m = report.models[0]
    assert m.provider == "torch-cuda" and m.device == "gpu" and m.gpu_memory_mb > 0


# ---------------------------------------------------------------------------- model specs

FACTORY = textwrap.dedent(
    """
    import torch

    def build():
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))

    def not_a_model():
        return 42
    """
)


def test_factory_spec_runs_on_torch_with_data_shapes(tmp_path, monkeypatch):
    (tmp_path / "tinynet.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    report = benchmark(["tinynet:build"], "iot", data="digits", processes=1, settings=SETTINGS)
    m = report.models[0]
    assert (m.name, m.format, m.provider, m.runtime) == ("build", "torch", "torch-cpu", "torch_cpu")
    assert m.params == 64 * 10 + 10 and 0 <= m.accuracy <= 1
    assert any("state dict" in n for n in m.notes)  # a factory has no file: size says so


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("tinynet:build", "input shape is unknown"),  # no --data and no edgekd_arch
        ("tinynet:not_a_model", "not a torch.nn.Module"),
        ("tinynet:missing", "has no attribute 'missing'"),
        ("nowhere_pkg.mod:build", "cannot import module"),
        ("weights.pt", "without their architecture"),
        ("missing.onnx", "no such file"),
        ("student", "not a model spec"),
    ],
)
def test_bad_model_specs_exit_2_with_one_line(tmp_path, monkeypatch, spec, needle):
    (tmp_path / "tinynet.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["bench", spec, *FAST])
    assert result.exit_code == 2, result.output
    assert needle in result.output and len(result.output.strip().splitlines()) == 1


def test_data_that_does_not_fit_the_model_is_bad_input(files, tmp_path):
    np.savez(tmp_path / "wrong.npz", x=np.zeros((20, 8), np.float32), y=np.zeros(20, np.int64))
    result = runner.invoke(
        app, ["bench", files["student"], "--data", str(tmp_path / "wrong.npz"), *FAST]
    )
    assert result.exit_code == 2
    assert "input 'x' expects shape (batch, 16) but the data gives (batch, 8)" in result.output


def test_unsafe_onnx_external_data_is_refused(tmp_path):
    path = _mlp(tmp_path / "evil.onnx", external="../../etc/passwd")
    result = runner.invoke(app, ["bench", path, *FAST])
    assert result.exit_code == 2 and "evil.onnx" in result.output


def test_fixed_batch_model_and_precision_detection(tmp_path):
    fixed = resolve_model(_mlp(tmp_path / "fixed.onnx", batch=1))
    assert fixed.inputs[0].batch == 1 and fixed.precision == "fp32"
    (result,), _ = measure_models(
        [ModelRef("fixed", fixed.spec, "ort_cpu", inputs=fixed.inputs)], None, 1, 1, SETTINGS
    )
    assert len(result.throughput) == 1  # no larger batch for a fixed batch axis, and it says so
    assert any("batch axis is fixed" in n for n in result.notes)
    with pytest.raises(Exception, match="fixed at 1"):
        measure_models([ModelRef("fixed", fixed.spec, "ort_cpu")], None, 1, 4, SETTINGS)


def test_contended_processes_are_measured_again(files, monkeypatch):
    """Processes whose samples mostly waited for the CPU are replaced, up to extra_processes."""
    import edgekd.bench.runner as run

    calls = []

    def fake_worker(spec, folder, tag):
        calls.append(spec["process"])
        share = 0.3 if len(calls) <= 2 else 1.0  # the first two processes ran on a busy host
        value = 3.0 if share < 0.9 else 1.0
        samples = {
            "samples_ms": [value + i / 1000 for i in range(30)],
            "loops": 10,
            "warmup": 1,
            "metadata": {"harness": {"cpu_share": [share] * 30}},
        }
        return {"provider": "CPUExecutionProvider", "device": "cpu", "notes": [],
                "samples": samples, "peak_rss_mb": 50.0, "gpu_memory_mb": None,
                "throughput": []}  # fmt: skip

    monkeypatch.setattr(run, "_run_worker", fake_worker)
    settings = BenchSettings(processes=3, extra_processes=3, large_batch=0)
    (result,), _ = measure_models(
        [ModelRef("s", files["student"], "ort_cpu")], None, 1, 1, settings
    )
    assert calls == [0, 1, 2, 3, 4]  # two contended processes, two replacements
    assert result.latency_ms["contended_processes"] == 2
    assert result.latency_ms["p50"] < 1.1  # the headline comes from the clean processes
    assert len(result.latency_processes) == 5  # every raw run is kept
    capped = BenchSettings(processes=3, extra_processes=1, large_batch=0)
    calls.clear()
    measure_models([ModelRef("s", files["student"], "ort_cpu")], None, 1, 1, capped)
    assert len(calls) == 4


# ------------------------------------------------------------------------- a fast start


def test_an_onnx_only_bench_imports_neither_torch_nor_scipy(files, tmp_path):
    """The parent of an ONNX-only bench (with data and a teacher) never imports torch; nor
    scipy, whose import alone was most of a small benchmark's start; nor onnx (the safety check
    reads the wire format: edgekd.safety.onnx_wire)."""
    script = (
        "import sys\n"
        "from edgekd.cli import main\n"
        f"sys.argv = ['edgekd', 'bench', {files['student']!r}, '--data', {files['data']!r}, "
        f"'--teacher', {files['teacher']!r}, '--processes', '1', '--min-time', '0.01', "
        f"'--out', {str(tmp_path / 'r.json')!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('LOADED', sorted(m for m in ('torch', 'onnx', 'scipy') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "LOADED []" in proc.stdout, proc.stdout + proc.stderr


def test_a_worker_for_an_onnx_model_imports_neither_torch_nor_onnx(files, tmp_path):
    """The worker opens the file the parent checked (its SHA-256 verified) without the onnx
    package, and runs latency, throughput and predictions in one process."""
    from edgekd.bench.runner import _prepare, _spec
    from edgekd.data import Split

    rng = np.random.default_rng(0)
    test = Split({"x": rng.standard_normal((20, 16)).astype(np.float32)}, rng.integers(0, 10, 20))
    ref = ModelRef("s", files["student"], "ort_cpu")
    job = _prepare(0, ref, test, 1, SETTINGS, tmp_path)
    spec, _ = _spec(job, 1, SETTINGS, tmp_path, 0)
    assert spec["sha256"] and spec["predict"] and spec["throughput"]
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    script = (
        "import json, sys\n"
        "from edgekd.bench._worker import main\n"
        f"out = main(json.load(open({str(tmp_path / 'spec.json')!r})))\n"
        "print('LOADED', sorted(m for m in ('torch', 'onnx', 'scipy') if m in sys.modules),"
        " len(out['throughput']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "LOADED [] 1" in proc.stdout, proc.stdout + proc.stderr
    assert Path(spec["predict"]["out"]).is_file()


def test_a_worker_refuses_a_file_changed_since_the_check(files, tmp_path):
    from edgekd.bench._worker import _model
    from edgekd.errors import BadInputError

    with pytest.raises(BadInputError, match="changed while it was being benchmarked"):
        _model({"model": files["student"], "sha256": "0" * 64})


def test_a_streamed_test_split_is_written_a_chunk_at_a_time(tmp_path, monkeypatch):
    """Issue 15: the test split of a streamed image folder goes to the workers as .npy files
    written a chunk of rows at a time (never decoded whole), and the worker's predictions from
    the mapped files are those of the same split held in memory."""
    from edgekd.bench.runner import _save_rows
    from edgekd.data import load_data
    from edgekd.data.readers import image_folder
    from edgekd.data.stream import LazyRows
    from tests.test_streaming import _toy_folder

    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))
    _toy_folder(tmp_path / "imgs")
    held = load_data(str(tmp_path / "imgs"), seed=0)
    monkeypatch.setattr(image_folder, "STREAM_MIN_BYTES", 0)
    streamed = load_data(str(tmp_path / "imgs"), seed=0, data_workers=0)
    rows = streamed.test.inputs["x"]
    assert isinstance(rows, LazyRows) and len(rows) >= 8
    asked: list[int] = []
    real = LazyRows.__getitem__

    def spy(self, index):
        out = real(self, index)
        asked.append(len(out) if out.ndim == 4 else 1)
        return out

    monkeypatch.setattr(LazyRows, "__getitem__", spy)
    monkeypatch.setattr(LazyRows, "__array__", lambda *a, **k: pytest.fail("decoded whole"))
    paths = _save_rows(tmp_path, "t", {"x": rows}, chunk_bytes=4 * rows[:1].nbytes)
    assert max(asked) <= 4 and sum(asked) > len(rows)
    np.testing.assert_array_equal(np.load(paths["x"]), held.test.inputs["x"])

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 3), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")
    ref = ModelRef("m", str(tmp_path / "m.onnx"), "ort_cpu")
    quick = BenchSettings(processes=1, min_samples=5, seconds_per_process=0.01, large_batch=0,
                          extra_processes=0)  # fmt: skip
    got = [measure_models([ref], split, 1, 1, quick)[1]["m"] for split in (streamed.test,
                                                                          held.test)]  # fmt: skip
    np.testing.assert_allclose(got[0], got[1], rtol=0, atol=0)
