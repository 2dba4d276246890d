"""Rich progress bars on stderr for anything slower than a second or two.

Silenced with ``EDGEKD_NO_PROGRESS=1`` (tests, CI logs); when stderr is not a terminal (a CI log,
a file) rich draws no animation, only the final state, and no colour codes, so a bar also prints a
plain line with its count, time elapsed and time left at most every ``LOG_EVERY_S`` seconds: a
long run in a log is never silent until it ends. Each bar shows the time elapsed and an estimate of
the time left (``eta``), at the mean pace of the steps done so far.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

_console = Console(stderr=True)
# Seconds between the plain progress lines of a bar whose stderr is not a terminal.
LOG_EVERY_S = 30.0


class _Bar:
    def __init__(self, progress: Progress | None, task: int | None) -> None:
        self._progress, self._task = progress, task
        self._logged = time.monotonic()

    def advance(self, n: int = 1, **fields: object) -> None:
        if self._progress is None:
            return
        progress = self._progress
        progress.update(self._task, advance=n, **fields)
        if not progress.console.is_terminal and time.monotonic() - self._logged >= LOG_EVERY_S:
            self._logged = time.monotonic()
            progress.console.print(log_line(progress.tasks[self._task]), highlight=False)


class TimeLeft(ProgressColumn):
    """The time left at the mean pace since the bar started; rich's own column averages only
    the last 30 s, which shows nothing when one step (an epoch) takes longer. Steps done before
    the bar started (a resumed run's epochs, ``done``) do not count towards the pace."""

    def render(self, task: Task) -> Text:
        return Text(f"eta {time_left(task)}", style="progress.remaining")


def time_left(task: Task) -> str:
    done = task.completed - task.fields.get("done_before", 0)
    if task.finished:
        return "0:00:00"
    if task.total is None or done <= 0 or not task.elapsed:
        return "-:--:--"
    left = int((task.total - task.completed) * task.elapsed / done)
    return f"{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"


def log_line(task: Task) -> str:
    """One plain line for a bar's state: ``distill 120/940 loss 0.41 (0:01:02, eta 0:07:05)``."""
    elapsed = int(task.elapsed or 0)
    info = str(task.fields.get("info") or "").strip()
    return (
        f"{task.description} {task.completed:g}/{task.total or 0:g}{' ' + info if info else ''} "
        f"({elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}, eta {time_left(task)})"
    )


@contextlib.contextmanager
def progress_bar(description: str, total: int, done: int = 0) -> Iterator[_Bar]:
    """A bar of ``total`` steps on stderr, ``done`` of them already done (a resumed run)."""
    if os.environ.get("EDGEKD_NO_PROGRESS"):
        yield _Bar(None, None)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeLeft(),
    )
    with Progress(*columns, console=_console, transient=False) as progress:
        task = progress.add_task(
            description, total=total, completed=done, info="", done_before=done
        )
        yield _Bar(progress, task)


def status(message: str) -> None:
    if not os.environ.get("EDGEKD_NO_PROGRESS"):
        _console.print(message, highlight=False)
