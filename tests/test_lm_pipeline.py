"""`edgekd distill --task causal-lm` end to end on a tiny teacher, and its input errors."""

from __future__ import annotations

import json

import pytest
from lm_fixtures import save_hf_teacher, write_corpus
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.report.rerender import render_run


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
        "--context", "16", "--steps", "8", "--top-k", "8", "--method", "gkd", "--prune-vocab",
        "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "causal-lm" and report["method"]["name"] == "gkd"
    # pruned: the student has only the text's tokens, the exported model reads the full ids
    assert report["prune_vocab"]["of"] == 320 and report["prune_vocab"]["kept"] < 320
    assert report["student"]["vocab_size"] == report["prune_vocab"]["kept"]
    assert (out / "student" / "vocab.json").is_file()
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
    assert render_run(out) == md  # edgekd report re-renders it from report.json alone


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


def test_prune_vocab_round_trips_ids_and_logits():
    import numpy as np
    import torch

    from edgekd.lm.student import LMStudent, LMStudentConfig
    from edgekd.lm.vocab import NEVER, PrunedLM, VocabMap

    vocab = VocabMap.from_blocks([np.array([[7, 3, 9], [3, 3, 7]])], full_size=12, eos_id=0)
    assert vocab.kept.tolist() == [0, 3, 7, 9]
    ids = np.array([[9, 7, 3, 0]])
    assert vocab.to_full(vocab.to_pruned(ids)).tolist() == ids.tolist()
    assert vocab.to_pruned(np.array([5])).tolist() == [0]  # never seen: read as end-of-text
    torch.manual_seed(0)
    student = LMStudent(LMStudentConfig(vocab_size=4, dim=16, n_layers=1, n_heads=2,
                                        n_kv_heads=1, ffn_hidden=32, context=8))  # fmt: skip
    wrapped = PrunedLM(student, vocab).eval()
    with torch.no_grad():
        full = wrapped(torch.tensor([[9, 7, 3]]))
        small = student(torch.tensor([[3, 2, 1]]))
    assert full.shape == (1, 3, 12)
    torch.testing.assert_close(full[..., [0, 3, 7, 9]], small)
    assert (full[..., [1, 2, 4, 5, 6, 8, 10, 11]] == NEVER).all()
    with torch.no_grad():  # and with the KV cache, as the export runs it
        logits, cache = wrapped(torch.tensor([[9, 7]]), use_cache=True)
        step, _ = wrapped(torch.tensor([[3]]), past_key_values=cache, use_cache=True)
    torch.testing.assert_close(step[0, -1], full[0, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # three tiny runs: ~20 s idle
def test_an_interrupted_lm_run_resumes_to_the_same_student(teacher_dir, tmp_path, monkeypatch):
    import os
    import signal

    import edgekd.lm.train as lm_train

    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))
    corpus = write_corpus(tmp_path / "c.txt", 120)
    args = ["--teacher", str(teacher_dir), "--data", str(corpus), "--context", "16", "--steps",
            "6", "--top-k", "8", "--method", "gkd", "--batch-size", "4"]  # fmt: skip
    assert _run(*args, "--out", str(tmp_path / "whole")).exit_code == 0
    one_step = lm_train._Run.one_step

    def stopped_after_two(self) -> None:
        one_step(self)
        if self.step == 2 and self.description != "timing":  # not sizing's timed steps
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(lm_train._Run, "one_step", stopped_after_two)
    out = tmp_path / "run"
    stopped = _run(*args, "--out", str(out))
    assert stopped.exit_code == 130, stopped.output
    assert f"resume with: edgekd distill --resume {out}" in stopped.output
    assert (tmp_path / "run.partial" / "checkpoint.pt").is_file() and not out.exists()
    monkeypatch.setattr(lm_train._Run, "one_step", one_step)
    resumed = CliRunner().invoke(app, ["distill", "--resume", str(out)])
    assert resumed.exit_code == 0, resumed.output
    report = json.loads((out / "report.json").read_text())
    assert report["teacher_top_k"] == "cache hit"  # the teacher's top-k was not computed again
    assert report["resumed"] and report["training"]["eval_steps"][-1] == 6
    assert not (tmp_path / "run.partial").exists() and not (out / "checkpoint.pt").exists()
    weights = "student/model.safetensors"
    assert (out / weights).read_bytes() == (tmp_path / "whole" / weights).read_bytes()
