"""What bringing your own teacher and surviving interruption cost on this host.

1. Offline teacher outputs for a large teacher (an MLP of 40M parameters, 152 MiB of fp32
   weights): one batched pass over the data, then the cached file on the next run, with the
   process's peak RSS (the teacher plus one batch, not the teacher per epoch).
2. Per-epoch checkpoints: size of the training state and time to write it (temporary file, fsync,
   rename) next to the time of one training epoch, for students of three sizes on digits.
3. Resume equivalence: a run stopped mid-epoch (SIGINT) and resumed, against a run never stopped.

    PYTHONPATH=. python benchmarks/reliability_costs.py [--samples 4096]
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

os.environ.setdefault("EDGEKD_NO_PROGRESS", "1")

from edgekd.data import Split, load_data  # noqa: E402
from edgekd.distill.methods import make_method  # noqa: E402
from edgekd.errors import Interrupted  # noqa: E402
from edgekd.students import build_student, count_params  # noqa: E402
from edgekd.teacher.outputs import teacher_outputs  # noqa: E402
from edgekd.train.loop import TrainConfig, cached_teacher, train_student  # noqa: E402
from edgekd.train.resume import save_training_state  # noqa: E402

torch.set_num_threads(1)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def offline_outputs(samples: int) -> None:
    print("1. offline teacher outputs (batches of 64, cached)")
    torch.manual_seed(0)
    teacher = nn.Sequential(
        nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 512),
    ).eval()  # fmt: skip
    params = count_params(teacher)
    x = np.random.default_rng(0).normal(size=(samples, 1024)).astype(np.float32)
    split = Split({"x": x})
    before = peak_rss_mb()
    start = time.perf_counter()
    out = teacher_outputs(teacher, split, key="bench")
    first = time.perf_counter() - start
    start = time.perf_counter()
    cached = teacher_outputs(teacher, split, key="bench")
    from_cache = time.perf_counter() - start
    start = time.perf_counter()
    again = teacher_outputs(teacher, split, key=None)  # what each epoch would cost run live
    live_epoch = time.perf_counter() - start
    print(f"   teacher {params / 1e6:.1f}M params ({params * 4 / 2**20:.0f} MiB fp32), "
          f"{samples} samples -> outputs {out.shape}")  # fmt: skip
    print(f"   first pass {first:.2f} s (incl. cache write); from the cache {from_cache:.3f} s; "
          f"one more live pass {live_epoch:.2f} s")  # fmt: skip
    print(f"   peak RSS {peak_rss_mb():.0f} MiB (before the pass: {before:.0f} MiB)")
    assert np.array_equal(out, again) and np.array_equal(out, cached)


def checkpoint_cost(tmp: Path) -> None:
    print("2. per-epoch checkpoint vs one epoch of training (digits, batch 64, 1 thread)")
    data = load_data(None)
    logits = np.random.default_rng(0).normal(size=(data.train.n, 10)).astype(np.float32)
    print(f"   {'student':<22} {'params':>9} {'state MB':>9} {'write ms':>9} {'epoch ms':>9}"
          f" {'write/epoch':>12}")  # fmt: skip
    warm = build_student("mlp", (1, 8, 8), 10, 0.25, 1)
    train_student(warm, data.train, None, TrainConfig(epochs=1), make_method("kd"),
                  cached_teacher(logits))  # fmt: skip
    for family, width in (("mlp", 0.5), ("cnn", 1.0), ("cnn", 3.0)):
        student = build_student(family, (1, 8, 8), 10, width, 2)
        config = TrainConfig(epochs=3, seed=0)
        path = tmp / f"{family}-{width}.pt"
        start = time.perf_counter()
        train_student(student, data.train, data.val, config, make_method("kd"),
                      cached_teacher(logits), checkpoint=path)  # fmt: skip
        epoch_ms = (time.perf_counter() - start) / config.epochs * 1e3
        state = torch.load(path, weights_only=True)  # the real training state, re-written
        writes = []
        for _ in range(5):
            t = time.perf_counter()
            save_training_state(tmp / "probe.pt", state)
            writes.append((time.perf_counter() - t) * 1e3)
        size_mb = path.stat().st_size / 2**20
        write_ms = float(np.median(writes))
        name, share = f"{family} width {width}", write_ms / epoch_ms
        print(f"   {name:<22} {count_params(student):>9,} {size_mb:>9.2f} {write_ms:>9.1f} "
              f"{epoch_ms:>9.0f} {share:>12.1%}")  # fmt: skip


def resume_equivalence(tmp: Path) -> None:
    print("3. resume equivalence (cnn width 1, 4 epochs, SIGINT at epoch 3 step 5)")
    data = load_data(None)
    logits = np.random.default_rng(0).normal(size=(data.train.n, 10)).astype(np.float32)
    config = TrainConfig(epochs=4, seed=0)

    def run(path, on_call=None, resume=False):
        torch.manual_seed(0)
        student = build_student("cnn", (1, 8, 8), 10, 1.0, 2)
        base, calls = cached_teacher(logits), [0]

        def teacher(index, batch):
            calls[0] += 1
            if on_call:
                on_call(calls[0])
            return base(index, batch)

        train_student(student, data.train, data.val, config, make_method("kd"), teacher,
                      checkpoint=path, resume=resume)  # fmt: skip
        return student

    reference = run(tmp / "a.pt")
    steps = -(-data.train.n // config.batch_size)
    try:
        run(tmp / "b.pt", lambda n: n == 2 * steps + 5 and os.kill(os.getpid(), signal.SIGINT))
    except Interrupted as exc:
        print(f"   {exc}")
    resumed = run(tmp / "b.pt", resume=True)
    pairs = list(zip(reference.state_dict().values(), resumed.state_dict().values(), strict=True))
    diffs = [(a - b).abs().max().item() for a, b in pairs if a.is_floating_point()]
    same = all(torch.equal(a, b) for a, b in pairs)
    print(f"   bit-identical final weights: {same}; max |difference| {max(diffs):.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4096)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["EDGEKD_CACHE"] = tmp  # never the user's cache
        offline_outputs(args.samples)
        checkpoint_cost(Path(tmp))
        resume_equivalence(Path(tmp))


if __name__ == "__main__":
    main()
