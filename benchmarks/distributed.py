"""1 vs 2 CPU workers (torchrun + DistributedDataParallel over gloo) distilling the same student:
training throughput (samples/s) and final test accuracy of each (evidence, not a test).

The default teacher for digits is trained once (cached) in this process; then each configuration
runs under ``python -m torch.distributed.run --standalone`` and distils the same student (same
seed, same global batch) with ``kd`` through ``edgekd.train.loop.train_student``:

    1 worker  x 1 thread     the baseline
    2 workers x 1 thread     data parallel: each worker half of every global batch, gradients
                             all-reduced by DDP over gloo (loopback TCP)
    1 worker  x 2 threads    (--with-threads) the two cores used by intra-op threads instead

Two students by default: the small CNN the mobile target gets (~7.5k parameters, about 2 ms of
compute per step of 64 samples: synchronisation dominates) and a compute-heavy one (cnn:4:4,
~557k parameters). Configurations are interleaved over ``--repeats`` rounds (the host is shared,
so one round can be slow); the median and the range are printed. Timed: ``train_student`` alone,
without validation, after a warm-up ``train_student`` on 128 samples (the first call in a process
spends 1-3 s importing what the optimizer and DDP need, which would swamp a short run). The
warm-up and the teacher's outputs (sharded over the workers) are timed separately. "max |dw|":
the largest difference of any floating-point weight from the 1-worker student; with BatchNorm
each worker normalises its own half-batch, so those students differ by design.

    PYTHONPATH=. python benchmarks/distributed.py                 # ~3 min on 2 busy cores
    PYTHONPATH=. python benchmarks/distributed.py --student mlp:4:2 --epochs 10 --with-threads
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("EDGEKD_NO_PROGRESS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgekd.data import load_data  # noqa: E402
from edgekd.distill.methods import make_method  # noqa: E402
from edgekd.students import build_student, count_params  # noqa: E402
from edgekd.students.checkpoint import load_model, save_model  # noqa: E402
from edgekd.teacher.default import default_teacher  # noqa: E402
from edgekd.teacher.outputs import teacher_outputs  # noqa: E402
from edgekd.train.distributed import distributed_session  # noqa: E402
from edgekd.train.loop import (  # noqa: E402
    TrainConfig,
    accuracy,
    cached_teacher,
    predict_logits,
    train_student,
)

CONFIGS = (("1 worker x 1 thread", 1, 1), ("2 workers x 1 thread", 2, 1))
THREADS = ("1 worker x 2 threads", 1, 2)
# (family:width:depth, epochs): about 10 s of single-worker training each on an idle core.
STUDENTS = (("cnn:1:2", 10), ("cnn:4:4", 3))


def worker(args: argparse.Namespace) -> None:
    """One configuration, in each torchrun worker; rank 0 writes the result."""
    torch.set_num_threads(args.threads)
    data = load_data("digits", seed=0)
    teacher = load_model(Path(args.dir) / "teacher.safetensors")
    family, width, depth = args.student.split(":")
    config = TrainConfig(epochs=args.epochs, lr=3e-3, batch_size=args.batch_size, alpha=0.1)
    with distributed_session() as dist:
        start = time.perf_counter()
        warm = build_student(family, (1, 8, 8), 10, float(width), int(depth))
        brief = TrainConfig(epochs=1, lr=3e-3, batch_size=args.batch_size)
        train_student(warm, data.train.take(np.arange(128)), None, brief, dist=dist)
        warmup_s = time.perf_counter() - start
        start = time.perf_counter()
        logits = teacher_outputs(teacher, data.train, dist=dist)  # sharded, not cached
        teacher_s = time.perf_counter() - start
        torch.manual_seed(0)
        student = build_student(family, (1, 8, 8), 10, float(width), int(depth))
        method = make_method("kd", temperature=4.0)
        method.setup(student, teacher, {"x": data.train.inputs["x"][:8]})
        start = time.perf_counter()
        train_student(student, data.train, None, config, method, cached_teacher(logits), dist=dist)
        train_s = time.perf_counter() - start
        if dist is None or dist.is_main:
            result = {
                "train_s": train_s,
                "teacher_s": teacher_s,
                "warmup_s": warmup_s,
                "samples_per_s": args.epochs * data.train.n / train_s,
                "test_accuracy": accuracy(predict_logits(student, data.test), data.test.y),
                "params": count_params(student),
            }
            Path(args.dir, f"{args.tag}.json").write_text(json.dumps(result))
            torch.save(student.state_dict(), Path(args.dir, f"{args.tag}.pt"))


def run_config(args, workdir: Path, tag: str, workers: int, threads: int, student, epochs):
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc-per-node", str(workers), __file__, "--worker", "--dir", str(workdir),
        "--tag", tag, "--threads", str(threads), "--epochs", str(epochs),
        "--batch-size", str(args.batch_size), "--student", student,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{tag} failed:\n{proc.stderr[-3000:]}")
    return json.loads((workdir / f"{tag}.json").read_text())


def max_weight_diff(a: Path, b: Path) -> float:
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    floats = [k for k in sa if sa[k].is_floating_point()]  # not BatchNorm's step counters
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in floats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--tag", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=None, help="default: per student")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch")
    parser.add_argument("--student", default=None, help="family:width:depth (default: two)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--with-threads", action="store_true", help="add 1 worker x 2 threads")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    data = load_data("digits", seed=0)
    teacher, info = default_teacher(data)
    cores = os.cpu_count()
    print(
        f"host: {cores} logical CPUs (shared with other jobs); torch {torch.__version__}; "
        f"digits: {data.train.n} training samples; teacher {info.params:,} params "
        f"(test acc {accuracy(predict_logits(teacher, data.test), data.test.y):.3f})"
    )
    students = STUDENTS if args.student is None else ((args.student, args.epochs or 10),)
    configs = CONFIGS + ((THREADS,) if args.with_threads else ())
    print(f"kd T=4 alpha=0.1, global batch {args.batch_size}, {args.repeats} interleaved rounds")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        save_model(teacher, workdir / "teacher.safetensors")
        for s, (student, default_epochs) in enumerate(students):
            epochs = args.epochs or default_epochs
            runs: dict[str, list[dict]] = {name: [] for name, _, _ in configs}
            for r in range(args.repeats):
                for i, (name, workers, threads) in enumerate(configs):
                    tag = f"s{s}c{i}r{r}"
                    runs[name].append(
                        run_config(args, workdir, tag, workers, threads, student, epochs)
                    )
            params = runs[configs[0][0]][0]["params"]
            print(f"\nstudent {student} ({params:,} parameters), {epochs} epochs")
            report(runs, configs, workdir, s)


def report(runs: dict[str, list[dict]], configs, workdir: Path, s: int) -> None:
    base = statistics.median(x["samples_per_s"] for x in runs[configs[0][0]])
    header = (
        f"{'configuration':<22} {'samples/s (median, range)':>28} {'speedup':>8} "
        f"{'warm-up s':>10} {'teacher s':>10} {'test acc':>9} {'max |dw| vs 1x1':>16}"
    )
    print(header)
    print("-" * len(header))
    for i, (name, _, _) in enumerate(configs):
        rates = [x["samples_per_s"] for x in runs[name]]
        med = statistics.median(rates)
        teacher_s = statistics.median(x["teacher_s"] for x in runs[name])
        warmup_s = statistics.median(x["warmup_s"] for x in runs[name])
        diff = max_weight_diff(workdir / f"s{s}c0r0.pt", workdir / f"s{s}c{i}r0.pt")
        print(
            f"{name:<22} {med:>10.0f} ({min(rates):>6.0f} - {max(rates):>6.0f}) "
            f"{med / base:>7.2f}x {warmup_s:>10.2f} {teacher_s:>10.3f}"
            f" {runs[name][0]['test_accuracy']:>9.3f} {diff:>16.2e}"
        )


if __name__ == "__main__":
    main()
