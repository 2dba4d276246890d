"""Distillation on several workers with PyTorch's own engine: torchrun starts the workers,
``torch.distributed`` connects them, DistributedDataParallel (DDP) averages their gradients.

Docs: https://pytorch.org/docs/stable/elastic/run.html (torchrun),
https://pytorch.org/docs/stable/notes/ddp.html (DDP).

Every worker runs the same ``edgekd distill`` command. :func:`distributed_session` joins the
process group from the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` ...;
``env://``), with gloo for CPU tensors and NCCL for CUDA tensors, and a timeout on every collective
so that a hung or lost worker ends the run instead of hanging it. The :class:`DistContext` it yields
is passed down to the trainer (``None`` everywhere means one process) and does the rest:

- each global batch (the same rows in the same order as a one-process run with that batch size)
  is cut into contiguous per-worker shards (:meth:`DistContext.shard`); DDP's gradient all-reduce
  is weighted by each shard's share of the batch (a communication hook), so that W workers step
  with the gradient of the mean loss over the whole batch, also when the last batch of an epoch
  does not divide evenly. W workers x B/W rows therefore give the weights of 1 worker x B rows;
- the frozen teacher's outputs are computed once, each worker its contiguous part of the split,
  and all-gathered (:meth:`DistContext.gather_rows`);
- only rank 0 writes files; values that only rank 0 should decide (the output folder, the sized
  student, a checkpoint read on resume) are computed there and broadcast (:meth:`from_main`), so
  resuming works with another worker count and without a filesystem shared between nodes.

What stays per worker (as in any data-parallel training): BatchNorm statistics (each worker
normalises its own shard; SyncBatchNorm needs CUDA), dropout masks, and relational losses (rkd, sp)
that compare samples within a batch: they see pairs within a shard.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from edgekd.data import Split
from edgekd.errors import EdgekdError, WorkerFailed

# Long enough for the slowest step of a big model, short enough that a hung worker is noticed.
DEFAULT_TIMEOUT_S = 300.0
FINISH_TIMEOUT_S = 24 * 3600.0  # rank 0's export + benchmarks, while the others wait
# What gloo and the c10d store say when a peer is gone or silent (they raise plain RuntimeError).
_LOST_PEER = ("connection closed by peer", "connection reset by peer", "timed out", "broken pipe")


@dataclass(frozen=True)
class WorkerEnv:
    """What torchrun tells each worker through its environment."""

    rank: int
    world_size: int
    local_rank: int
    restart_count: int  # 0 on the first attempt; n after torchrun restarted the workers n times
    run_id: str


def worker_env(environ: dict[str, str] | None = None) -> WorkerEnv | None:
    """The torchrun variables of this process, or None when it was not started by torchrun."""
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    return WorkerEnv(
        rank=int(env["RANK"]),
        world_size=int(env["WORLD_SIZE"]),
        local_rank=int(env.get("LOCAL_RANK", 0)),
        restart_count=int(env.get("TORCHELASTIC_RESTART_COUNT", 0)),
        run_id=env.get("TORCHELASTIC_RUN_ID", ""),
    )


def choose_backend(device: str | torch.device) -> str:
    """NCCL for CUDA tensors, gloo for CPU tensors (NCCL cannot move CPU tensors)."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def is_lost_peer(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective that failed because another worker died or went silent."""
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(s in text for s in _LOST_PEER)


class DistContext:
    """This worker's place in the group, and the few collective operations training needs."""

    def __init__(self, env: WorkerEnv, backend: str, device: torch.device, timeout_s: float):
        self.rank, self.world_size, self.local_rank = env.rank, env.world_size, env.local_rank
        self.restart_count, self.run_id = env.restart_count, env.run_id
        self.backend, self.device, self.timeout_s = backend, device, timeout_s
        self._share = 1.0  # this worker's rows / the global batch's rows, for the gradient hook
        self._own = 0  # this worker's real rows in the current batch

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def __repr__(self) -> str:
        return f"DistContext(rank {self.rank} of {self.world_size}, {self.backend})"

    # -- batches -------------------------------------------------------------------------------
    def shard(self, index: np.ndarray) -> np.ndarray:
        """This worker's rows of one global batch (contiguous; the first workers take one row
        more when the batch does not divide evenly), remembered for :meth:`batch_sum` and the
        gradient weighting.

        A worker left with no row (a last batch smaller than the worker count) still runs one
        row, with weight 0: every worker must take part in every all-reduce.
        """
        own = np.array_split(index, self.world_size)[self.rank]
        self._own = len(own)
        self._share = len(own) / len(index)
        return own if len(own) else index[:1]

    def batch_sum(self, loss: torch.Tensor) -> float:
        """Sum over the whole global batch of the per-sample loss whose mean over this worker's
        shard is ``loss`` (summed over the workers)."""
        return float(self._reduce([loss.item() * self._own])[0])

    def any(self, flag: bool) -> bool:
        """True on every worker when ``flag`` is true on at least one."""
        return bool(self._reduce([float(flag)], dist.ReduceOp.MAX)[0])

    def all(self, flag: bool) -> bool:
        """True on every worker when ``flag`` is true on all of them."""
        return bool(self._reduce([float(flag)], dist.ReduceOp.MIN)[0])

    def _reduce(self, values: list[float], op=dist.ReduceOp.SUM) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=op)
        return t.cpu().tolist()

    # -- models --------------------------------------------------------------------------------
    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` under DDP, its gradients averaged by each worker's share of the batch.

        The module itself keeps its plain state dict (what checkpoints hold); forward hooks on its
        layers (feature taps) still fire. ``static_graph``: the same parameters take part in
        every step, so DDP finds once which ones do not (a user's model may have layers its output
        does not use: a pooler, an auxiliary head) instead of searching the graph every step.
        """
        if not any(p.requires_grad for p in module.parameters()):
            return module  # nothing to average
        ids = [self.device.index or 0] if self.device.type == "cuda" else None
        ddp = DistributedDataParallel(module, device_ids=ids, static_graph=True)
        ddp.register_comm_hook(self, _weighted_allreduce)
        return ddp

    def wrap_method(self, method):
        """A method whose adapters (FitNet's regressor, ...) have their gradients averaged like
        the student's; a method without trainable parameters as it is."""
        if not any(p.requires_grad for p in method.parameters()):
            return method
        return _MethodOnWorkers(self.wrap(_MethodLoss(method)))

    # -- data and decisions --------------------------------------------------------------------
    def gather_rows(self, compute: Callable[[Split], np.ndarray], split: Split) -> np.ndarray:
        """``compute`` over every row of ``split``, each worker computing one contiguous part;
        every worker gets the whole result (all-gather)."""
        if split.n < self.world_size:  # too few rows to share: each worker computes all
            return compute(split)
        parts = np.array_split(np.arange(split.n), self.world_size)
        mine = torch.from_numpy(np.ascontiguousarray(compute(split.take(parts[self.rank]))))
        padded = torch.zeros((len(parts[0]), *mine.shape[1:]), dtype=mine.dtype)
        padded[: len(mine)] = mine
        padded = padded.to(self.device)
        pieces = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(pieces, padded)
        rows = [p[: len(part)].cpu().numpy() for p, part in zip(pieces, parts, strict=True)]
        return np.concatenate(rows)

    def from_main(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` computed on rank 0 only and sent to every worker.

        An error raised there is raised on every worker (an edgekd error as itself, anything else
        as :class:`WorkerFailed`), so that all workers stop together with the same message.
        """
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = (True, fn(*args, **kwargs))
            except Exception as exc:
                error = exc
                box[0] = (False, exc if isinstance(exc, EdgekdError) else _as_failure(exc))
        dist.broadcast_object_list(box, src=0, device=self._object_device)
        ok, value = box[0]
        if ok:
            return value
        if self.is_main:
            raise error
        raise value

    @property
    def _object_device(self) -> torch.device | None:
        return self.device if self.backend == "nccl" else None


def _as_failure(exc: Exception) -> WorkerFailed:
    first = (str(exc).splitlines() or [""])[0]
    return WorkerFailed(f"rank 0 failed: {type(exc).__name__}: {first}")


# No annotations: DDP checks them against the classes, and this module's are strings.
def _weighted_allreduce(ctx, bucket):  # (DistContext, dist.GradBucket) -> Future[Tensor]
    """DDP communication hook: the sum over workers of each worker's gradient (of its shard's mean
    loss) times its share of the global batch, which is the gradient of the global batch's mean
    loss. DDP's own hook divides by the worker count instead, which equals this only when every
    shard has the same size."""
    buffer = bucket.buffer()
    buffer.mul_(ctx._share)
    future = dist.all_reduce(buffer, async_op=True).get_future()
    return future.then(lambda f: f.value()[0])


class _MethodLoss(nn.Module):
    """A method as a module whose forward is its loss, so that DDP can own its adapters."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch):
        return self.method.loss(batch)


class _MethodOnWorkers:
    """What the trainer calls ``method.loss(batch)`` on: the method's loss through DDP."""

    def __init__(self, ddp: nn.Module) -> None:
        self.loss = ddp


@contextlib.contextmanager
def distributed_session(
    timeout_s: float = DEFAULT_TIMEOUT_S, device: str = "cpu"
) -> Iterator[DistContext | None]:
    """Join the process group torchrun set up for this worker; yield None outside torchrun or
    with one worker.

    A collective that fails because another worker died or stayed silent for ``timeout_s``
    seconds becomes :class:`WorkerFailed` (exit code 7; the CLI prefixes each worker's error
    with its rank). Workers other than rank 0 show no progress bars (rank 0's stand for the run).
    """
    env = worker_env()
    if env is None or env.world_size == 1:
        yield None
        return
    if timeout_s <= 0:
        from edgekd.errors import BadInputError

        raise BadInputError(f"--dist-timeout must be > 0 seconds, got {timeout_s}")
    backend = choose_backend(device)
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(dev)
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    except Exception as exc:
        raise WorkerFailed(
            f"could not join the other {env.world_size - 1} worker(s) within "
            f"{timeout_s:g} s: {_first_line(exc)}"
        ) from None
    ctx = DistContext(env, backend, dev, timeout_s)
    # Waiting for rank 0 to finish the run (export, quantization, benchmarks) may take far longer
    # than any collective; that wait has its own group and timeout.
    finish = dist.new_group(backend="gloo", timeout=timedelta(seconds=FINISH_TIMEOUT_S))
    quiet = not ctx.is_main and "EDGEKD_NO_PROGRESS" not in os.environ
    if quiet:
        os.environ["EDGEKD_NO_PROGRESS"] = "1"
    try:
        yield ctx
        dist.barrier(group=finish)  # the others wait here for rank 0
    except Exception as exc:
        # No teardown on failure: destroying the group while a peer still uses it can abort this
        # process (gloo), which would hide the exit code; the OS closes the connections.
        if isinstance(exc, EdgekdError) or not is_lost_peer(exc):
            raise
        raise WorkerFailed(
            f"lost contact with the other workers (one died, or stayed silent "
            f"for --dist-timeout {timeout_s:g} s): {_first_line(exc)}"
        ) from None
    finally:
        if quiet:
            os.environ.pop("EDGEKD_NO_PROGRESS", None)
    dist.destroy_process_group()  # every worker got here: all are done with the group


def exit_worker(code: int) -> NoReturn:
    """End a torchrun worker with ``code`` now, skipping interpreter shutdown: after a failed or
    interrupted run the process group is not torn down (see :func:`distributed_session`), and its
    gloo threads can make the C++ runtime abort at exit ("terminate called without an active
    exception"), so that torchrun would report SIGABRT instead of ``code``. Everything the run
    writes is closed and fsynced before this point."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _first_line(exc: BaseException) -> str:
    """The gist of a c10d/gloo error: its first sentence, without the C++ source location."""
    line = (str(exc).splitlines() or [type(exc).__name__])[0]
    line = re.sub(r"^\[[^\]]*\]\s*", "", line)  # "[.../gloo/transport/tcp/pair.cc:553] "
    return line.split(". ")[0][:300]


# -- the run folder on several workers ----------------------------------------------------------
def on_main(dist: DistContext | None, stack: contextlib.ExitStack, make: Callable[[], Any]) -> Any:
    """Enter the context manager ``make()`` on rank 0 only (e.g. the run folder) and give every
    worker what it yields; a refusal there (an existing folder, ...) is raised on every worker."""
    if dist is None:
        return stack.enter_context(make())
    return dist.from_main(lambda: stack.enter_context(make()))


def resumes_after_restart(partial: os.PathLike[str], dist: DistContext | None) -> bool:
    """True when torchrun restarted the workers (``--max-restarts``) and rank 0 finds the run folder
    of the attempt that failed: the restarted run then resumes from its last checkpoint."""
    env = worker_env()
    if env is None or env.restart_count == 0:
        return False
    from edgekd.rundir import CONFIG_FILE

    found = (Path(partial) / CONFIG_FILE).is_file
    return found() if dist is None else dist.from_main(found)


def run_stamp() -> str | None:
    """The name part of a default run folder that all workers agree on, and that stays the same
    when torchrun restarts them: torchrun's run id (``edgekd distill --nproc`` sets it to the
    start time). None outside torchrun, or when the run id is not usable."""
    env = worker_env()
    if env is None or not env.run_id or env.run_id == "none":
        return None
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in env.run_id)[:40]
