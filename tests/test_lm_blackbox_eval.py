"""Black-box LM: training pairs as tokens, held-out evaluation, and a local model as a teacher
that is used only through generation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgekd.lm.blackbox.evaluate import evaluate_held_out, final_answer, side_by_side
from edgekd.lm.blackbox.forms import Example, FormSpec
from edgekd.lm.blackbox.records import PromptRecord
from edgekd.lm.blackbox.sft import IGNORE, encode_examples, encode_pair, torch_callables
from edgekd.lm.blackbox.teachers import CallLog, TeacherRequest


def chars(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_encode_pair_masks_the_prompt_and_keeps_the_target():
    ids, labels = encode_pair("abc", "xy", chars, eos_id=0, context=10)
    assert ids == [97, 98, 99, 32, 120, 121, 0]
    assert labels == [IGNORE] * 3 + [32, 120, 121, 0]
    # A long prompt loses its beginning; the target never does.
    ids, labels = encode_pair("abcdefgh", "xy", chars, eos_id=0, context=6)
    assert ids == [103, 104, 32, 120, 121, 0] and labels[:2] == [IGNORE, IGNORE]
    assert encode_pair("a", "x" * 9, chars, eos_id=0, context=10) is None


def test_encode_examples_pads_and_counts_drops():
    out = encode_examples(
        [Example("a", "ab", "c"), Example("b", "a", "z" * 20)], chars, eos_id=0, pad_id=1,
        context=8,
    )
    assert len(out) == 1 and out.dropped_too_long == 1
    assert out.input_ids[0].tolist() == [97, 98, 32, 99, 0, 1, 1, 1]
    assert out.labels[0].tolist() == [IGNORE, IGNORE, 32, 99, 0] + [IGNORE] * 3


def test_evaluate_held_out_by_hand():
    records = [
        PromptRecord("1", "What is 2 plus 2?", "4"), PromptRecord("2", "What is 3 plus 3?", "6"),
        PromptRecord("3", "What is 5 plus 5?", "10"), PromptRecord("4", "Say hi", None),
    ]
    teacher = {"1": ["4"], "2": ["7"], "3": ["10"], "4": ["hi"]}
    student = {"What is 2 plus 2?": "4\nmore text", "What is 3 plus 3?": "7",
               "What is 5 plus 5?": "1,0", "Say hi": "hello"}

    def generate(prompts, max_new_tokens):
        return [student[p] for p in prompts]

    def score(prompt, target):  # every token costs ln 4: perplexity 4
        return math.log(4) * len(target), len(target)

    result = evaluate_held_out(FormSpec(), records, teacher, generate, score)
    # references: 4 == 4, 7 != 6, "1,0" normalises to 10 == 10: 2 of 3.
    assert result.accuracy == pytest.approx(2 / 3)
    assert result.teacher_accuracy == pytest.approx(2 / 3)  # 4 ok, 7 wrong, 10 ok
    assert result.agreement == pytest.approx(3 / 4)  # 4, 7, 10 agree; hello != hi
    assert result.teacher_answer_perplexity == pytest.approx(4.0)
    assert "| Say hi |  | hi | hello |" in side_by_side(result)


def test_final_answer_reads_the_form():
    assert final_answer(FormSpec("rationales"), "a\nb\nAnswer: 12") == "12"
    assert final_answer(FormSpec("answers"), " 12 \nsomething else") == "12"
    assert final_answer(FormSpec("answers"), "") == ""


@pytest.fixture(scope="module")
def tiny_lm():
    pytest.importorskip("transformers")
    from lm_fixtures import hf_tokenizer, tiny_gpt2

    return tiny_gpt2(), hf_tokenizer()


def test_generating_teacher_is_deterministic_per_request(tiny_lm):
    from edgekd.lm.blackbox.generate import GeneratingTeacher

    model, tok = tiny_lm
    teacher = GeneratingTeacher(model, tok, "tiny")
    requests = [TeacherRequest(str(i), "What is", 2, 0.8, 0.9, 6, 0) for i in range(3)]
    log = CallLog()
    all_at_once = teacher.answer(requests, log)
    one_by_one = [teacher.answer([r], log)[0] for r in reversed(requests)][::-1]
    assert [r.texts for r in all_at_once] == [r.texts for r in one_by_one]
    assert all(len(r.texts) == 2 and len(r.finish_reasons) == 2 for r in all_at_once)
    greedy = teacher.answer([TeacherRequest("g", "What is", 1, 0.0, 1.0, 4, 0)], log)[0]
    assert greedy.finish_reasons[0] in ("stop", "length") and log.calls == 5


def test_torch_callables_score_is_the_cross_entropy_of_the_target(tiny_lm):
    import torch

    model, tok = tiny_lm

    def encode(text):
        return tok(text)["input_ids"]

    generate, score = torch_callables(model, encode, tok.decode, tok.eos_token_id, context=32)
    nll, count = score("What is", "42")
    ids, labels = encode_pair("What is", "42", encode, tok.eos_token_id, 32)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1).numpy()
    manual = -sum(logp[t - 1, labels[t]] for t in range(1, len(ids)) if labels[t] != IGNORE)
    assert count == sum(x != IGNORE for x in labels) and nll == pytest.approx(manual, rel=1e-4)
    texts = generate(["What is"], 3)
    assert len(texts) == 1 and isinstance(texts[0], str)
    assert np.isfinite(nll)


def test_teacher_generate_loads_a_local_folder_as_a_text_teacher(tmp_path):
    pytest.importorskip("transformers")
    from lm_fixtures import save_hf_teacher

    from edgekd.config import DistillConfig
    from edgekd.lm.blackbox.generate import GeneratingTeacher
    from edgekd.lm.blackbox.pipeline import _teacher

    folder = save_hf_teacher(tmp_path / "hf", kind="llama")
    teacher, tokenizer = _teacher(DistillConfig(task="causal-lm", teacher_generate=str(folder)))
    assert isinstance(teacher, GeneratingTeacher) and tokenizer.vocab_size == 320
    reply = teacher.answer([TeacherRequest("a", "The", 1, 0.0, 1.0, 3, 0)], CallLog())[0]
    assert reply.ok and len(reply.texts) == 1
