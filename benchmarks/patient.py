"""Patient and consistent teaching against scratch and plain KD (evidence, not a test).

MNIST-1D (3,601 train / 399 val / 1,000 test sequences) with the default sequence teacher
(``edgekd.teacher.default``: 1-D CNN, 63K parameters, 100 epochs with shift + noise, cached),
and six
students of about 5K, 10K and 15K parameters, 1-D CNNs and MLPs. Per student and seed:

- scratch: labels only (alpha = 1), the stored samples;
- scratch + aug: labels only on the label-preserving jitter (``--augment light``: shift and
  noise), so that what augmentation alone buys is not credited to the teacher;
- plain KD: Hinton KD, T = 4, alpha = 0.1, the teacher's cached logits on the stored samples;
- defaults: what a plain ``edgekd distill`` does (``edgekd.distill.job.make_job``): the same
  KD loss, but teacher and student see the same augmented batch (for sequences: shift, noise and
  mixup, whose mixed views only the teacher labels), the teacher run live (function matching),
  the best epoch chosen on validation agreement with the teacher.

All rows train distill's default number of epochs for the data (300 with augmented views) with
the same one-cycle schedule and peak learning rate, so the rows differ only in how they are
taught. Printed: test accuracy mean +- std over seeds (student initialisation, shuffling,
augmentation; split and teacher fixed), the share of the teacher-minus-scratch gap each row
closes, and seconds per run (the cost of running the teacher live). Then the digits default: the
student ``distill --target mobile`` sizes.

    PYTHONPATH=. python benchmarks/patient.py             # distill's epochs, 3 seeds, 2 processes
    PYTHONPATH=. python benchmarks/patient.py --epochs 100 --json patient.json

Measured results and run times are in README.md ("Patient and consistent teaching").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

os.environ.setdefault("EDGEKD_NO_PROGRESS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from edgekd.config import DistillConfig  # noqa: E402
from edgekd.data import load_data  # noqa: E402
from edgekd.data.augment import make_augmenter  # noqa: E402
from edgekd.distill.job import default_epochs, make_job  # noqa: E402
from edgekd.distill.strategies import run_strategy  # noqa: E402
from edgekd.distill.views import resolve_augment  # noqa: E402
from edgekd.students import build_student, count_params  # noqa: E402
from edgekd.teacher.prepare import prepare_teaching  # noqa: E402
from edgekd.train.loop import TrainConfig, accuracy, predict_logits, train_student  # noqa: E402

# MNIST-1D students: (family, width, depth); about 5K, 10K and 15K parameters each.
STUDENTS = (
    ("cnn1d", 1.0, 4),
    ("cnn1d", 1.5, 3),
    ("cnn1d", 2.0, 3),
    ("mlp", 1.5625, 1),
    ("mlp", 1.25, 2),
    ("mlp", 1.5625, 2),
)
ROWS = ("scratch", "scratch + aug", "plain KD", "defaults")

_cache: dict = {}  # per worker process: data and teaching, prepared once


def _setup(name: str):
    if name not in _cache:
        data = load_data(name, seed=0)
        teaching = prepare_teaching(DistillConfig(data=name), data)
        _cache[name] = (data, teaching)
    return _cache[name]


def run_one(task: tuple) -> tuple[tuple, float, float]:
    """One (data, student, row, seed, epochs) training; its test accuracy and seconds."""
    torch.set_num_threads(1)
    name, student_spec, row, seed, epochs = task
    data, teaching = _setup(name)
    torch.manual_seed(seed)
    if isinstance(student_spec, tuple):
        family, width, depth = student_spec
        student = build_student(family, data.sample_shapes["x"], data.num_classes, width, depth)
    else:  # the candidate the sizing chose (digits)
        from edgekd.sizing import build_candidate

        student = build_candidate(student_spec, data)
    start = time.perf_counter()
    if row.startswith("scratch"):
        config = TrainConfig(epochs=epochs, alpha=1.0, seed=seed, lr=DistillConfig().lr)
        augment = make_augmenter(data.input_kind, "light") if row == "scratch + aug" else None
        train_student(student, data.train, data.val, config, description=row, augment=augment)
    else:
        augment = "none" if row == "plain KD" else None  # None: distill's default
        config = DistillConfig(data=name, epochs=epochs, seed=seed, augment=augment)
        job, _ = make_job(config, teaching, student, "offline", "kd")
        student = run_strategy("offline", job).student
    seconds = time.perf_counter() - start
    return task, accuracy(predict_logits(student, data.test), data.test.y), seconds


def gap_closed(acc: float, scratch: float, teacher: float) -> str:
    gap = teacher - scratch
    return f"{(acc - scratch) / gap:.0%}" if gap > 0 else "no gap"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help="MNIST-1D epochs (default: distill's)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (1 thread each)")
    parser.add_argument("--data", default="mnist1d,digits")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args()
    names = [n for n in args.data.split(",") if n]
    start = time.perf_counter()
    torch.set_num_threads(1)
    header, tasks = {}, []
    for name in names:
        data, teaching = _setup(name)  # trains and caches the teacher once, before the workers
        t_acc = accuracy(predict_logits(teaching.model, data.test), data.test.y)
        if name == "digits":
            from edgekd.sizing import size_student_to_budget
            from edgekd.targets import load_target

            chosen = size_student_to_budget(load_target("mobile"), data, teaching.params).chosen
            students, epochs = [chosen], default_epochs(resolve_augment(None, data.input_kind))
        else:
            students = list(STUDENTS)
            epochs = args.epochs or default_epochs(resolve_augment(None, data.input_kind))
        header[name] = {
            "teacher": f"{teaching.info['source']}, {teaching.params:,} params",
            "teacher_test_accuracy": t_acc,
            "train/val/test": [data.train.n, data.val.n, data.test.n],
            "epochs": epochs,
        }
        tasks += [(name, s, row, seed, epochs) for s in students for row in ROWS
                  for seed in range(args.seeds)]  # fmt: skip
    print(
        f"settings: {len(tasks)} runs, seeds {args.seeds}, {args.jobs} processes x 1 thread, "
        f"torch {torch.__version__}; defaults = {DistillConfig().method or 'kd'}, T "
        f"{DistillConfig().temperature}, alpha 0.1, augmentation by input kind",
        flush=True,
    )
    results: dict = {}
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        for task, acc, seconds in pool.map(run_one, tasks):
            name, spec, row, seed, _ = task
            label = _label(spec)
            results.setdefault(name, {}).setdefault(label, {}).setdefault(row, []).append(
                (acc, seconds)
            )
            print(f"  {name} {label} {row} seed {seed}: {acc:.4f} ({seconds:.1f} s)",
                  file=sys.stderr, flush=True)  # fmt: skip
    wall = time.perf_counter() - start
    for name in names:
        print_table(name, header[name], results[name])
    print(f"\nwall time {wall / 60:.1f} min")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"settings": header, "results": results, "wall_s": wall}, fh, indent=2)


def _label(spec) -> str:
    if isinstance(spec, tuple):
        family, width, depth = spec
        n = count_params(build_student(family, (1, 40), 10, width, depth))
        return f"{family} w{width:g} d{depth} ({n:,})"
    return f"{spec.family} w{spec.width:g} d{spec.depth:g} ({spec.params:,})"


def print_table(name: str, header: dict, rows: dict) -> None:
    t_acc = header["teacher_test_accuracy"]
    print(f"\n## {name} (train/val/test {header['train/val/test']}, {header['epochs']} epochs)")
    print(f"teacher: {header['teacher']}, test accuracy {t_acc:.2%}\n")
    print("| student (params) | scratch | scratch + aug | plain KD | defaults | gap closed: "
          "aug / KD / defaults | s/run |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for label, by_row in rows.items():
        acc = {r: np.array([a for a, _ in v]) for r, v in by_row.items()}
        sec = {r: np.mean([s for _, s in v]) for r, v in by_row.items()}
        cells = [f"{a.mean():.2%} +- {a.std(ddof=1) if len(a) > 1 else 0:.2%}" for a in (
            acc[r] for r in ROWS)]  # fmt: skip
        base = acc["scratch"].mean()
        closed = " / ".join(gap_closed(acc[r].mean(), base, t_acc) for r in ROWS[1:])
        times = " / ".join(f"{sec[r]:.0f}" for r in ROWS)
        print(f"| {label} | " + " | ".join(cells) + f" | {closed} | {times} |")


if __name__ == "__main__":
    main()
