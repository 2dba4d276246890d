"""Students chosen by evidence (issue 16): the family and augmentation the tool picks, against an
exhaustive run of every plausible family.

Cases: MNIST-1D stored ``[N, 40]`` (a conv teacher that adds the channel axis itself) and
``[N, 1, 40]`` (the default 1-D CNN teacher); digits stored ``[N, 64]`` (the default image teacher
behind a reshape to 8x8) and ``[N, 1, 8, 8]``; a token task (3 classes: which group of token ids is
most frequent in a 16-token sequence) with a small Transformer teacher. For each, on the iot
target:

1. ``choose_student`` (what ``distill`` runs): the evidence, each plausible family's largest
   fitting candidate, the trial; its seconds.
2. Every plausible family's candidate distilled with the same recipe (KD, ``--epochs`` given,
   the family's default augmentation; the chosen family at the level the trial chose): test
   accuracy of each, so the exhaustive best is known.
3. The trial's time as a share of (sizing + trial + the chosen student's training).

    PYTHONPATH=. python benchmarks/students.py [--epochs 20] [--cases mnist1d-flat,digits-flat]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import numpy as np
import torch

from edgekd.config import DistillConfig
from edgekd.data import DataBundle, Split, load_data
from edgekd.distill.job import make_job
from edgekd.distill.strategies import run_strategy
from edgekd.sizing import build_candidate
from edgekd.sizing.candidate import SizingRequest
from edgekd.sizing.search import size_family
from edgekd.sizing.trial import Trial, as_student_sees, augment_kind, choose_student
from edgekd.students import View, build_student
from edgekd.targets import load_target
from edgekd.teacher.default import default_teacher
from edgekd.teacher.prepare import Teaching
from edgekd.train.loop import TrainConfig, accuracy, predict_logits, train_student

torch.set_num_threads(1)


def _flat(split: Split) -> Split:
    return Split({"x": split.inputs["x"].reshape(split.n, -1)}, split.y)


def flattened(data: DataBundle) -> DataBundle:
    parts = {k: _flat(getattr(data, k)) for k in ("train", "val", "test")}
    return dataclasses.replace(data, name=data.name + "-flat", input_kind="vector", **parts)


def tokens(seed: int = 0, n: int = 3000, length: int = 16, vocab: int = 48) -> DataBundle:
    """Which of three id groups (0-15, 16-31, 32-47) is most frequent: a bag-of-ids task."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 3, n)
    ids = rng.integers(0, vocab, (n, length))
    extra = rng.random((n, length)) < 0.3  # a third of the positions drawn from the label's group
    ids = np.where(extra, groups[:, None] * 16 + rng.integers(0, 16, (n, length)), ids)
    counts = np.stack([((ids >= 16 * g) & (ids < 16 * (g + 1))).sum(1) for g in range(3)], 1)
    y = counts.argmax(1).astype(np.int64)
    cut = (int(0.7 * n), int(0.85 * n))
    part = [slice(0, cut[0]), slice(cut[0], cut[1]), slice(cut[1], n)]
    splits = [Split({"input_ids": ids[p].astype(np.int64)}, y[p]) for p in part]
    return DataBundle("tokens", *splits, 3, "tokens")


def teacher_for(case: str, data: DataBundle, seed: int) -> torch.nn.Module:
    if case.startswith(("mnist1d", "digits")):
        base = load_data(case.split("-")[0], seed=seed)
        model, _ = default_teacher(base, seed=seed)
        if case.endswith("flat"):  # the user's teacher takes the flat rows and reshapes them
            model = torch.nn.Sequential(View(base.sample_shapes["x"]), model)
        return model.eval()
    torch.manual_seed(seed)
    model = build_student("transformer", (16,), 3, 1.0, 2, vocab_size=48, dropout=0.0)
    train_student(model, data.train, data.val, TrainConfig(epochs=20, lr=3e-3, alpha=1.0))
    return model.eval()


def make_case(case: str, seed: int) -> tuple[DataBundle, Teaching]:
    if case == "tokens":
        data = tokens(seed)
    else:
        data = load_data(case.split("-")[0], seed=seed)
        data = flattened(data) if case.endswith("flat") else data
    teacher = teacher_for(case, data, seed)
    outs = {k: predict_logits(teacher, getattr(data, k)) for k in ("train", "val", "test")}
    params = sum(p.numel() for p in teacher.parameters())
    teaching = Teaching(
        teacher, {}, data, data.num_classes, params, outs["train"], outs["val"], outs["test"]
    )
    return data, teaching


def distil(config, teaching, candidate, level: str, kind: str) -> tuple[float, float]:
    """Test accuracy and seconds of ``candidate`` distilled at ``level`` on the full data."""
    data = dataclasses.replace(teaching.data, input_kind=kind)
    t = dataclasses.replace(teaching, data=data)
    torch.manual_seed(config.seed)
    student = build_candidate(candidate, data)
    start = time.perf_counter()
    job, _ = make_job(dataclasses.replace(config, augment=level), t, student, "offline", "kd")
    trained = run_strategy("offline", job).student
    seconds = time.perf_counter() - start
    return accuracy(predict_logits(trained, data.test), data.test.y), seconds


def run_case(case: str, epochs: int, seed: int) -> dict:
    data, teaching = make_case(case, seed)
    config = DistillConfig(target="iot", epochs=epochs, seed=seed)
    start = time.perf_counter()
    chosen = choose_student(config, load_target("iot"), teaching, data, "kd", "offline")
    choose_s = time.perf_counter() - start
    trial = chosen.trial
    teaching, _ = as_student_sees(teaching, data, chosen)
    helper = Trial(config, teaching, data, "kd", "offline")
    rows = []
    for f in chosen.evidence.families:
        got = [r for r in trial.sized if r[0] == f.family]
        if not got:
            continue  # nothing of this family fits
        if f.family == chosen.chosen.family:
            cand = chosen.chosen
        else:
            request = SizingRequest(load_target("iot"), data, teaching.params, measure_host=False)
            cand = size_family(request, f.family, f.view, top_down=True).chosen
        kind = augment_kind(data.input_kind, data.sample_shapes[data.input_names[0]], f.view)
        picked = f.family == chosen.chosen.family and trial.augment is not None
        level = trial.augment if picked else helper.default_level(f)
        acc, secs = distil(config, teaching, cand, level, kind)
        rows.append((f.family, cand.label, cand.params, level, acc, secs))
    teacher_acc = accuracy(teaching.test_outputs, data.test.y)
    mine = next(r for r in rows if r[0] == chosen.chosen.family)
    best = max(rows, key=lambda r: r[4])
    return {
        "case": case,
        "shape": str(list(data.sample_shapes[data.input_names[0]])),
        "teacher": teacher_acc,
        "picked": f"{mine[1]} ({mine[2]:,}), {mine[3]}",
        "acc": mine[4],
        "best": f"{best[1]} {best[4]:.3f}",
        "gap": best[4] - mine[4],
        "trial_s": trial.seconds,
        "share": trial.seconds / (choose_s + mine[5]),
        "rows": rows,
        "why": trial.family_why + " | " + trial.augment_why,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cases", default="mnist1d-flat,mnist1d,digits-flat,digits,tokens", help="comma list"
    )
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()}")
    results = [run_case(c, args.epochs, args.seed) for c in args.cases.split(",")]
    print(f"load after: {os.getloadavg()}")
    print("| data | shape | teacher | picked (params), augmentation | student | exhaustive best |"
          " gap | trial s | trial share |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['case']} | {r['shape']} | {r['teacher']:.3f} | {r['picked']} | {r['acc']:.3f} "
            f"| {r['best']} | {r['gap'] * 100:+.1f} pt | {r['trial_s']:.1f} | {r['share']:.0%} |"
        )
    for r in results:
        print(f"{r['case']}: {r['why']}")
        for row in r["rows"]:
            print(f"    {row[1]} ({row[2]:,}) {row[3]}: test {row[4]:.3f}, {row[5]:.1f} s")


if __name__ == "__main__":
    main()
