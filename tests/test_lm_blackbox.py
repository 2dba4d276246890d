"""Black-box LM distillation: prompt files, the teacher command protocol, the recorded generation
stage (resume, cache, budget, retries), the three forms and the filters."""

from __future__ import annotations

import json
import shlex
import sys
from collections import Counter
from pathlib import Path

import pytest

from edgekd.errors import BadInputError, DataError
from edgekd.lm.blackbox.filters import FilterSpec, filter_texts, jaccard, word_ngrams
from edgekd.lm.blackbox.forms import (
    ANSWER_TAG,
    EXPLAIN_TAG,
    FormSpec,
    build_requests,
    eval_prompt,
    normalise_answer,
    reference_examples,
    split_rationale,
    to_examples,
)
from edgekd.lm.blackbox.records import GenerationSettings, PromptRecord, read_prompts
from edgekd.lm.blackbox.stage import (
    AnswerCache,
    GenerationBudget,
    run_generation,
    whitespace_tokens,
)
from edgekd.lm.blackbox.tasks import arithmetic, operands, worked_rationale
from edgekd.lm.blackbox.teachers import CommandTextTeacher, TeacherReply

FAKE = Path(__file__).with_name("fake_text_teacher.py")


def teacher(tmp_path: Path, mode: str = "good", timeout_s: float = 60.0) -> CommandTextTeacher:
    log = tmp_path / f"asked-{mode}.txt"
    cmd = shlex.join([sys.executable, str(FAKE), mode, str(log)])
    return CommandTextTeacher(cmd, timeout_s=timeout_s)


def asked(tmp_path: Path, mode: str = "good") -> list[str]:
    path = tmp_path / f"asked-{mode}.txt"
    return path.read_text().split() if path.exists() else []


def requests_for(records, form="answers", samples=1, max_new_tokens=64):
    settings = GenerationSettings(temperature=0.0, max_new_tokens=max_new_tokens, samples=samples)
    return build_requests(FormSpec(form), records, settings)


# -- prompt files -------------------------------------------------------------------------------


def test_read_prompts_names_file_line_and_field(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text('{"prompt": "hi", "answer": "yo"}\n\n{"id": "b", "prompt": "2+2?"}\n')
    records = read_prompts(good)
    assert [(r.id, r.answer) for r in records] == [("1", "yo"), ("b", None)]
    cases = {
        '{"prompt": ""}\n': "p.jsonl:1: field 'prompt'",
        '{"answer": "x"}\n': "field 'prompt'",
        "[1, 2]\n": "expected a JSON object",
        "{oops\n": "p.jsonl:1: not JSON",
        '{"id": 1, "prompt": "a"}\n{"id": 1, "prompt": "b"}\n': "p.jsonl:2: duplicate id",
        "\n\n": "no prompt records",
    }
    for text, message in cases.items():
        good.write_text(text)
        with pytest.raises(DataError, match=message.replace("+", r"\+")):
            read_prompts(good)
    good.write_bytes(b'{"prompt": "\xff"}\n')
    with pytest.raises(DataError, match="not UTF-8"):
        read_prompts(good)


def test_generation_settings_refuse_bad_values():
    for kwargs in ({"temperature": float("inf")}, {"top_p": 0}, {"max_new_tokens": 0},
                   {"samples": 0}):
        with pytest.raises(DataError):
            GenerationSettings(**kwargs)


# -- the generation stage -----------------------------------------------------------------------


def test_stage_answers_records_every_request_and_resumes_without_asking_twice(tmp_path):
    records = arithmetic(6, seed=1)
    requests = requests_for(records)
    log = tmp_path / "teacher_data.jsonl"
    # An interrupted first run: the call budget stops it after 2 calls of 2 requests.
    replies, summary = run_generation(
        requests, teacher(tmp_path), log, GenerationBudget(max_calls=2, batch_size=2)
    )
    assert summary.from_teacher == 4 and summary.over_budget == 2 and len(replies) == 4
    # A kill mid-write leaves a cut line: it is dropped, not mis-read.
    with open(log, "a") as fh:
        fh.write('{"id": "q9", "key": "abc", "te')
    replies, summary = run_generation(requests, teacher(tmp_path), log, GenerationBudget())
    assert summary.from_log == 4 and summary.from_teacher == 2
    assert sorted(asked(tmp_path)) == sorted(r.id for r in requests)  # each asked exactly once
    for record in records:
        assert replies[record.id].texts == (record.answer,)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 6 and all(line["settings"]["temperature"] == 0.0 for line in lines)


def test_cache_makes_a_second_run_free(tmp_path):
    records = arithmetic(3, seed=2)
    requests = requests_for(records)
    t = teacher(tmp_path)
    run_generation(requests, t, tmp_path / "a.jsonl", cache=AnswerCache(t.identity, tmp_path))
    _, summary = run_generation(
        requests, t, tmp_path / "b.jsonl", cache=AnswerCache(t.identity, tmp_path)
    )
    assert summary.from_cache == 3 and summary.calls == 0 and summary.tokens == 0
    assert len(asked(tmp_path)) == 3
    # Different sampling settings are different questions.
    other = requests_for(records, max_new_tokens=32)
    _, summary = run_generation(
        other, t, tmp_path / "c.jsonl", cache=AnswerCache(t.identity, tmp_path)
    )
    assert summary.from_teacher == 3


def test_token_budget_is_never_exceeded(tmp_path):
    records = arithmetic(10, seed=3)
    requests = requests_for(records, max_new_tokens=5)
    worst = [whitespace_tokens(r.prompt) + 5 for r in requests]
    budget = sum(worst[:4]) + 1  # room for 4 requests' worst case, not 5
    _, summary = run_generation(
        requests, teacher(tmp_path), tmp_path / "log.jsonl", GenerationBudget(max_tokens=budget)
    )
    assert summary.tokens <= budget
    assert summary.from_teacher == 4 and summary.over_budget == 6
    assert len(asked(tmp_path)) == 4


def test_failures_are_retried_a_bounded_number_of_times_then_counted(tmp_path):
    records = arithmetic(3, seed=4)
    requests = requests_for(records)
    replies, summary = run_generation(
        requests, teacher(tmp_path, "flaky"), tmp_path / "log.jsonl", GenerationBudget(retries=1)
    )
    assert summary.retried == 3 and summary.from_teacher == 3 and summary.failed == 0
    assert all(reply.ok for reply in replies.values())

    for mode, error in (("crash", "exit code 3"), ("malformed", "no answer line")):
        replies, summary = run_generation(
            requests, teacher(tmp_path, mode), tmp_path / f"{mode}.jsonl",
            GenerationBudget(retries=2),
        )
        assert summary.failed == 3 and summary.from_teacher == 0
        assert all(error in (reply.error or "") for reply in replies.values())
        assert len(asked(tmp_path, mode)) == 9  # 1 attempt + 2 retries each, never more
    assert summary.malformed_lines == 9


def test_partial_answers_and_timeouts(tmp_path):
    records = arithmetic(4, seed=5)
    _, summary = run_generation(
        requests_for(records), teacher(tmp_path, "partial"), tmp_path / "p.jsonl",
        GenerationBudget(retries=0, batch_size=4),
    )
    assert summary.from_teacher == 2 and summary.failed == 2
    replies, summary = run_generation(
        requests_for(records[:1]), teacher(tmp_path, "sleep", timeout_s=0.5),
        tmp_path / "s.jsonl", GenerationBudget(retries=0),
    )
    assert summary.failed == 1 and "timed out" in replies[records[0].id].error


def test_command_teacher_refuses_an_unrunnable_command(tmp_path):
    with pytest.raises(BadInputError, match="--teacher-cmd"):
        CommandTextTeacher("")
    t = CommandTextTeacher("/nonexistent/teacher --flag")
    with pytest.raises(BadInputError, match="cannot run"):
        run_generation(requests_for(arithmetic(1)), t, tmp_path / "x.jsonl")


# -- forms ---------------------------------------------------------------------------------------


def test_rationales_train_two_tasks_and_drop_answers_that_disagree(tmp_path):
    records = [PromptRecord("a", "What is 12 plus 30?", "42"),
               PromptRecord("b", "What is 50 minus 8?", "42"),
               PromptRecord("c", "What is 1 plus 1?", None)]
    texts = {
        "a": ["12 + 30:\ncolumn 1: 2 + 0 = 2\nAnswer: 42", "some words\nAnswer: 41"],
        "b": ["no final line at all\nstill none", "42"],  # the second: a labels-only teacher
        "c": ["1 + 1 is two\nanswer = 2."],
    }
    examples, dropped = to_examples(FormSpec("rationales"), records, texts)
    assert dropped == Counter(
        {"disagrees_with_reference": 1, "no_answer_line": 1, "answer_only": 1}
    )
    assert [(e.record_id, e.prompt.endswith(EXPLAIN_TAG), e.target) for e in examples] == [
        ("a", True, "12 + 30:\ncolumn 1: 2 + 0 = 2"), ("a", False, "42"), ("b", False, "42"),
        ("c", True, "1 + 1 is two"), ("c", False, "2."),
    ]
    assert eval_prompt(FormSpec("rationales"), records[0], records).endswith(ANSWER_TAG)
    request = build_requests(FormSpec("rationales"), records, GenerationSettings(samples=3))[0]
    assert "step by step" in request.prompt and request.n == 3


def test_icl_prompts_hold_k_demonstrations_never_the_record_itself():
    records = arithmetic(6, seed=6)
    spec = FormSpec("icl", icl_shots=3, seed=1)
    for record in records:
        prompt = eval_prompt(spec, record, records)
        assert prompt.count("Q: ") == 4 and prompt.endswith(f"Q: {record.prompt}\nA:")
        assert prompt.count(record.prompt) == 1
        assert prompt == eval_prompt(spec, record, records)  # deterministic
    with pytest.raises(DataError, match="icl needs 3"):
        eval_prompt(spec, records[0], records[:3])


def test_answer_parsing_and_normalising():
    assert split_rationale("a\nb\nFinal answer: 1,234.") == ("a\nb", "1,234.")
    assert split_rationale("no answer here") is None
    assert normalise_answer("1,234.") == normalise_answer(" 1234 ") == "1234"
    assert normalise_answer("Paris!") == "paris"
    with pytest.raises(DataError, match="no 'answer'"):
        reference_examples(FormSpec(), [PromptRecord("x", "q")])
    with pytest.raises(DataError, match="--blackbox-form"):
        FormSpec("vibes")


def test_worked_rationales_are_right():
    for record in arithmetic(50, digits=3, seed=7):
        a, b, op = operands(record.prompt)
        reasoning_answer = split_rationale(worked_rationale(a, b, op))
        assert reasoning_answer is not None and reasoning_answer[1] == record.answer


# -- filters -------------------------------------------------------------------------------------


def test_each_filter_counts_what_it_drops(tmp_path):
    record = PromptRecord("r", "Say something about cats.", None)
    other = PromptRecord("s", "say   something about CATS.", None)  # the same prompt, reworded
    base = "cats are small furry animals that like to sleep in the sun all day long"
    reply = TeacherReply("r", (
        base,
        "   ",  # empty
        " ".join(["word"] * 20),  # truncated (20 >= max_new_tokens 20)
        "ok",  # too short (min 3)
        base.upper(),  # duplicate after normalising
        base.replace("long", "longer"),  # near duplicate
        "dogs are loyal animals who enjoy long walks",  # kept
    ))
    replies = {"r": reply, "s": TeacherReply("s", (base,))}
    kept, dropped = filter_texts(
        [record, other], replies, 20, FilterSpec(min_tokens=3), whitespace_tokens
    )
    assert kept == {"r": [base, "dogs are loyal animals who enjoy long walks"]}
    assert dropped["empty"] == dropped["truncated"] == dropped["too_short"] == 1
    assert dropped["duplicate"] == 2 and dropped["near_duplicate"] == 1
    # finish_reasons beat the length guess.
    stopped = TeacherReply("r", (" ".join(["w"] * 20),), ("stop",))
    kept, dropped = filter_texts([record], {"r": stopped}, 20, FilterSpec(), whitespace_tokens)
    assert dropped["truncated"] == 0 and len(kept["r"]) == 1


def test_answer_check_command(tmp_path):
    check = tmp_path / "check.py"
    check.write_text(
        "import json, sys\n"
        "rows = [json.loads(l) for l in open(sys.argv[1])]\n"
        "with open(sys.argv[2], 'w') as f:\n"
        "    for r in rows:\n"
        "        if r['text'] != 'skip':\n"
        "            ok = r['text'] == r['reference']\n"
        "            f.write(json.dumps({'id': r['id'], 'ok': ok}) + '\\n')\n"
    )
    records = [PromptRecord("a", "q1", "1"), PromptRecord("b", "q2", "2"),
               PromptRecord("c", "q3", "3")]
    replies = {"a": TeacherReply("a", ("1",)), "b": TeacherReply("b", ("5",)),
               "c": TeacherReply("c", ("skip",))}
    spec = FilterSpec(answer_check=shlex.join([sys.executable, str(check)]))
    kept, dropped = filter_texts(records, replies, 10, spec, whitespace_tokens)
    assert kept == {"a": ["1"]} and dropped["check_failed"] == 2
    bad = FilterSpec(answer_check=shlex.join([sys.executable, "-c", "raise SystemExit(4)"]))
    with pytest.raises(BadInputError, match="--answer-check .* failed"):
        filter_texts(records, replies, 10, bad, whitespace_tokens)


def test_jaccard_by_hand():
    a, b = word_ngrams("the cat sat on"), word_ngrams("the cat sat down")
    # 3-grams: {the cat sat, cat sat on} and {the cat sat, cat sat down}: 1 shared of 3.
    assert jaccard(a, b) == pytest.approx(1 / 3)
    assert jaccard(set(), set()) == 1.0


def test_evolve_asks_for_harder_prompts_and_keeps_new_ones():
    from edgekd.lm.blackbox.forms import EVOLVE_INSTRUCTION, evolve_requests, evolved_records

    records = arithmetic(3, seed=8)
    asked = evolve_requests(records, GenerationSettings(), count=5, seed=0)
    assert len(asked) == 5 and all(r.prompt.startswith(EVOLVE_INSTRUCTION) for r in asked)
    assert {r.prompt for r in asked[:3]} == {EVOLVE_INSTRUCTION + r.prompt for r in records}
    assert len({r.id for r in asked}) == 5
    replies = {
        "a": TeacherReply("a", ("Task: What is 470 plus 389?",)),
        "b": TeacherReply("b", ("  ",)),
        "c": TeacherReply("c", (records[0].prompt.upper(),)),  # the same prompt again
        "d": TeacherReply("d", error="timed out"),
    }
    new, dropped = evolved_records(records, replies)
    assert [(r.id, r.prompt, r.answer) for r in new] == [("new-a", "What is 470 plus 389?", None)]
    assert dropped == Counter({"empty": 2, "duplicate": 1})
