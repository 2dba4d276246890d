"""The three forms of black-box LM distillation (``--blackbox-form``).

answers     instruction following: the teacher answers each prompt; the student learns
            prompt -> answer.
rationales  chain of thought: the teacher is asked to reason, then give the answer on a last line
            ``Answer: ...``. The student learns two tasks from every rationale (MT-CoT, Li et al.
            2022): ``prompt + "\\n[explain]"`` -> the reasoning, and ``prompt + "\\n[answer]"`` ->
            the answer; ``--samples N`` rationales per prompt (Fine-tune-CoT, Ho et al. 2023).
            A rationale whose answer disagrees with the record's reference, or that gives no
            answer, is dropped and counted (a cheap form of SCOTT's consistency, Wang et al.
            2023: the student never learns reasoning that leads elsewhere). A one-line text with
            no reasoning (a teacher that gives labels only) trains the answer task alone
            (counted as ``answer_only``).
icl         in-context learning: each prompt is preceded by k demonstrations drawn from the
            other training records (their reference answers), so the student learns to follow
            demonstrations; the teacher answers the assembled prompt.

With any form, ``--evolve N`` first has the teacher rewrite N training prompts into harder ones
(Evol-Instruct, Xu et al. 2023); they are answered and learnt like the others, without a
reference answer.

At evaluation the student is asked in the same form it was trained in (``eval_prompt``).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from edgekd.errors import DataError
from edgekd.lm.blackbox.records import GenerationSettings, PromptRecord
from edgekd.lm.blackbox.teachers import TeacherReply, TeacherRequest

FORMS = ("answers", "rationales", "icl")
RATIONALE_INSTRUCTION = (
    "Think step by step. Write your reasoning, then the final answer on its own last line as "
    "'Answer: <answer>'."
)
EXPLAIN_TAG, ANSWER_TAG = "\n[explain]", "\n[answer]"
_ANSWER_LINE = re.compile(r"^\s*(?:final\s+)?answer\s*[:=]\s*(.+?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Example:
    """One training pair: the student reads ``prompt`` and learns to write ``target``."""

    record_id: str
    prompt: str
    target: str


@dataclass(frozen=True)
class FormSpec:
    name: str = "answers"
    icl_shots: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in FORMS:
            raise DataError(f"--blackbox-form {self.name!r}: expected one of {', '.join(FORMS)}")
        if self.icl_shots < 1:
            raise DataError(f"--icl-shots must be >= 1, got {self.icl_shots}")


def teacher_prompt(spec: FormSpec, record: PromptRecord, pool: Sequence[PromptRecord]) -> str:
    """What the teacher is asked for ``record``."""
    if spec.name == "rationales":
        return f"{record.prompt}\n{RATIONALE_INSTRUCTION}"
    if spec.name == "icl":
        return icl_prompt(record, pool, spec.icl_shots, spec.seed)
    return record.prompt


def eval_prompt(spec: FormSpec, record: PromptRecord, pool: Sequence[PromptRecord]) -> str:
    """What the student is asked for ``record`` at evaluation (its answer is read from it)."""
    if spec.name == "rationales":
        return record.prompt + ANSWER_TAG
    if spec.name == "icl":
        return icl_prompt(record, pool, spec.icl_shots, spec.seed)
    return record.prompt


def icl_prompt(record: PromptRecord, pool: Sequence[PromptRecord], k: int, seed: int) -> str:
    """``k`` demonstrations from ``pool`` (never ``record`` itself), chosen by a seed and the
    record's id so a record always gets the same ones, then the record's prompt."""
    others = [r for r in pool if r.id != record.id and r.answer is not None]
    if len(others) < k:
        raise DataError(
            f"--blackbox-form icl needs {k} other records with an 'answer' for the demonstrations;"
            f" the training data has {len(others)}"
        )
    rng = random.Random(f"{seed}:{record.id}")
    shots = rng.sample(others, k)
    demos = "".join(f"Q: {r.prompt}\nA: {r.answer}\n\n" for r in shots)
    return f"{demos}Q: {record.prompt}\nA:"


def build_requests(
    spec: FormSpec,
    records: Sequence[PromptRecord],
    settings: GenerationSettings,
    pool: Sequence[PromptRecord] | None = None,
) -> list[TeacherRequest]:
    pool = records if pool is None else pool
    return [
        TeacherRequest(
            id=record.id, prompt=teacher_prompt(spec, record, pool), n=settings.samples,
            temperature=settings.temperature, top_p=settings.top_p,
            max_new_tokens=settings.max_new_tokens, seed=settings.seed,
        )
        for record in records
    ]


EVOLVE_INSTRUCTION = (
    "Rewrite the following task into a new one that is harder (more steps, larger numbers, an "
    "added constraint) but still has one clear answer. Write only the new task.\n\nTask: "
)


def evolve_requests(
    records: Sequence[PromptRecord], settings: GenerationSettings, count: int, seed: int
) -> list[TeacherRequest]:
    """Ask the teacher for ``count`` harder versions of training prompts (Evol-Instruct, Xu et
    al. 2023), one each from records drawn by ``seed``; the new prompts are answered like the
    others."""
    order = random.Random(seed).sample(list(records), len(records))
    chosen = (order * (count // len(order) + 1))[:count]
    return [
        TeacherRequest(
            id=f"evolve:{index}:{record.id}", prompt=EVOLVE_INSTRUCTION + record.prompt, n=1,
            temperature=settings.temperature, top_p=settings.top_p,
            max_new_tokens=settings.max_new_tokens, seed=settings.seed,
        )
        for index, record in enumerate(chosen)
    ]


def evolved_records(
    records: Sequence[PromptRecord], replies: dict[str, TeacherReply]
) -> tuple[list[PromptRecord], Counter]:
    """The new prompts the teacher wrote (no reference answer), and what was left out: empty
    ones, and ones that repeat a prompt already in the set."""
    seen = {" ".join(r.prompt.lower().split()) for r in records}
    out, dropped = [], Counter()
    for ident, reply in replies.items():
        text = reply.texts[0].strip() if reply.ok and reply.texts else ""
        text = text.removeprefix("Task:").strip()
        key = " ".join(text.lower().split())
        if not text:
            dropped["empty"] += 1
        elif key in seen:
            dropped["duplicate"] += 1
        else:
            seen.add(key)
            out.append(PromptRecord(f"new-{ident}", text, None))  # not the request's own id
    return out, dropped


def split_rationale(text: str) -> tuple[str, str] | None:
    """(reasoning, answer) from a rationale whose last ``Answer:`` line gives the answer."""
    lines = text.rstrip().splitlines()
    for index in range(len(lines) - 1, -1, -1):
        match = _ANSWER_LINE.match(lines[index])
        if match:
            return "\n".join(lines[:index]).strip(), match.group(1).strip()
    return None


def normalise_answer(text: str) -> str:
    """Answers compare equal up to case, surrounding space and punctuation, and number format
    (``"1,234."`` == ``"1234"``)."""
    t = text.strip().lower().rstrip(".!").replace(",", "")
    t = re.sub(r"\s+", " ", t)
    try:
        number = float(t)
    except ValueError:
        return t
    return str(int(number)) if number.is_integer() else repr(number)


def to_examples(
    spec: FormSpec,
    records: Sequence[PromptRecord],
    texts: dict[str, Sequence[str]],
    pool: Sequence[PromptRecord] | None = None,
) -> tuple[list[Example], Counter]:
    """Training examples from the teacher's kept texts per record id, and what was dropped."""
    pool = records if pool is None else pool
    dropped: Counter = Counter()
    examples: list[Example] = []
    for record in records:
        for text in texts.get(record.id, ()):
            if spec.name != "rationales":
                examples.append(Example(record.id, eval_prompt(spec, record, pool), text.strip()))
                continue
            parts = split_rationale(text)
            if parts is None and len(text.strip().splitlines()) == 1:
                # A teacher that gives labels only (no reasoning): the answer task alone.
                parts = ("", text.strip())
                dropped["answer_only"] += 1
            if parts is None:
                dropped["no_answer_line"] += 1
                continue
            reasoning, answer = parts
            if record.answer is not None and (
                normalise_answer(answer) != normalise_answer(record.answer)
            ):
                dropped["disagrees_with_reference"] += 1
                continue
            if reasoning:
                examples.append(Example(record.id, record.prompt + EXPLAIN_TAG, reasoning))
            examples.append(Example(record.id, record.prompt + ANSWER_TAG, answer))
    return examples, dropped


def reference_examples(
    spec: FormSpec, records: Sequence[PromptRecord], pool: Sequence[PromptRecord] | None = None
) -> list[Example]:
    """The labels-only baseline: the records' own reference answers, asked as at evaluation."""
    pool = records if pool is None else pool
    missing = [r.id for r in records if r.answer is None]
    if missing:
        raise DataError(f"record {missing[0]!r} has no 'answer'; a references-only run needs one")
    return [Example(r.id, eval_prompt(spec, r, pool), str(r.answer)) for r in records]


def replies_texts(replies: dict[str, TeacherReply]) -> dict[str, tuple[str, ...]]:
    return {ident: reply.texts for ident, reply in replies.items() if reply.ok}
