"""Stopping cleanly on Ctrl-C (SIGINT) or SIGTERM: in training at a step boundary, elsewhere
where the process is.

The handler only records the signal: no I/O and no exception inside whatever code was running.
The training loop looks at the request at each step boundary, writes a consistent checkpoint and
raises ``Interrupted`` (exit code 130). The handler also re-arms the defaults, so a second Ctrl-C
is Python's usual KeyboardInterrupt and aborts at once (a second SIGTERM kills the process); the
checkpoint of the last finished epoch, written atomically, is still there to resume from.

Outside training (preparing the teacher, exporting, quantizing, benchmarking; every CLI command),
:func:`raise_on_signals` makes SIGTERM behave like Ctrl-C: :class:`Stopped` (a
``KeyboardInterrupt``) is raised where the process is, so files being written are dropped
(``edgekd.fileio``), the run folder is kept for ``--resume`` (``edgekd.rundir``), and the CLI exits
130 with one line, instead of Python's default for SIGTERM: killed at once, exit 143, no message.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class StopRequest:
    signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""


@contextlib.contextmanager
def stop_on_signals(enabled: bool = True) -> Iterator[StopRequest]:
    """Within the block, SIGINT/SIGTERM set ``request.signum`` instead of stopping the process.

    Signal handlers can only be installed from the main thread; elsewhere (or when not
    ``enabled``) the request is never set and signals keep their usual effect.
    """
    request = StopRequest()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}

    def handler(signum: int, _frame: object) -> None:
        request.signum = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    for s in SIGNALS:
        signal.signal(s, handler)
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM outside training: raised where the process was."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


@contextlib.contextmanager
def raise_on_signals(enabled: bool = True) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Stopped` (training's
    :func:`stop_on_signals` takes over inside it and gives these handlers back after)."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}

    def handler(signum: int, _frame: object) -> None:
        raise Stopped(signum)

    for s in SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
