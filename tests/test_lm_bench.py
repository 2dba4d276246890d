"""The LM benchmark (edgekd/lm/bench.py): quality against hand-worked values, speed and memory
figures present and sane (never timed against a limit), continuations, the side-by-side table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from lm_device_fixtures import VOCAB, tiny_gpt2, tiny_llama, tiny_student

from edgekd.bench.stats import LatencySamples
from edgekd.errors import BadInputError
from edgekd.lm.bench import bench_lm, quality, side_by_side, time_decoding
from edgekd.lm.decode import TorchLM
from edgekd.lm.export import export_lm


class _Fixed(torch.nn.Module):
    """ids -> the same next-token logits at every position (no cache: the plain-module path)."""

    def __init__(self, logits) -> None:
        super().__init__()
        self.row = torch.tensor(logits, dtype=torch.float32)

    def forward(self, input_ids):
        return self.row.expand(*input_ids.shape, len(self.row))


def test_quality_by_hand():
    # teacher p = (1/2, 1/4, 1/4); student uniform over 3.
    teacher = TorchLM(_Fixed(np.log([0.5, 0.25, 0.25])))
    uniform = TorchLM(_Fixed([0.0, 0.0, 0.0]))
    blocks = np.array([[0, 0, 1, 2], [2, 0, 0, 0]])  # targets: 0 1 2 / 0 0 0
    got = quality({"teacher": teacher, "uniform": uniform}, blocks, teacher=teacher)
    assert got["uniform"].perplexity == pytest.approx(3.0)
    # teacher NLL: targets 0,1,2,0,0,0 -> 4 ln 2 + 2 ln 4 = 8 ln 2 over 6 positions
    assert got["teacher"].perplexity == pytest.approx(math.exp(8 * math.log(2) / 6))
    # KL(teacher || uniform) = ln 3 - H(teacher) = ln 3 - 1.5 ln 2 at every position
    assert got["uniform"].kl_to_teacher == pytest.approx(math.log(3) - 1.5 * math.log(2))
    assert got["teacher"].kl_to_teacher == pytest.approx(0.0, abs=1e-12)
    assert got["teacher"].top1_agreement == 1.0 and got["uniform"].tokens == 6
    # uniform's argmax is token 0 (the first maximum), as the teacher's
    assert got["uniform"].top1_agreement == 1.0


def test_quality_leaves_agreement_out_when_vocabularies_differ():
    teacher = TorchLM(_Fixed([0.0, 1.0, 0.0, 0.0]))
    got = quality({"m": TorchLM(_Fixed([0.0, 0.0, 0.0]))}, np.array([[0, 1, 2]]), teacher)
    assert got["m"].top1_agreement is None and got["m"].kl_to_teacher is None
    assert got["m"].perplexity == pytest.approx(3.0)


def test_quality_rejects_bad_blocks():
    with pytest.raises(BadInputError, match="held-out blocks"):
        quality({"m": TorchLM(_Fixed([0.0, 0.0]))}, np.zeros((2, 1), dtype=int))
    with pytest.raises(BadInputError, match="do not fit"):
        quality({"m": TorchLM(_Fixed([0.0, 0.0]))}, np.array([[0, 5, 1]]))


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2])
def test_transformers_models_decode_with_their_cache(build):
    model = build()
    prompt = [3, 1, 4, 1, 5]
    cached = TorchLM(model).greedy(prompt, 5).tokens
    with torch.no_grad():  # no cache at all: the full sequence every step
        ids = list(prompt)
        for _ in range(5):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    assert cached == tuple(ids[len(prompt):])


def test_time_decoding_collects_one_sample_per_step():
    speed = time_decoding(TorchLM(tiny_student()), prompt_tokens=6, new_tokens=4, runs=2,
                          vocab_size=VOCAB)
    assert len(speed.ttft.samples_ms) == 2 and len(speed.decode.samples_ms) == 2 * 3
    assert speed.decode_tokens_per_s == pytest.approx(1000 / speed.decode_ms_per_token)


def test_time_decoding_keeps_each_repeat_apart():
    speed = time_decoding(TorchLM(tiny_student()), prompt_tokens=6, new_tokens=4, runs=2,
                          vocab_size=VOCAB, prefills=3)
    assert [len(r.samples_ms) for r in speed.ttft_runs] == [3, 3]  # 3 prefills a repeat
    assert [len(r.samples_ms) for r in speed.decode_runs] == [3, 3]  # new_tokens - 1 steps
    assert speed.ttft.samples_ms == sum((r.samples_ms for r in speed.ttft_runs), ())
    assert [r.metadata["repeat"] for r in speed.decode_runs] == [1, 2]


def test_bench_lm_rows_for_teacher_onnx_and_torch(tmp_path):
    student = tiny_student()
    onnx_path = export_lm(student, tmp_path / "s.onnx", [[1, 2]], new_tokens=2).path
    blocks = np.random.default_rng(0).integers(0, VOCAB, (2, 13))
    prompts = [[1, 2, 3], [7]]
    rows = bench_lm({"teacher": tiny_llama(), "student": onnx_path, "student_pt": student},
                    blocks, prompts, teacher="teacher", prompt_tokens=5, context_tokens=24,
                    new_tokens=3, runs={"teacher": 1, "student": 1, "student_pt": 2},
                    prefills={"student_pt": 2})
    by = {r.name: r for r in rows}
    assert by["teacher"].top1_agreement is None and by["teacher"].format == "torch"
    assert 0 <= by["student"].top1_agreement <= 1 and by["student"].kl_to_teacher > 0
    assert by["student"].perplexity == pytest.approx(by["student_pt"].perplexity, rel=1e-4)
    assert by["student"].continuations == by["student_pt"].continuations
    assert all(len(c) == 3 for r in rows for c in r.continuations)
    assert by["student"].peak_memory_mb > 0 and by["student_pt"].peak_memory_mb is None
    assert by["student"].size_bytes > 0 and by["student"].decode_tokens_per_s > 0
    assert set(by["student"].to_dict()) >= {"perplexity", "ttft_ms", "decode_tokens_per_s",
                                            "peak_memory_mb", "top1_agreement", "kl_to_teacher"}
    # per repeat, as the gate reads them back: runs=1 with bench_lm's 4 prefills
    row = json.loads(json.dumps(by["student"].to_dict()))
    ttft = [LatencySamples.from_dict(r) for r in row["ttft_runs"]]
    decode = [LatencySamples.from_dict(r) for r in row["decode_runs"]]
    assert [len(r.samples_ms) for r in ttft] == [4] and [len(r.samples_ms) for r in decode] == [2]
    assert ttft[0].metadata["unit"] == "process"  # an ONNX model's run: a fresh process
    assert by["student_pt"].ttft_runs[0]["metadata"]["unit"] == "repeat"  # PyTorch: in this one
    # counts per model: student_pt's own 2 runs x 2 prefills
    assert [len(r["samples_ms"]) for r in by["student_pt"].ttft_runs] == [2, 2]
    assert len(by["teacher"].ttft_runs) == 1


def test_bench_rows_teacher_counts():
    from edgekd.lm.pipeline import (
        BENCH_PREFILLS,
        BENCH_RUNS,
        TEACHER_PREFILLS,
        TEACHER_RUNS,
        _per_row,
    )
    models = {"teacher": 0, "student": 0, "student-fp32": 0, "teacher-onnx": 0}
    assert _per_row(models, BENCH_RUNS, TEACHER_RUNS) == {
        "teacher": 3, "student": 5, "student-fp32": 5, "teacher-onnx": 3}
    assert _per_row(models, BENCH_PREFILLS, TEACHER_PREFILLS)["student"] == 24


def test_side_by_side_table():
    table = side_by_side(["a|b", "c"], {"teacher": ["x  y", "z"], "student": ["w\nv", ""]})
    assert table.splitlines() == [
        "| prompt | teacher | student |",
        "|---|---|---|",
        "| a\\|b | x y | w v |",
        "| c | z |   |",
    ]
    with pytest.raises(BadInputError, match="1 continuations for 2 prompts"):
        side_by_side(["a", "b"], {"m": ["x"]})


def test_budget_lines_from_a_row():
    from edgekd.lm.bench import LMBenchResult, budget_lines
    from edgekd.targets import LMBudget

    row = LMBenchResult(name="s", format="onnx", path="s.onnx", size_bytes=3 * 2**20,
                        perplexity=13.0, top1_agreement=0.5, kl_to_teacher=0.1, ttft_ms=1.0,
                        ttft_p95_ms=2.0, decode_ms_per_token=3.0, decode_p95_ms=4.0,
                        decode_tokens_per_s=333.3, peak_memory_mb=None, prompt_tokens=4,
                        context_tokens=8, continuations=())
    budget = LMBudget(decode_ms_per_token=5.0, ttft_ms=1.0, prompt_tokens=4, model_size_mb=2.0,
                      memory_mb=100.0, context_tokens=8, perplexity_increase=0.25)
    lines = {line.name: line for line in budget_lines(row, budget, teacher_perplexity=10.0)}
    assert lines["decode_ms_per_token"].value == 4.0 and lines["decode_ms_per_token"].passed
    assert lines["ttft_ms"].passed is False and lines["model_size_mb"].value == pytest.approx(3.0)
    assert lines["memory_mb"].passed is None  # not measured: the gate cannot decide
    assert lines["perplexity_increase"].value == pytest.approx(0.3)
    ppl = lines["perplexity_increase"]
    assert ppl.kind == "relative" and not ppl.passed
    assert budget_lines(row, LMBudget(), 10.0) == []  # no [lm] table: no lines


def test_variant_meter_feeds_the_quantization_choice(tmp_path):
    from edgekd.lm.bench import variant_meter
    from edgekd.lm.quantize import LMQuantConfig, select_lm_quantization

    path = export_lm(tiny_student(), tmp_path / "s.onnx", [[1, 2]], new_tokens=2).path
    blocks = np.random.default_rng(0).integers(0, VOCAB, (2, 9))
    got = select_lm_quantization(path, tmp_path, [LMQuantConfig("int4", block_size=16)],
                                 variant_meter(blocks, prompt_tokens=4, new_tokens=3, runs=1),
                                 max_increase=10.0)
    assert {v.name for v in got.variants} == {"fp32", "int4-b16"}
    assert all(v.perplexity > 1 and v.decode_tokens_per_s > 0 for v in got.variants)
    assert got.chosen in got.variants


def test_onnx_side_imports_no_torch():
    """The benchmark's child processes and the ONNX-side modules stay free of torch."""
    import subprocess
    import sys

    code = ("import sys, edgekd.lm.bench, edgekd.lm._memprobe, edgekd.lm.decode, "
            "edgekd.lm.metrics, edgekd.lm.quantize; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
