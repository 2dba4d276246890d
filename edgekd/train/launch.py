"""``edgekd distill --nproc N``: the same command in N local workers, started by torchrun's agent.

This is ``torchrun --standalone --nproc-per-node N -m edgekd distill ...`` run in-process
(``torch.distributed.launcher.elastic_launch``), so that a failure can be told in one line naming
the failed rank, with an edgekd exit code, instead of torchrun's table and exit code 1:

- a worker that exits with an edgekd error passes its code on (2 bad input, 5 diverged, ...);
  its own one-line message is printed above ours;
- a worker killed by a signal (out of memory, ``kill -9``) gives exit code 7;
- with ``--max-restarts R`` the agent restarts all workers up to R times after a failure, and they
  resume from the last complete checkpoint
  (:func:`edgekd.train.distributed.resumes_after_restart`).

Ctrl-C or SIGTERM reach the launcher only (torchrun starts each worker in a session of its own);
its agent passes the signal on to every worker once, and they stop together at the next step:
rank 0 writes the checkpoint and each exits 130 (the agent waits up to 30 s before killing them).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from edgekd.errors import (
    EXIT_BAD_INPUT,
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    EXIT_PARITY,
    BadInputError,
    EdgekdError,
    Interrupted,
    WorkerFailed,
)

# Options that belong to the launcher and must not reach the workers (they would launch again).
LAUNCHER_OPTIONS = ("--nproc", "--max-restarts")
# A worker's own exit codes that mean the same for the whole run.
_PASSED_ON = (EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_PARITY)


def worker_args(argv: list[str]) -> list[str]:
    """``argv`` (the arguments after ``edgekd``) without the launcher's own options."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in LAUNCHER_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{o}=" for o in LAUNCHER_OPTIONS)):
            out.append(arg)
    return out


def launch_workers(
    nproc: int, args: list[str], max_restarts: int = 0, module: str = "edgekd"
) -> None:
    """Run ``python -m MODULE ARGS`` in ``nproc`` local workers (torchrun's agent, c10d rendezvous
    on a free loopback port).

    Returns when every worker succeeded; raises :class:`WorkerFailed` naming the failed rank, or
    :class:`Interrupted` when the run was stopped by a signal.

    >>> launch_workers(2, worker_args(["distill", "--nproc", "2"]))  # doctest: +SKIP
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise BadInputError(f"--nproc must be >= 1, got {nproc}")
    if max_restarts < 0:
        raise BadInputError(f"--max-restarts must be >= 0, got {max_restarts}")
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        # The run id names the default run folder (runs/TARGET-STAMP), as in a one-process run.
        run_id=time.strftime("%Y%m%d-%H%M%S"),
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",  # a free loopback port, as torchrun --standalone picks
        max_restarts=max_restarts,
    )
    with _worker_environment(nproc):
        try:
            elastic_launch(config, sys.executable)("-m", module, *args)
        except ChildFailedError as exc:
            rank, failure = root_cause(exc.failures)
            raise _failure(rank, failure, len(exc.failures), max_restarts) from None
        except SignalException as exc:
            raise Interrupted(
                f"stopped by {signal.Signals(exc.sigval).name}: the workers stopped at the same "
                "step, rank 0 wrote the checkpoint; continue with --resume OUT (any --nproc)"
            ) from None


# How a worker ends when a peer's failure takes it down: the collective's abort, or the agent
# stopping the rest of the group.
_COLLATERAL_SIGNALS = (signal.SIGABRT, signal.SIGTERM)


def root_cause(failures: dict) -> tuple[int, object]:
    """The failure to report: the earliest, as torchrun's ``get_first_failure``; on a tie (its
    timestamps have 1-second resolution, and a killed worker and the peer it takes down are
    often seen in the same poll) a worker killed by another signal, then one that exited with a
    code, before a SIGABRT/SIGTERM that is most likely collateral; then the lowest rank."""

    def order(rank: int) -> tuple[int, int, int]:
        failure = failures[rank]
        code = failure.exitcode
        if code < 0:
            kind = 2 if -code in _COLLATERAL_SIGNALS else 0
        else:
            kind = 1
        return failure.timestamp, kind, rank

    rank = min(failures, key=order)
    return rank, failures[rank]


def _failure(rank: int, failure, failed: int, max_restarts: int) -> EdgekdError:
    code = failure.exitcode
    if code == EXIT_INTERRUPTED:
        return Interrupted(
            f"the workers were stopped (rank {rank} first); rank 0 wrote the checkpoint: "
            "continue with --resume OUT (any --nproc)"
        )
    if code < 0:
        what, exit_code = f"was killed by {failure.signal_name()}", None
    else:
        what = f"exited with code {code}" + (" (its error is above)" if code else "")
        exit_code = code if code in _PASSED_ON else None
    others = f" ({failed} workers failed)" if failed > 1 else ""
    restarts = f" after {max_restarts} restart(s)" if max_restarts else ""
    return WorkerFailed(
        f"worker rank {rank} (pid {failure.pid}) {what}{others}; torchrun stopped the run"
        f"{restarts}; OUT.partial keeps the last complete checkpoint (continue: --resume OUT)",
        exit_code,
    )


@contextlib.contextmanager
def _worker_environment(nproc: int) -> Iterator[None]:
    """Threads split between the workers (as torchrun does), a fresh rendezvous store for each
    attempt, and gloo kept on the loopback interface: these workers talk only to each other."""
    changes = {
        "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // nproc)),
        # After a restart, workers sharing the agent's store can read the dead workers' addresses
        # (pytorch/pytorch#135712): rank 0 hosts a fresh store for each attempt instead.
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
    }
    if sys.platform == "linux" and Path("/sys/class/net/lo").exists():
        changes["GLOO_SOCKET_IFNAME"] = "lo"
    changes = {k: v for k, v in changes.items() if k not in os.environ}
    os.environ.update(changes)
    try:
        yield
    finally:
        for k in changes:
            os.environ.pop(k, None)
