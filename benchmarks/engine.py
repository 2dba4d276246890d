"""The training engine's overhead: edgekd's loop against a hand-written KD loop, and the
checkpoint's cost per epoch (evidence, not a test).

Side by side in one process, interleaved run by run so that a change in the machine's load hits
both alike: training samples/s of ``edgekd.train.loop.train_student`` (Hinton KD, alpha 0.1,
T 4, cached teacher logits, AdamW + one-cycle, no validation, no checkpoint) against a minimal
hand-written PyTorch loop doing the same (same model and initial weights, data, batch, schedule,
thread count), at 1 thread and at the usable cores (``edgekd.hostinfo.usable_cores``), with the
ratio. The teacher's logits are fixed random numbers: what they are does not change the cost.

Then the checkpoint: seconds per epoch of ``train_student`` saving after every epoch
(``checkpoint_every=0``, the behaviour before issue 15) against the default interval (30 s: on a
short run, once at the end), at 1 thread; and what the thread trial costs
(``edgekd.train.threads``) when it runs.

``--threads 1`` times only that thread count (default: 1 and the usable cores). With
``--loaded`` the samples/s pair runs a second time while a CPU-bound background process
this script starts (``python -c 'while True: pass'``) competes for the cores: the load each half
ran under is printed beside it (``os.getloadavg``, a 1-minute average that lags: read the change,
not the figure).

``--sizes 2000,20000,60000``: default ``edgekd distill`` (a fresh process, cold cache) on that
many samples of enlarged digits with jitter (scikit-learn's 8x8 digits scaled 3x into a 28x28
frame at a random offset, plus noise; generated here, nothing downloaded), with its wall time,
peak RSS (the child's, polled with psutil) and the per-stage seconds from ``report.json``
(``timings_s``). With ``--teacher-400k`` those runs bring their own teacher, as the issue's
60,000-image target does: a 396k-parameter LeNet-like CNN written to a file and trained by a
short hand loop on the data before the timed run (``--teacher FILE.py:make_teacher
--teacher-weights``), and the teacher's and the students' test accuracy are printed beside the
stages. ``--quickstart``: the same for the quick start (``edgekd distill --target
mobile`` on the embedded digits), cold cache. ``--stream N,...``: peak RSS of teacher outputs and
one training epoch over an image folder of N 64x64 RGB PNGs, decoded whole against streamed
(``edgekd.data.stream``).

    PYTHONPATH=. python benchmarks/engine.py                       # MNIST-1D, cnn1d 2.0 x 3
    PYTHONPATH=. python benchmarks/engine.py --data digits --student cnn:2:2 --repeats 5
    PYTHONPATH=. python benchmarks/engine.py --loaded --no-checkpoint --sizes 2000 --quickstart
    PYTHONPATH=. python benchmarks/engine.py --no-speed --no-checkpoint --sizes 60000 --teacher-400k

The load it ran under is printed first (``os.getloadavg``); the numbers are in README.md
("Training engine: threads, checkpoints, data at scale").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
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
import torch.nn.functional as F  # noqa: E402

from edgekd.data import Split, load_data  # noqa: E402
from edgekd.distill.methods import make_method  # noqa: E402
from edgekd.hostinfo import usable_cores  # noqa: E402
from edgekd.students import build_student, count_params  # noqa: E402
from edgekd.train import resume, threads  # noqa: E402
from edgekd.train.loop import TrainConfig, cached_teacher, train_student  # noqa: E402

T, ALPHA = 4.0, 0.1


def hand_loop(model, train: Split, logits: torch.Tensor, config: TrainConfig) -> None:
    """The minimal KD loop a person would write: shuffle, forward, KD + CE, AdamW, one-cycle."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = math.ceil(train.n / config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, total_steps=config.epochs * steps
    )
    x = torch.from_numpy(np.ascontiguousarray(next(iter(train.inputs.values()))))
    y = torch.from_numpy(train.y)
    model.train()
    for _ in range(config.epochs):
        order = torch.from_numpy(rng.permutation(train.n))
        for i in range(steps):
            index = order[i * config.batch_size : (i + 1) * config.batch_size]
            out = model(x[index])
            soft = F.kl_div(
                F.log_softmax(out / T, -1), F.softmax(logits[index] / T, -1), reduction="batchmean"
            )
            loss = ALPHA * F.cross_entropy(out, y[index]) + (1 - ALPHA) * soft * T * T
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()


def edgekd_loop(model, train, logits, config, checkpoint=None) -> None:
    method = make_method("kd", temperature=T)
    signal = cached_teacher(logits.numpy())
    train_student(model, train, None, config, method, signal, checkpoint=checkpoint)


def timed(fn, spec, train, logits, config, seed_weights, **kwargs) -> float:
    torch.manual_seed(seed_weights)
    model = build_student(*spec)
    start = time.perf_counter()
    fn(model, train, logits, config, **kwargs)
    return time.perf_counter() - start


def checkpoint_cost(spec, train, logits, config: TrainConfig, args) -> None:
    """Seconds per epoch with a checkpoint after every epoch and with the default interval, and
    the seconds spent inside the saves themselves (timed directly: steadier than a difference
    of two noisy wall times)."""
    epochs = args.checkpoint_epochs
    print(f"\ncheckpoint cost, 1 thread, {epochs}-epoch runs (per epoch, median):")
    threads.request_train_threads(1)
    torch.set_num_threads(1)
    rows = {"every epoch (checkpoint_every=0)": 0.0, "default (checkpoint_every=30)": 30.0}
    wall: dict[str, list[float]] = {k: [] for k in rows}
    saving: dict[str, list[float]] = {k: [] for k in rows}
    real_save = resume.save_training_state
    spent = [0.0]

    def timed_save(*a, **k):
        t0 = time.perf_counter()
        try:
            return real_save(*a, **k)
        finally:
            spent[0] += time.perf_counter() - t0

    resume.save_training_state = timed_save
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeats):
                for name, every in rows.items():
                    cfg = TrainConfig(**{**config.settings(), "epochs": epochs})
                    cfg = dataclasses.replace(cfg, checkpoint_every=every)
                    path = Path(tmp) / "checkpoint.pt"
                    path.unlink(missing_ok=True)
                    spent[0] = 0.0
                    seconds = timed(edgekd_loop, spec, train, logits, cfg, 0, checkpoint=path)
                    wall[name].append(seconds / epochs)
                    saving[name].append(spent[0] / epochs)
    finally:
        resume.save_training_state = real_save
    print(f"  {'':<34} {'wall':>7} {'in saves':>9}")
    for name in rows:
        w, s = statistics.median(wall[name]), statistics.median(saving[name])
        print(f"  {name:<34} {w:>6.3f}s {s:>8.3f}s")


def samples_per_second(spec, train, logits, config, args, cores, half: str = "as found") -> None:
    """edgekd's loop and the hand loop, interleaved, at 1 thread and at the usable cores."""
    samples = train.n * config.epochs
    load = os.getloadavg()[0]
    print(f"\n{half}: load {load:.2f} at the start")
    print(f"{'threads':>7}  {'edgekd samples/s':>16}  {'hand loop samples/s':>19}  {'ratio':>5}")
    for n in args.threads or sorted({1, cores}):
        threads.request_train_threads(n)
        torch.set_num_threads(n)
        warm = TrainConfig(**{**config.settings(), "epochs": 1})  # first-call costs, untimed
        timed(edgekd_loop, spec, train, logits, warm, 0)
        timed(hand_loop, spec, train, logits, warm, 0)
        ours, theirs = [], []
        for _ in range(args.repeats):
            ours.append(timed(edgekd_loop, spec, train, logits, config, 0))
            theirs.append(timed(hand_loop, spec, train, logits, config, 0))
        a, b = samples / statistics.median(ours), samples / statistics.median(theirs)
        print(f"{n:>7}  {a:>16.0f}  {b:>19.0f}  {a / b:>5.2f}")
    print(f"{half}: load {os.getloadavg()[0]:.2f} at the end")


class cpu_burner:  # noqa: N801 - a context manager, named for what it does
    """A CPU-bound background process for the block's duration (the "loaded machine")."""

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def jittered_digits(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` 1x28x28 images: scikit-learn's digits scaled 3x (24x24) at a random offset in a
    28x28 frame, plus Gaussian noise (sigma 0.05), clipped to [0, 1]; their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(d.target), n)
    big = np.kron(d.images.astype(np.float32) / 16.0, np.ones((3, 3), np.float32))
    x = np.zeros((n, 1, 28, 28), np.float32)
    dy, dx = rng.integers(0, 5, n), rng.integers(0, 5, n)
    for i in range(n):
        x[i, 0, dy[i] : dy[i] + 24, dx[i] : dx[i] + 24] = big[pick[i]]
    x += rng.normal(0.0, 0.05, x.shape).astype(np.float32)
    return {"x": np.clip(x, 0.0, 1.0), "y": d.target[pick].astype(np.int64)}


def peak_rss_of(argv: list[str], env: dict) -> tuple[float, int, int]:
    """(wall seconds, exit code, peak RSS in bytes) of a child, its RSS polled every 50 ms
    (its own, not its bench workers')."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watched, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.05)
    err = proc.stderr.read().decode(errors="replace").strip().splitlines()
    if proc.returncode:
        print(f"  exit {proc.returncode}: {err[-1] if err else ''}")
    return time.perf_counter() - start, proc.returncode, peak


# The 60,000-image case: a third-party ~400k-parameter CNN teacher (LeNet-like: conv 32,
# conv 64, fc 120; 396,466 parameters at 1x28x28), brought as a file and its weights.
TEACHER_400K = """from torch import nn


def make_teacher():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 120), nn.ReLU(), nn.Linear(120, 10))
"""


def teacher_400k(folder: Path, data: dict[str, np.ndarray], epochs: int = 2) -> list[str]:
    """Write the 400k teacher's file into ``folder`` and train it on all of ``data`` with a short
    hand loop (Adam 1e-3, batch 128, ``epochs`` epochs: a user's own teacher, trained before
    edgekd runs; not timed with the run); the ``distill`` options that bring it."""
    import importlib.util

    from safetensors.torch import save_file

    (folder / "teacher400k.py").write_text(TEACHER_400K)
    spec = importlib.util.spec_from_file_location("teacher400k", folder / "teacher400k.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    teacher = module.make_teacher()
    x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
    opt = torch.optim.Adam(teacher.parameters(), 1e-3)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            index = order[i : i + 128]
            loss = F.cross_entropy(teacher(x[index]), y[index])
            opt.zero_grad()
            loss.backward()
            opt.step()
    fresh = jittered_digits(5_000, seed=1)
    with torch.no_grad():
        acc = (teacher(torch.from_numpy(fresh["x"])).argmax(1).numpy() == fresh["y"]).mean()
    save_file(teacher.state_dict(), str(folder / "teacher.safetensors"))
    params = sum(p.numel() for p in teacher.parameters())
    print(f"  400k teacher ({params:,} parameters): {epochs} epochs by hand in "
          f"{time.perf_counter() - start:.0f} s (not timed below), {acc:.2%} on 5,000 fresh "
          f"digits")  # fmt: skip
    return ["--teacher", f"{folder / 'teacher400k.py'}:make_teacher",
            "--teacher-weights", str(folder / "teacher.safetensors")]  # fmt: skip


def distill_runs(args) -> None:
    """Default ``edgekd distill`` per data size (and the quick start), each cold-cached; with
    ``--teacher-400k`` the sized runs bring the 400k teacher instead of the default one."""
    runs = [(f"{n:,} jittered digits", n) for n in args.sizes]
    if args.quickstart:
        runs.insert(0, ("quick start (digits, mobile)", None))
    print("\ndefault distill, a fresh process and an empty cache each:")
    for label, n in runs:
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "EDGEKD_CACHE": str(Path(tmp) / "cache")}
            argv = [sys.executable, "-m", "edgekd", "distill", "--target", "mobile",
                    "--out", str(Path(tmp) / "run"), "--json"]  # fmt: skip
            if n is not None:
                data = jittered_digits(n)
                np.savez(Path(tmp) / "data.npz", **data)  # uncompressed: memory-mapped
                argv += ["--data", str(Path(tmp) / "data.npz")]
                if args.teacher_400k:
                    label += ", 400k teacher"
                    argv += teacher_400k(Path(tmp), data)
            load = os.getloadavg()[0]
            wall, code, peak = peak_rss_of(argv, env)
            report = Path(tmp) / "run" / "report.json"
            r = json.loads(report.read_text()) if report.is_file() else {}
            stages = ", ".join(f"{k} {v:.1f}" for k, v in (r.get("timings_s") or {}).items())
            acc = {m["name"]: m.get("accuracy") for m in r.get("models", [])}
            print(f"  {label}: {wall:.0f} s, peak RSS {peak / 2**20:.0f} MiB, load {load:.2f} -> "
                  f"{os.getloadavg()[0]:.2f}, exit {code}")  # fmt: skip
            print(f"    stages (s): {stages}")
            training = r.get("training") or {}
            print(f"    accuracy: {acc}; epochs: {training.get('epochs')} "
                  f"({training.get('epochs_from')}); student: {student_words(r)}")  # fmt: skip


def student_words(report: dict) -> str:
    s = report.get("student") or {}
    return f"{s.get('family')} width {s.get('width')} depth {s.get('depth')}, {s.get('params')}"


STREAM_CHILD = """
import resource, sys, numpy as np, torch
from edgekd.data import load_data
from edgekd.data.readers import image_folder
from edgekd.students import build_student
from edgekd.teacher.outputs import module_outputs
from edgekd.train.loop import TrainConfig, train_student
image_folder.STREAM_MIN_BYTES = 0 if sys.argv[2] == "streamed" else 1 << 62
data = load_data(sys.argv[1], seed=0)
torch.manual_seed(0)
model = build_student("cnn", data.sample_shapes["x"], 10, width=0.5, depth=2)
module_outputs(model, data.train, use_cache=False)
train_student(model, data.train, None, TrainConfig(epochs=1, batch_size=64))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def stream_rss(args) -> None:
    """Peak RSS of loading, teacher outputs and one epoch over a folder of N 64x64 RGB PNGs,
    decoded whole against streamed (DataLoader workers' own RSS not included)."""
    from PIL import Image

    print("\nimage folder, 64x64 RGB PNGs: load + teacher outputs + 1 epoch, peak RSS of the "
          "training process")  # fmt: skip
    rng = np.random.default_rng(0)
    for n in args.stream:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(n):
                folder = Path(tmp) / "imgs" / f"c{i % 10}"
                folder.mkdir(parents=True, exist_ok=True)
                pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:06}.png")
            decoded = n * 3 * 64 * 64 * 4 / 2**20
            row = []
            for how in ("in memory", "streamed"):
                start = time.perf_counter()
                out = subprocess.run(
                    [sys.executable, "-c", STREAM_CHILD, str(Path(tmp) / "imgs"), how.split()[-1]],
                    capture_output=True, text=True, env={**os.environ, "EDGEKD_NO_PROGRESS": "1"},
                )  # fmt: skip
                rss = int(out.stdout.split()[-1]) / 2**20 if out.returncode == 0 else float("nan")
                row.append(f"{how} {rss:.0f} MiB in {time.perf_counter() - start:.0f} s")
            print(f"  {n:,} images ({decoded:.0f} MiB decoded): {'; '.join(row)}; "
                  f"load {os.getloadavg()[0]:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist1d")
    parser.add_argument("--student", default="cnn1d:2.0:3", help="FAMILY:WIDTH:DEPTH")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint-epochs", type=int, default=5)
    parser.add_argument("--loaded", action="store_true", help="also under a CPU-bound process")
    parser.add_argument(
        "--threads", type=_ints, default=(), help="thread counts (default: 1 and the usable cores)"
    )
    parser.add_argument("--no-checkpoint", action="store_true", help="skip the checkpoint cost")
    parser.add_argument("--no-speed", action="store_true", help="skip the samples/s pair")
    parser.add_argument("--sizes", type=_ints, default=(), help="e.g. 2000,20000,60000")
    parser.add_argument("--quickstart", action="store_true", help="the quick start, cold cache")
    parser.add_argument(
        "--teacher-400k", action="store_true", help="--sizes runs with a 400k CNN teacher file"
    )
    parser.add_argument("--stream", type=_ints, default=(), help="image counts, e.g. 2000,8000")
    args = parser.parse_args()

    load = os.getloadavg()
    cores = usable_cores()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; usable cores {cores}")
    data = load_data(args.data, seed=0)
    train = data.train
    family, width, depth = args.student.split(":")
    shape = data.sample_shapes[data.input_names[0]]
    spec = (family, shape, data.num_classes, float(width), int(depth))
    logits = torch.from_numpy(
        np.random.default_rng(1).normal(size=(train.n, data.num_classes)).astype(np.float32)
    )
    config = TrainConfig(epochs=args.epochs, lr=1e-2, batch_size=args.batch_size, alpha=ALPHA)
    params = count_params(build_student(*spec))
    print(
        f"{args.data}: {train.n} training samples, {family} width {width} depth {depth} "
        f"({params:,} parameters), batch {args.batch_size}, {args.epochs} epochs per run, "
        f"median of {args.repeats} interleaved runs"
    )
    if not args.no_speed:
        samples_per_second(spec, train, logits, config, args, cores)
        if args.loaded:
            with cpu_burner():
                time.sleep(5)  # let the background process take its share before timing
                samples_per_second(spec, train, logits, config, args, cores, "loaded")
    if not args.no_checkpoint:
        checkpoint_cost(spec, train, logits, config, args)
        thread_trial(spec, train)
    if args.sizes or args.quickstart:
        distill_runs(args)
    if args.stream:
        stream_rss(args)


def thread_trial(spec, train) -> None:
    threads.request_train_threads(None)
    for name in (threads.ENV, "OMP_NUM_THREADS"):
        os.environ.pop(name, None)
    threads.forget_measurement()  # measure now, as the first training of a process does
    torch.manual_seed(0)
    start = time.perf_counter()
    train_student(build_student(*spec), train, None, TrainConfig(epochs=1, alpha=1.0))
    choice = threads.current_choice()
    print(
        f"\nthread trial before training: {choice.trial_seconds:.3f} s "
        f"(one 1-epoch training, {time.perf_counter() - start:.2f} s in all); {choice.why}"
    )


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v)


if __name__ == "__main__":
    main()
