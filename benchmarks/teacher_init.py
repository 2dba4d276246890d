"""Does initialising a student from its teacher's weights help? Measured on digits.

For a cnn teacher (the default: cnn width 2 depth 4) and an mlp teacher (mlp width 8 depth 3,
trained here), distils students of two sizes three ways: random initialisation, the teacher's
every-other layer (DistilBERT) and its first layers (Weight Selection), each with leading-channel
slices, for a short and a longer schedule over several seeds, and prints the test accuracy (mean
and spread over seeds) side by side. Same KD loss, data, schedule and seeds in every arm.

    PYTHONPATH=. python benchmarks/teacher_init.py [--seeds 3] [--epochs 5 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from edgekd.cache import cache_dir, cache_key
from edgekd.data import load_data
from edgekd.distill.methods import make_method
from edgekd.students import build_student
from edgekd.students.checkpoint import load_model, save_model
from edgekd.students.teacher_init import init_from_teacher
from edgekd.teacher.default import default_teacher
from edgekd.train.loop import (
    TrainConfig,
    accuracy,
    cached_teacher,
    predict_logits,
    train_student,
)

torch.set_num_threads(1)

STUDENTS = {"cnn": [(0.5, 2), (1.0, 3)], "mlp": [(0.5, 1), (1.0, 2)]}
ARMS = ("random", "every_other", "first")


def mlp_teacher(data, epochs: int = 40):
    """An mlp teacher on digits, trained once and cached like the default teachers."""
    key = cache_key(data=data.train.fingerprint(), family="mlp", width=8.0, depth=3, e=epochs)
    path = cache_dir() / f"bench-mlp-teacher-{key}.safetensors"
    if path.is_file():
        return load_model(path)
    model = build_student("mlp", (1, 8, 8), 10, 8.0, 3)
    train_student(model, data.train, data.val, TrainConfig(epochs=epochs, alpha=1.0), None, None)
    save_model(model, path)
    return model.eval()


def run_arm(data, teacher, logits, family, width, depth, arm, epochs, seed) -> float:
    torch.manual_seed(seed)
    student = build_student(family, (1, 8, 8), 10, width, depth)
    if arm != "random":
        init_from_teacher(student, teacher, layers=arm)
    train_student(
        student,
        data.train,
        data.val,
        TrainConfig(epochs=epochs, seed=seed, alpha=0.1),
        method=make_method("kd", temperature=4.0),
        teacher=cached_teacher(logits),
    )
    return accuracy(predict_logits(student, data.test), data.test.y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, nargs="+", default=[5, 20])
    args = parser.parse_args()
    start = time.perf_counter()
    data = load_data("digits")
    teachers = {"cnn": default_teacher(data)[0].eval(), "mlp": mlp_teacher(data)}
    header = f"{'student':<18}{'epochs':>7}" + "".join(f"{a:>22}" for a in ARMS)
    for family, teacher in teachers.items():
        logits = predict_logits(teacher, data.train)
        t_acc = accuracy(predict_logits(teacher, data.test), data.test.y)
        print(
            f"\nteacher {teacher.edgekd_arch['family']} width {teacher.edgekd_arch['width']} "
            f"depth {teacher.edgekd_arch['depth']}: test accuracy {t_acc:.4f}"
        )
        print(header)
        print("-" * len(header))
        for width, depth in STUDENTS[family]:
            for epochs in args.epochs:
                cells = []
                for arm in ARMS:
                    accs = [
                        run_arm(data, teacher, logits, family, width, depth, arm, epochs, s)
                        for s in range(args.seeds)
                    ]
                    spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
                    cells.append(f"{statistics.mean(accs):.4f} +- {spread:.4f}")
                name = f"{family} w{width:g} d{depth}"
                print(f"{name:<18}{epochs:>7}" + "".join(f"{c:>22}" for c in cells), flush=True)
    print(
        f"\n{args.seeds} seeds per cell (mean +- sample std of test accuracy, "
        f"{data.test.n} test samples); wall time {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
