"""``edgekd distill --task causal-lm --strategy blackbox`` end to end, resumed, and refused."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.config import DistillConfig
from edgekd.gate import gate
from edgekd.lm.blackbox.forms import FormSpec, build_requests
from edgekd.lm.blackbox.records import GenerationSettings, read_prompts
from edgekd.lm.blackbox.stage import GenerationBudget, run_generation
from edgekd.lm.blackbox.tasks import arithmetic
from edgekd.lm.blackbox.teachers import CommandTextTeacher
from edgekd.report.rerender import render_run
from edgekd.rundir import CONFIG_FILE, partial_dir

FAKE = Path(__file__).with_name("fake_text_teacher.py")
runner = CliRunner()


def write_prompts(path: Path, n: int, seed: int, answers: bool = True) -> Path:
    rows = [
        {"prompt": r.prompt, **({"answer": r.answer} if answers else {})}
        for r in arithmetic(n, seed=seed, prefix=f"s{seed}-")
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def fake_cmd(tmp_path: Path, mode: str = "good") -> str:
    return shlex.join([sys.executable, str(FAKE), mode, str(tmp_path / "asked.txt")])


@pytest.mark.slow
def test_blackbox_pipeline_resumes_without_asking_twice_and_reports(tmp_path):
    train = write_prompts(tmp_path / "train.jsonl", 40, seed=1)
    test = write_prompts(tmp_path / "test.jsonl", 6, seed=2)
    out = tmp_path / "run"
    config = DistillConfig(
        task="causal-lm", strategy="blackbox", teacher_cmd=fake_cmd(tmp_path), data=str(train),
        test_data=str(test), blackbox_form="rationales", samples=2, steps=8, context=64,
        out=str(out), device="cpu", evolve=4,
    )  # fmt: skip
    # An interrupted run: its folder, its configuration and half of the teacher's answers.
    work = partial_dir(out)
    work.mkdir()
    (work / CONFIG_FILE).write_text(json.dumps({**dataclasses.asdict(config), "out": str(out)}))
    settings = GenerationSettings(samples=2, max_new_tokens=64)
    records = read_prompts(train)[:20]
    requests = build_requests(FormSpec("rationales"), records, settings)
    teacher = CommandTextTeacher(config.teacher_cmd)
    run_generation(requests, teacher, work / "teacher_data.jsonl", GenerationBudget())

    result = runner.invoke(app, ["distill", "--resume", str(out), "--json"])
    assert result.exit_code == 0, result.output
    asked = (tmp_path / "asked.txt").read_text().split()
    # every prompt asked exactly once: 40 training, 6 held out, 4 to evolve and their 4 answers
    assert len(asked) == len(set(asked)) == 40 + 6 + 4 + 4
    report = json.loads((out / "report.json").read_text())
    assert report["strategy"] == "blackbox" and report["generation"]["from_log"] == 20
    assert report["generation"]["from_teacher"] == 26 + 4
    assert report["generation"]["evolve"]["kept"] == 4
    assert report["filtering"]["examples"] == 2 * report["filtering"]["texts_kept"]  # MT-CoT
    assert report["held_out"]["teacher_accuracy"] == 1.0
    assert 0.0 <= report["held_out"]["accuracy"] <= 1.0
    assert report["models"] and report["quantization"]["chosen"]
    lines = (out / "teacher_data.jsonl").read_text().splitlines()
    assert len(lines) == 54 and (out / "tokenizer.json").is_file()
    # edgekd gate reads it: the run's own verdict is the gate's; no teacher perplexity here
    result = gate(out / "report.json")
    assert str(result.verdict).lower() == report["verdict"]
    assert {line.name: str(line.verdict) for line in result.lines}.get(
        "perplexity_increase", "NOT MEASURED") == "NOT MEASURED"
    markdown = (out / "report.md").read_text()
    assert "| prompt | reference | teacher | student |" in markdown
    assert render_run(out) == markdown  # edgekd report re-renders it from report.json alone
    assert not work.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "needs --data prompts.jsonl"),
        (["--data", "DATA", "--teacher-generate", "x"], "exactly one teacher"),
        (["--data", "missing.jsonl"], "missing.jsonl: cannot read"),
        (["--data", "DATA", "--teacher-temperature", "inf"], "teacher_temperature must be"),
        (["--data", "DATA", "--blackbox-form", "poems"], "blackbox_form must be one of"),
        (["--data", "DATA", "--max-teacher-tokens", "0"], "max_teacher_tokens must be >= 1"),
        (["--data", "NOANSWERS", "--blackbox-form", "icl"], "icl needs 3 other records"),
    ],
)
def test_blackbox_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    data = write_prompts(tmp_path / "p.jsonl", 12, seed=3)
    bare = write_prompts(tmp_path / "bare.jsonl", 12, seed=4, answers=False)
    args = [str(data) if a == "DATA" else str(bare) if a == "NOANSWERS" else a for a in extra]
    result = runner.invoke(
        app,
        ["distill", "--task", "causal-lm", "--strategy", "blackbox", "--teacher-cmd",
         fake_cmd(tmp_path), "--out", str(tmp_path / "out"), *args],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
