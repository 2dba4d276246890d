"""Teacher generation as a recorded stage: resumable, cached, budgeted, with bounded retries.

Every request and its outcome is appended to ``OUT/teacher_data.jsonl`` (flushed and fsynced
after each call), one line each::

    {"id": ..., "key": ..., "prompt": ..., "settings": {...}, "texts": [...],
     "finish_reasons": [...], "tokens": 123, "source": "teacher" | "cache"}
    {"id": ..., "key": ..., "prompt": ..., "settings": {...}, "error": "...", "attempts": 3}

Resuming (the same file, an interrupted run) asks no answered prompt again: a request whose
``key`` (teacher, prompt and sampling settings) already has texts in the file is taken from it,
and the tokens recorded there count towards the budget. Answers are also kept in a cache shared
by runs (``$EDGEKD_CACHE/lm-teacher/``), keyed the same way, so a second run costs no call.

The budget (``--max-teacher-tokens``) counts the tokens the teacher reads and writes. A request is
sent only if the tokens spent so far plus its worst case (its prompt plus ``n * max_new_tokens``)
fit, so the stage never asks for more than the budget; requests that do not fit are counted as
``over_budget`` and left out. (A teacher that writes past ``max_new_tokens`` is charged what it
wrote, and no request is sent after the budget is reached.)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgekd.cache import cache_dir
from edgekd.lm.blackbox.teachers import CallLog, TeacherReply, TeacherRequest, TextTeacher
from edgekd.progress import progress_bar

TokenCounter = Callable[[str], int]


def whitespace_tokens(text: str) -> int:
    """A stand-in token count (words) when no tokenizer is given."""
    return len(text.split())


@dataclass(frozen=True)
class GenerationBudget:
    max_tokens: int | None = None
    max_calls: int | None = None
    retries: int = 2  # extra attempts for a request that failed
    batch_size: int = 16  # requests per call

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_calls"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.retries < 0 or self.batch_size < 1:
            raise ValueError("retries must be >= 0 and batch_size >= 1")


@dataclass
class GenerationSummary:
    """Counts for the report: where every request's answer came from, or why there is none."""

    requests: int = 0
    from_log: int = 0
    from_cache: int = 0
    from_teacher: int = 0
    failed: int = 0
    over_budget: int = 0
    retried: int = 0
    tokens: int = 0
    calls: int = 0
    failed_calls: int = 0
    malformed_lines: int = 0
    errors: list[str] = field(default_factory=list)
    evolve: dict | None = None  # the --evolve round's counts (edgekd.lm.blackbox.pipeline)

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["errors"] = sorted(set(self.errors))[:10]
        return out


def request_key(identity: str, request: TeacherRequest) -> str:
    parts = {k: v for k, v in request.as_json().items() if k != "id"}
    blob = json.dumps({"teacher": identity, **parts}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


class AnswerCache:
    """Answers shared by runs: one append-only JSON-lines file per teacher."""

    def __init__(self, identity: str, root: Path | None = None) -> None:
        root = root if root is not None else cache_dir() / "lm-teacher"
        root.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(identity.encode()).hexdigest()[:16]
        self.path = root / f"{name}.jsonl"
        self.entries = {line["key"]: line for line in _read_lines(self.path) if "texts" in line}

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def add(self, lines: Sequence[dict]) -> None:
        fresh = [line for line in lines if "texts" in line and line["key"] not in self.entries]
        _append(self.path, fresh)
        self.entries.update({line["key"]: line for line in fresh})


def run_generation(
    requests: Sequence[TeacherRequest],
    teacher: TextTeacher,
    log_path: str | Path,
    budget: GenerationBudget = GenerationBudget(),
    count_tokens: TokenCounter = whitespace_tokens,
    cache: AnswerCache | None = None,
) -> tuple[dict[str, TeacherReply], GenerationSummary]:
    """Answer every request once (from the log, the cache or the teacher); return the replies by
    request id (failures included, with their error) and the counts."""
    log_path = Path(log_path)
    summary = GenerationSummary(requests=len(requests))
    keys = {r.id: request_key(teacher.identity, r) for r in requests}
    done, spent = _resume(log_path, keys, summary)
    pending = [r for r in requests if r.id not in done]
    if cache is not None:
        pending = _from_cache(pending, keys, cache, log_path, done, summary)
    summary.tokens = spent
    _ask(pending, teacher, keys, log_path, budget, count_tokens, cache, done, summary)
    return done, summary


def _resume(
    log_path: Path, keys: dict[str, str], summary: GenerationSummary
) -> tuple[dict[str, TeacherReply], int]:
    by_key = {key: ident for ident, key in keys.items()}
    done: dict[str, TeacherReply] = {}
    spent = 0
    for line in _read_lines(log_path):
        spent += int(line.get("tokens", 0))
        ident = by_key.get(line.get("key", ""))
        if ident is not None and "texts" in line and ident not in done:
            done[ident] = _reply(ident, line)
            summary.from_log += 1
    return done, spent


def _from_cache(pending, keys, cache, log_path, done, summary) -> list[TeacherRequest]:
    hits, rest = [], []
    for request in pending:
        entry = cache.get(keys[request.id])
        if entry is None:
            rest.append(request)
            continue
        done[request.id] = _reply(request.id, entry)
        hits.append(_line(request, keys[request.id], done[request.id], 0, "cache"))
    _append(log_path, hits)
    summary.from_cache += len(hits)
    return rest


def _ask(pending, teacher, keys, log_path, budget, count_tokens, cache, done, summary) -> None:
    attempts: dict[str, int] = {}
    queue = list(pending)
    log = CallLog()
    with progress_bar("teacher answers", total=len(queue)) as bar:
        while queue:
            if budget.max_calls is not None and log.calls >= budget.max_calls:
                break
            batch, queue = _fit_batch(queue, budget, count_tokens, summary.tokens)
            if not batch:
                break
            replies = teacher.answer(batch, log)
            lines, retry = [], []
            for request, reply in zip(batch, replies, strict=True):
                cost = _cost(request, reply, count_tokens)
                summary.tokens += cost
                attempts[request.id] = attempts.get(request.id, 0) + 1
                if reply.ok:
                    done[request.id] = reply
                    summary.from_teacher += 1
                    lines.append(_line(request, keys[request.id], reply, cost, "teacher"))
                    bar.advance()
                elif attempts[request.id] <= budget.retries:
                    summary.retried += 1
                    retry.append(request)
                    lines.append(_failure(request, keys[request.id], reply, cost, 0))
                else:
                    done[request.id] = reply
                    summary.failed += 1
                    summary.errors.append(reply.error or "failed")
                    lines.append(
                        _failure(request, keys[request.id], reply, cost, attempts[request.id])
                    )
                    bar.advance()
            _append(log_path, lines)
            if cache is not None:
                cache.add(lines)
            queue = retry + queue
    summary.over_budget = len(queue)
    summary.calls, summary.failed_calls = log.calls, log.failed_calls
    summary.malformed_lines = log.malformed_lines
    summary.errors.extend(log.errors)


def _fit_batch(queue, budget, count_tokens, spent):
    """The next requests whose worst-case cost still fits the token budget."""
    batch: list[TeacherRequest] = []
    reserved = spent
    for index, request in enumerate(queue):
        if len(batch) == budget.batch_size:
            return batch, queue[index:]
        worst = count_tokens(request.prompt) + request.n * request.max_new_tokens
        if budget.max_tokens is not None and reserved + worst > budget.max_tokens:
            return batch, queue[index:]
        batch.append(request)
        reserved += worst
    return batch, []


def _cost(request: TeacherRequest, reply: TeacherReply, count_tokens: TokenCounter) -> int:
    return count_tokens(request.prompt) + sum(count_tokens(t) for t in reply.texts)


def _reply(ident: str, line: dict) -> TeacherReply:
    return TeacherReply(
        ident, tuple(line["texts"]), tuple(line.get("finish_reasons") or ())
    )


def _line(request, key, reply, tokens, source) -> dict:
    return {
        "id": request.id, "key": key, "prompt": request.prompt, "settings": _settings(request),
        "texts": list(reply.texts), "finish_reasons": list(reply.finish_reasons),
        "tokens": tokens, "source": source,
    }


def _failure(request, key, reply, tokens, attempts) -> dict:
    # attempts == 0 marks a failure that will be retried; the final one carries the count.
    return {
        "id": request.id, "key": key, "prompt": request.prompt, "settings": _settings(request),
        "error": reply.error, "tokens": tokens, "attempts": attempts,
    }


def _settings(request: TeacherRequest) -> dict[str, object]:
    return {k: v for k, v in request.as_json().items() if k not in ("id", "prompt")}


def _read_lines(path: Path) -> list[dict]:
    """Every complete JSON line; a line cut short by a kill is dropped (and cut off the file,
    so the next append starts on a fresh line)."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "rb+") as fh:
            fh.truncate(end)
    out = []
    for raw in data[:end].splitlines():
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "key" in obj:
            out.append(obj)
    return out


def _append(path: Path, lines: Sequence[dict]) -> None:
    if not lines:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
        fh.flush()
        os.fsync(fh.fileno())
