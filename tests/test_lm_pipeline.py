"""`edgekd distill --task causal-lm` end to end on a tiny teacher, and its input errors."""

from __future__ import annotations

import json

import pytest
from lm_fixtures import save_hf_teacher, write_corpus
from typer.testing import CliRunner

from edgekd.cli import app


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return save_hf_teacher(tmp_path_factory.mktemp("lm") / "teacher")


def _run(*args):
    return CliRunner().invoke(app, ["distill", "--task", "causal-lm", *args])


@pytest.mark.slow
def test_causal_lm_end_to_end(teacher_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))
    corpus = write_corpus(tmp_path / "c.txt", 200)
    held_out = write_corpus(tmp_path / "t.txt", 40, start=300)
    out = tmp_path / "run"
    result = _run(
        "--teacher", str(teacher_dir), "--data", str(corpus), "--test-data", str(held_out),
        "--context", "16", "--steps", "8", "--top-k", "8", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "causal-lm" and report["method"]["name"] == "fkl"
    assert report["data"]["test"]["source"] == str(held_out)
    names = [m["name"] for m in report["models"]]
    assert names[:2] == ["teacher", "student"]
    assert report["export"]["greedy_identical"]
    assert {v["name"] for v in report["quantization"]["variants"]} >= {"fp32", "int4-b32"}
    assert report["verdict"] in ("pass", "fail", "inconclusive")
    assert str(out) in report["models"][1]["path"] and ".partial" not in json.dumps(report)
    assert (out / "student.onnx").is_file() and (out / "student" / "config.json").is_file()
    md = (out / "report.md").read_text()
    assert "## Continuations (greedy)" in md and "| prompt | teacher | student" in md


def test_a_classifier_method_is_refused(teacher_dir, tmp_path):
    corpus = write_corpus(tmp_path / "c.txt", 20)
    result = _run("--teacher", str(teacher_dir), "--data", str(corpus), "--method", "dkd",
                  "--out", str(tmp_path / "run"))  # fmt: skip
    assert result.exit_code == 2
    assert "not --task causal-lm" in result.output
    assert not (tmp_path / "run").exists()


def test_a_teacher_without_data_is_refused(teacher_dir, tmp_path):
    result = _run("--teacher", str(teacher_dir), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "needs --data" in result.output


def test_a_factory_teacher_needs_a_tokenizer(tmp_path):
    corpus = write_corpus(tmp_path / "c.txt", 20)
    result = _run("--teacher", "lm_fixtures:tiny_llama", "--data", str(corpus))
    assert result.exit_code == 2 and "needs --tokenizer" in result.output


def test_pickled_weights_are_refused_without_trust(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "pytorch_model.bin").write_bytes(b"not read")
    corpus = write_corpus(tmp_path / "c.txt", 20)
    result = _run("--teacher", str(folder), "--data", str(corpus))
    assert result.exit_code == 2
    assert "pickled weights" in result.output and "--trust-checkpoint" in result.output


def test_remote_code_is_refused_without_trust(teacher_dir, tmp_path):
    import shutil

    folder = tmp_path / "remote"
    shutil.copytree(teacher_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_x.X"}
    (folder / "config.json").write_text(json.dumps(config))
    corpus = write_corpus(tmp_path / "c.txt", 20)
    result = _run("--teacher", str(folder), "--data", str(corpus))
    assert result.exit_code == 2 and "auto_map" in result.output
