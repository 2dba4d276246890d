"""Stopping training cleanly on Ctrl-C (SIGINT) or SIGTERM.

The handler only records the signal: no I/O and no exception inside whatever code was running.
The training loop looks at the request at each step boundary, writes a consistent checkpoint and
raises ``Interrupted`` (exit code 130). The handler also re-arms the defaults, so a second Ctrl-C
is Python's usual KeyboardInterrupt and aborts at once (a second SIGTERM kills the process); the
checkpoint of the last finished epoch, written atomically, is still there to resume from.
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
