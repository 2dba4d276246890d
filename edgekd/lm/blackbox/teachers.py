"""Teachers that only write text: the command protocol.

edgekd writes ``REQUESTS.jsonl``, one request per line::

    {"id": "17#0", "prompt": "...", "n": 2, "temperature": 0.7, "top_p": 0.95,
     "max_new_tokens": 128, "seed": 0}

and runs ``CMD REQUESTS.jsonl ANSWERS.jsonl`` (the command split like a shell line with
``shlex``, no shell, a timeout per call). The command writes one answer per line::

    {"id": "17#0", "texts": ["...", "..."]}            # n texts, one per sample
    {"id": "17#0", "error": "rate limited"}            # or: this prompt failed

An answer may add ``"finish_reasons": ["stop" | "length", ...]`` so truncation is known rather
than guessed. Requests with no valid answer line (missing, malformed, an ``error``, the wrong
number of texts) come back as failures; the stage retries them a bounded number of times. A
command that exits non-zero or times out fails every request of that call.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from edgekd.errors import BadInputError


@dataclass(frozen=True)
class TeacherRequest:
    id: str
    prompt: str
    n: int
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id, "prompt": self.prompt, "n": self.n, "temperature": self.temperature,
            "top_p": self.top_p, "max_new_tokens": self.max_new_tokens, "seed": self.seed,
        }


@dataclass(frozen=True)
class TeacherReply:
    """The teacher's texts for one request, or why there are none (``error``)."""

    id: str
    texts: tuple[str, ...] = ()
    finish_reasons: tuple[str, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class CallLog:
    """What one batch call cost, for the report."""

    calls: int = 0
    failed_calls: int = 0
    malformed_lines: int = 0
    errors: list[str] = field(default_factory=list)


class TextTeacher(Protocol):
    """Anything that answers a batch of requests; ``identity`` keys the answer cache."""

    identity: str

    def answer(self, requests: Sequence[TeacherRequest], log: CallLog) -> list[TeacherReply]: ...


class CommandTextTeacher:
    """An external command speaking the protocol above (a local server's or an API's client)."""

    def __init__(self, command: str, timeout_s: float = 300.0) -> None:
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise BadInputError(f"--teacher-cmd {command!r}: cannot split ({exc})") from None
        if not argv:
            raise BadInputError("--teacher-cmd is empty")
        if timeout_s <= 0:
            raise BadInputError(f"--teacher-timeout must be > 0, got {timeout_s}")
        self.argv, self.timeout_s = argv, timeout_s
        self.identity = f"cmd:{command}"

    def __str__(self) -> str:
        return f"--teacher-cmd {shlex.join(self.argv)}"

    def answer(self, requests: Sequence[TeacherRequest], log: CallLog) -> list[TeacherReply]:
        log.calls += 1
        with tempfile.TemporaryDirectory(prefix="edgekd-lm-teacher-") as tmp:
            src, dst = Path(tmp) / "requests.jsonl", Path(tmp) / "answers.jsonl"
            src.write_text("".join(json.dumps(r.as_json()) + "\n" for r in requests))
            failure = self._run(src, dst)
            if failure is None and not dst.is_file():
                failure = "wrote no answers file"
            if failure is not None:
                log.failed_calls += 1
                log.errors.append(failure)
                return [TeacherReply(r.id, error=failure) for r in requests]
            text = dst.read_text(encoding="utf-8", errors="replace")
        return parse_answers(text, requests, log)

    def _run(self, src: Path, dst: Path) -> str | None:
        try:
            proc = subprocess.run(
                [*self.argv, str(src), str(dst)], capture_output=True, text=True,
                timeout=self.timeout_s, check=False,
            )
        except subprocess.TimeoutExpired:
            return f"timed out after {self.timeout_s:g} s"
        except OSError as exc:
            raise BadInputError(f"--teacher-cmd {self.argv[0]!r}: cannot run ({exc})") from None
        if proc.returncode != 0:
            tail = (proc.stderr or "").strip().splitlines()
            return f"exit code {proc.returncode}" + (f": {tail[-1][:200]}" if tail else "")
        return None


def parse_answers(
    text: str, requests: Sequence[TeacherRequest], log: CallLog
) -> list[TeacherReply]:
    """One reply per request, in request order; anything not answered well is a failure."""
    wanted = {r.id: r for r in requests}
    replies: dict[str, TeacherReply] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        reply = _parse_reply(line, wanted)
        if reply is None:
            log.malformed_lines += 1
        elif reply.id not in replies:  # a repeated id keeps its first answer
            replies[reply.id] = reply
    return [replies.get(r.id, TeacherReply(r.id, error="no answer line")) for r in requests]


def _parse_reply(line: str, wanted: dict[str, TeacherRequest]) -> TeacherReply | None:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or str(obj.get("id")) not in wanted:
        return None
    ident, request = str(obj["id"]), wanted[str(obj["id"])]
    if obj.get("error") is not None:
        return TeacherReply(ident, error=str(obj["error"])[:200])
    texts = obj.get("texts")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        return TeacherReply(ident, error="'texts' is not a list of strings")
    if len(texts) != request.n:
        return TeacherReply(ident, error=f"{len(texts)} texts for n={request.n}")
    reasons = obj.get("finish_reasons") or []
    if not isinstance(reasons, list) or (reasons and len(reasons) != len(texts)):
        reasons = []
    return TeacherReply(ident, tuple(texts), tuple(str(r) for r in reasons))
