"""Evaluation on held-out prompts: accuracy against references, agreement with the teacher,
perplexity of the teacher's answers under the student, and a side-by-side table.

The student is reached through two callables, so this module works for a PyTorch student, an
ONNX one or a stand-in in tests:

    generate(prompts, max_new_tokens) -> texts        greedy continuations
    score(prompt, target) -> (nll_sum, n_tokens)      the student's loss on ``target`` after
                                                      ``prompt`` (natural log, summed)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from edgekd.lm.blackbox.forms import (
    EXPLAIN_TAG,
    FormSpec,
    eval_prompt,
    normalise_answer,
    split_rationale,
)
from edgekd.lm.blackbox.records import PromptRecord

Generate = Callable[[Sequence[str], int], list[str]]
Score = Callable[[str, str], tuple[float, int]]


@dataclass(frozen=True)
class HeldOutResult:
    prompts: int
    accuracy: float | None  # exact match (normalised) against the references given
    teacher_accuracy: float | None
    agreement: float | None  # the student's answer equals the teacher's
    teacher_answer_perplexity: float | None
    samples: tuple[tuple[str, str, str, str], ...]  # (prompt, reference, teacher, student)

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["samples"] = [
            dict(zip(("prompt", "reference", "teacher", "student"), row, strict=True))
            for row in self.samples
        ]
        return out


def final_answer(form: FormSpec, text: str) -> str:
    """The answer part of a text in ``form``: a rationale's ``Answer:`` line, else the first line
    (what the student wrote after an ``[answer]`` tag or a prompt)."""
    if form.name == "rationales":
        parts = split_rationale(text)
        if parts is not None:
            return parts[1]
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


def evaluate_held_out(
    form: FormSpec,
    records: Sequence[PromptRecord],
    teacher_texts: dict[str, Sequence[str]],
    generate: Generate,
    score: Score,
    pool: Sequence[PromptRecord] = (),
    max_new_tokens: int = 32,
    shown: int = 8,
) -> HeldOutResult:
    prompts = [eval_prompt(form, r, pool or records) for r in records]
    student = [final_answer(form, t) for t in generate(prompts, max_new_tokens)]
    teacher = {
        r.id: final_answer(form, teacher_texts[r.id][0])
        for r in records if teacher_texts.get(r.id)
    }
    with_ref = [(r, s) for r, s in zip(records, student, strict=True) if r.answer is not None]
    accuracy = _share(normalise_answer(s) == normalise_answer(r.answer) for r, s in with_ref)
    teacher_acc = _share(
        normalise_answer(teacher[r.id]) == normalise_answer(r.answer)
        for r, _ in with_ref if r.id in teacher
    )
    agreement = _share(
        normalise_answer(s) == normalise_answer(teacher[r.id])
        for r, s in zip(records, student, strict=True) if r.id in teacher
    )
    nll, count = 0.0, 0
    for record in records:
        pair = _scored_pair(form, record, pool or records, teacher_texts.get(record.id))
        if pair is not None:
            part_nll, part_count = score(*pair)
            nll, count = nll + part_nll, count + part_count
    rows = tuple(
        (r.prompt, r.answer or "", teacher.get(r.id, ""), s)
        for r, s in list(zip(records, student, strict=True))[:shown]
    )
    return HeldOutResult(
        len(records), accuracy, teacher_acc, agreement,
        math.exp(nll / count) if count else None, rows,
    )


def _scored_pair(form, record, pool, texts) -> tuple[str, str] | None:
    """The (prompt, target) whose perplexity is reported: the teacher's whole first answer
    after the prompt the student sees, or for rationales its reasoning after ``[explain]``."""
    if not texts or not texts[0].strip():
        return None
    if form.name == "rationales":
        parts = split_rationale(texts[0])
        return (record.prompt + EXPLAIN_TAG, parts[0]) if parts and parts[0] else None
    return eval_prompt(form, record, pool), texts[0].strip()


def _share(flags) -> float | None:
    flags = list(flags)
    return sum(flags) / len(flags) if flags else None


def side_by_side(result: HeldOutResult, width: int = 60) -> str:
    """A markdown table of the first held-out prompts: reference, teacher, student."""
    def cell(text: str) -> str:
        text = " ".join(text.split()).replace("|", "\\|")
        return text if len(text) <= width else text[: width - 1] + "…"

    lines = ["| prompt | reference | teacher | student |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(cell(c) for c in row)} |" for row in result.samples]
    return "\n".join(lines)
