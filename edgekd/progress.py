"""Rich progress bars on stderr for anything slower than a second or two.

Silenced with ``EDGEKD_NO_PROGRESS=1`` (tests, CI logs); when stderr is not a terminal rich draws
no animation, only the final state, and no colour codes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

_console = Console(stderr=True)


class _Bar:
    def __init__(self, progress: Progress | None, task: int | None) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: int = 1, **fields: object) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=n, **fields)


@contextlib.contextmanager
def progress_bar(description: str, total: int) -> Iterator[_Bar]:
    if os.environ.get("EDGEKD_NO_PROGRESS"):
        yield _Bar(None, None)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=_console, transient=False) as progress:
        task = progress.add_task(description, total=total, info="")
        yield _Bar(progress, task)


def status(message: str) -> None:
    if not os.environ.get("EDGEKD_NO_PROGRESS"):
        _console.print(message, highlight=False)
