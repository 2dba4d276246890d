"""Filters applied to the teacher's texts before training, each drop counted for the report.

In this order (a text is counted under the first filter that drops it):

empty           nothing but white space
truncated       the teacher stopped at ``max_new_tokens`` (its ``finish_reasons`` say
                ``length``; without them, a text of at least ``max_new_tokens`` tokens)
too_short       fewer than ``min_tokens`` tokens
too_long        more than ``max_tokens`` tokens
duplicate       the same prompt and the same text (after normalising case and white space) as
                a text already kept
near_duplicate  a text for the same prompt whose word 3-grams overlap a kept one's by at least
                ``near_duplicate`` (Jaccard, default 0.8, the threshold common in corpus
                de-duplication), e.g. two samples that differ in one word
check_failed    the user's ``--answer-check CMD`` said no. It runs as ``CMD IN.jsonl OUT.jsonl``
                (no shell): IN has ``{"id", "prompt", "text", "reference"}`` per line, OUT must
                have ``{"id", "ok": true|false}`` per line; a text with no verdict fails.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgekd.errors import BadInputError
from edgekd.lm.blackbox.records import PromptRecord
from edgekd.lm.blackbox.teachers import TeacherReply

FILTERS = (
    "empty", "truncated", "too_short", "too_long", "duplicate", "near_duplicate", "check_failed"
)


@dataclass(frozen=True)
class FilterSpec:
    min_tokens: int = 1
    max_tokens: int | None = None
    near_duplicate: float = 0.8  # Jaccard of word 3-grams; 1.0 turns the filter off
    answer_check: str | None = None
    check_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if self.min_tokens < 0 or (self.max_tokens is not None and self.max_tokens < 1):
            raise BadInputError("answer length limits must be >= 0 (min) and >= 1 (max)")
        if not 0 < self.near_duplicate <= 1:
            raise BadInputError(f"near_duplicate must be in (0, 1], got {self.near_duplicate}")


@dataclass(frozen=True)
class Candidate:
    record: PromptRecord
    index: int  # which of the teacher's samples for this record
    text: str

    @property
    def id(self) -> str:
        return f"{self.record.id}#{self.index}"


def filter_texts(
    records: Sequence[PromptRecord],
    replies: dict[str, TeacherReply],
    max_new_tokens: int,
    spec: FilterSpec,
    count_tokens: Callable[[str], int],
) -> tuple[dict[str, list[str]], Counter]:
    """The texts kept per record id, and how many each filter dropped."""
    dropped: Counter = Counter({name: 0 for name in FILTERS})
    kept: list[Candidate] = []
    seen: set[tuple[str, str]] = set()
    grams_by_prompt: dict[str, list[set]] = {}
    for record in records:
        reply = replies.get(record.id)
        if reply is None or not reply.ok:
            continue
        for index, text in enumerate(reply.texts):
            reason = _length_reason(text, reply, index, max_new_tokens, spec, count_tokens)
            if reason is None:
                reason = _duplicate_reason(record, text, spec, seen, grams_by_prompt)
            if reason is not None:
                dropped[reason] += 1
                continue
            kept.append(Candidate(record, index, text))
    if spec.answer_check:
        kept = _run_check(kept, spec, dropped)
    out: dict[str, list[str]] = {}
    for cand in kept:
        out.setdefault(cand.record.id, []).append(cand.text)
    return out, dropped


def _length_reason(text, reply, index, max_new_tokens, spec, count_tokens) -> str | None:
    if not text.strip():
        return "empty"
    tokens = count_tokens(text)
    if reply.finish_reasons:
        if reply.finish_reasons[index] == "length":
            return "truncated"
    elif tokens >= max_new_tokens:
        return "truncated"
    if tokens < spec.min_tokens:
        return "too_short"
    if spec.max_tokens is not None and tokens > spec.max_tokens:
        return "too_long"
    return None


def _duplicate_reason(record, text, spec, seen, grams_by_prompt) -> str | None:
    norm = " ".join(text.lower().split())
    key = (" ".join(record.prompt.lower().split()), norm)
    if key in seen:
        return "duplicate"
    grams = word_ngrams(norm)
    kept_grams = grams_by_prompt.setdefault(key[0], [])
    threshold = spec.near_duplicate
    if threshold < 1 and any(jaccard(grams, g) >= threshold for g in kept_grams):
        return "near_duplicate"
    seen.add(key)
    kept_grams.append(grams)
    return None


def word_ngrams(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+|[^\w\s]", text.lower())
    if len(words) < n:
        return {tuple(words)}
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b|; two empty sets are identical (1.0)."""
    union = len(a | b)
    return 1.0 if union == 0 else len(a & b) / union


def _run_check(kept: list[Candidate], spec: FilterSpec, dropped: Counter) -> list[Candidate]:
    if not kept:
        return kept
    argv = shlex.split(spec.answer_check or "")
    with tempfile.TemporaryDirectory(prefix="edgekd-answer-check-") as tmp:
        src, dst = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        src.write_text(
            "".join(
                json.dumps({"id": c.id, "prompt": c.record.prompt, "text": c.text,
                            "reference": c.record.answer}) + "\n"
                for c in kept
            )
        )
        try:
            proc = subprocess.run(
                [*argv, str(src), str(dst)], capture_output=True, text=True,
                timeout=spec.check_timeout_s, check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BadInputError(f"--answer-check {spec.answer_check!r}: {exc}") from None
        if proc.returncode != 0 or not dst.is_file():
            raise BadInputError(
                f"--answer-check {spec.answer_check!r} failed (exit code {proc.returncode})"
                " and wrote no verdicts"
            )
        verdicts = _verdicts(dst.read_text(encoding="utf-8", errors="replace"))
    passed = [c for c in kept if verdicts.get(c.id) is True]
    dropped["check_failed"] += len(kept) - len(passed)
    return passed


def _verdicts(text: str) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("ok"), bool):
            out.setdefault(str(obj.get("id")), obj["ok"])
    return out
