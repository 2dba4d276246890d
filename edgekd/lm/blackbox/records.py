"""Prompt records (``--data prompts.jsonl``) and the teacher's sampling settings.

A prompt file holds one JSON object per line: ``{"prompt": str, "answer": str}``, where
``answer`` (the reference) is optional and ``id`` (a string or an integer) may name the record;
without it the record is named by its line number. Blank lines are skipped. Anything else is
refused with one line naming the file, the line and the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from edgekd.errors import DataError


@dataclass(frozen=True)
class PromptRecord:
    id: str
    prompt: str
    answer: str | None = None

    def __post_init__(self) -> None:
        if not self.prompt.strip():
            raise DataError(f"prompt record {self.id!r}: 'prompt' is empty")


@dataclass(frozen=True)
class GenerationSettings:
    """How the teacher samples; written beside every answer in ``teacher_data.jsonl``."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 128
    samples: int = 1  # texts per prompt (Fine-tune-CoT samples several rationales)
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise DataError(f"teacher temperature must be finite and >= 0, got {self.temperature}")
        if not (0 < self.top_p <= 1):
            raise DataError(f"teacher top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise DataError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.samples < 1:
            raise DataError(f"--samples must be >= 1, got {self.samples}")

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def read_prompts(path: str | Path) -> list[PromptRecord]:
    """Read a prompt file; one clear line for the first bad line (file:line: what is wrong)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    records, seen = [], set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        record = _parse_line(path, number, line)
        if record.id in seen:
            raise DataError(f"{path}:{number}: duplicate id {record.id!r}")
        seen.add(record.id)
        records.append(record)
    if not records:
        raise DataError(f"{path}: no prompt records (expected one JSON object per line)")
    return records


def _parse_line(path: Path, number: int, line: str) -> PromptRecord:
    where = f"{path}:{number}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise DataError(f"{where}: field 'prompt' must be a non-empty string")
    answer = obj.get("answer")
    if answer is not None and not isinstance(answer, str | int | float):
        raise DataError(f"{where}: field 'answer' must be a string")
    ident = obj.get("id", number)
    if not isinstance(ident, str | int) or isinstance(ident, bool):
        raise DataError(f"{where}: field 'id' must be a string or an integer")
    return PromptRecord(str(ident), prompt, None if answer is None else str(answer))
