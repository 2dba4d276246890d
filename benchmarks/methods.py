"""Every distillation method against training the same student from scratch (evidence, not a test).

For each data set (digits, MNIST-1D) the default teacher is trained once (cached), then the same
small student is trained from scratch and with each registered method (offline strategy, each
method's own default alpha and weight), over several seeds (student initialisation and shuffling;
the data split and the teacher stay fixed). Printed per method: mean +- std test accuracy, test
errors, the share of the teacher-minus-scratch gap that distillation closes, and a paired t-test
against scratch over the seeds.

Reference point: Hinton et al. 2015 (section 3) closed 91% of that gap on MNIST: a small net
made 146 test errors alone and 74 distilled, the teacher 67.

    PYTHONPATH=. python benchmarks/methods.py          # 4.5 min on 2 busy cores (3 seeds)
    PYTHONPATH=. python benchmarks/methods.py --seeds 5 --strategies --json results.json  # ~15 min
    PYTHONPATH=. python benchmarks/methods.py --data mnist1d --student mnist1d=cnn1d:1:2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

os.environ.setdefault("EDGEKD_NO_PROGRESS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402

from edgekd.data import load_data  # noqa: E402
from edgekd.distill.methods import all_methods, get_method  # noqa: E402
from edgekd.distill.strategies import DistillJob, StrategyOptions, run_strategy  # noqa: E402
from edgekd.students import build_student, count_params  # noqa: E402
from edgekd.teacher.default import DEFAULT_TEACHERS, default_teacher  # noqa: E402
from edgekd.train.loop import TrainConfig, accuracy, predict_logits, train_student  # noqa: E402

# The student per data set: (family, width, depth), a few thousand parameters.
STUDENTS = {"digits": ("cnn", 0.5, 2), "mnist1d": ("cnn1d", 0.5, 2)}
# Extra rows with --strategies: (label, strategy, method, method options, strategy options).
# Online rows use DML's own loss: CE + KL at T = 1, equal weights (kd, T = 1, alpha = 0.5).
DML = {"temperature": 1.0, "alpha": 0.5}
STRATEGY_ROWS = (
    ("online DML (peer: teacher)", "online", "kd", DML, {"peer": "teacher"}),
    ("online DML (peer: student)", "online", "kd", DML, {"peer": "student"}),
    ("kd, assistant", "assistant", "kd", {}, {}),
    ("kd, + 5 fine-tune epochs", "offline", "kd", {}, {"finetune_epochs": 5}),
)


def student_for(data, seed: int) -> torch.nn.Module:
    family, width, depth = STUDENTS[data.name]
    torch.manual_seed(seed)
    return build_student(family, data.sample_shapes["x"], data.num_classes, width, depth)


def test_accuracy(model, data) -> float:
    return accuracy(predict_logits(model, data.test), data.test.y)


def scratch(data, seed: int, epochs: int) -> float:
    model = student_for(data, seed)
    train_student(model, data.train, data.val, TrainConfig(epochs=epochs, alpha=1.0, seed=seed))
    return test_accuracy(model, data)


def distilled(data, teacher, seed, epochs, strategy, method, method_options, options) -> float:
    method_options = dict(method_options)
    alpha = method_options.pop("alpha", get_method(method).default_alpha)
    config = TrainConfig(epochs=epochs, alpha=alpha, seed=seed)
    student = student_for(data, seed)
    job = DistillJob(
        teacher, student, data, config, method, method_options, StrategyOptions(**options)
    )
    return test_accuracy(run_strategy(strategy, job).student, data)


def gap_closed(acc: float, scratch_acc: float, teacher_acc: float) -> float:
    gap = teacher_acc - scratch_acc
    return (acc - scratch_acc) / gap if gap > 0 else math.nan


def bench_data(name: str, args) -> dict:
    data = load_data(name, seed=0)
    start = time.perf_counter()
    teacher, info = default_teacher(data, seed=0)
    teacher_acc = test_accuracy(teacher, data)
    family, width, depth = STUDENTS[name]
    header = {
        "data": name,
        "train/val/test": [data.train.n, data.val.n, data.test.n],
        "teacher": f"{'/'.join(map(str, DEFAULT_TEACHERS[data.input_kind]))} "
        f"({count_params(teacher):,} params, {info.source})",
        "teacher_test_accuracy": teacher_acc,
        "student": f"{family} width {width} depth {depth} "
        f"({count_params(student_for(data, 0)):,} params)",
        "epochs": args.epochs,
        "seeds": list(range(args.seeds)),
    }
    rows = [("scratch", None, None, {}, {})]
    rows += [(m, "offline", m, {}, {}) for m in args.methods]
    rows += list(STRATEGY_ROWS) if args.strategies else []
    results = {}
    for label, strategy, method, method_options, options in rows:
        accs = []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            if strategy is None:
                accs.append(scratch(data, seed, args.epochs))
            else:
                accs.append(
                    distilled(
                        data, teacher, seed, args.epochs, strategy, method, method_options, options
                    )
                )
            print(
                f"  {name} {label} seed {seed}: {accs[-1]:.4f} ({time.perf_counter() - t0:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
        results[label] = accs
    header["seconds"] = round(time.perf_counter() - start, 1)
    return {"settings": header, "accuracy": results}


def print_table(result: dict) -> None:
    s, acc = result["settings"], result["accuracy"]
    n_test = s["train/val/test"][2]
    t_acc = s["teacher_test_accuracy"]
    base = np.array(acc["scratch"])
    print(f"\n## {s['data']}  (train/val/test {s['train/val/test']}, {s['seconds']} s)")
    print(
        f"teacher: {s['teacher']}, test accuracy {t_acc:.2%} ({round((1 - t_acc) * n_test)} errors)"
    )
    print(f"student: {s['student']}; {s['epochs']} epochs; seeds {s['seeds']}\n")
    print("| method | test accuracy (mean +- std) | test errors | gap closed | p vs scratch |")
    print("|---|---|---|---|---|")
    for label, values in acc.items():
        a = np.array(values)
        errors = (1 - a.mean()) * n_test
        if label == "scratch":
            closed, p = "0% (baseline)", "-"
        else:
            closed = f"{gap_closed(a.mean(), base.mean(), t_acc):.0%}"
            p = (
                f"{stats.ttest_rel(a, base).pvalue:.2f}"
                if len(a) > 1 and np.any(a != base)
                else "-"
            )
        std = a.std(ddof=1) if len(a) > 1 else 0.0
        print(f"| {label} | {a.mean():.2%} +- {std:.2%} | {errors:.1f} | {closed} | {p} |")


def main() -> None:
    methods = sorted(all_methods())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--data", default="digits,mnist1d")
    parser.add_argument("--methods", default=",".join(methods))
    parser.add_argument(
        "--strategies", action="store_true", help="add online, assistant, fine-tune rows"
    )
    parser.add_argument(
        "--student",
        action="append",
        default=[],
        metavar="DATA=FAMILY:WIDTH:DEPTH",
        help="another student for a data set, e.g. mnist1d=mlp:2:2 (repeatable)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the raw accuracies here")
    args = parser.parse_args()
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = set(args.methods) - set(methods)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)} (known: {', '.join(methods)})")
    for item in args.student:
        try:
            name, spec = item.split("=")
            family, width, depth = spec.split(":")
            STUDENTS[name] = (family, float(width), int(depth))
        except ValueError:
            parser.error(f"--student {item!r}: expected DATA=FAMILY:WIDTH:DEPTH")
    torch.set_num_threads(args.threads)
    print(
        f"settings: seeds {args.seeds}, epochs {args.epochs}, data {args.data}, methods "
        f"{', '.join(args.methods)}, strategies {'yes' if args.strategies else 'no'}, "
        f"threads {args.threads}, torch {torch.__version__}; each method at its default alpha "
        "and weight (`edgekd methods`), T = 4, offline strategy",
        flush=True,
    )
    out = [bench_data(name, args) for name in args.data.split(",")]
    for result in out:
        print_table(result)
    print(
        "\nHinton et al. 2015 (MNIST): 146 -> 74 test errors, teacher 67: "
        f"{(146 - 74) / (146 - 67):.0%} of the gap closed."
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
