"""Black-box LM distillation on arithmetic word problems with computed answers (issue 19).

    python benchmarks/lm_blackbox.py [--train 1500] [--test 200] [--steps 1500] [--digits 2]

One table, every row a full ``edgekd distill --task causal-lm --strategy blackbox`` run on the same
prompts, the same student budget and the same number of optimizer steps:

    references        the records' own answers (a teacher that is always right and writes only
                      the number: what a labels-only student learns)
    teacher answers   a teacher that slips on 10% of its sampled answers
    rationales x1     the same teacher asked to reason first (MT-CoT: two tasks per rationale;
                      rationales whose answer disagrees with the reference are dropped)
    rationales x4     four sampled rationales per prompt (Fine-tune-CoT)

The teacher is ``benchmarks/lm_blackbox_teacher.py``, a scripted stand-in for a strong model
behind an API (no model runs here: what is measured is what the student learns from such text).
Accuracy is exact match of the student's greedy answer on held-out problems.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = (
    ("references", "answers", 1, 0.0),
    ("teacher answers", "answers", 1, 0.1),
    ("rationales x1", "rationales", 1, 0.1),
    ("rationales x4", "rationales", 4, 0.1),
)


def write_prompts(path: Path, n: int, digits: int, seed: int, prefix: str) -> Path:
    from edgekd.lm.blackbox.tasks import arithmetic

    rows = [{"id": r.id, "prompt": r.prompt, "answer": r.answer}
            for r in arithmetic(n, digits, seed, prefix)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_one(name, form, samples, error_rate, train, test, args, root: Path) -> dict:
    from edgekd.config import DistillConfig
    from edgekd.lm.blackbox.pipeline import distill_blackbox_lm

    teacher = shlex.join([sys.executable, str(HERE / "lm_blackbox_teacher.py"),
                          "--error-rate", str(error_rate)])  # fmt: skip
    config = DistillConfig(
        task="causal-lm", strategy="blackbox", teacher_cmd=teacher, data=str(train),
        test_data=str(test), blackbox_form=form, samples=samples,
        teacher_temperature=0.7 if error_rate else 0.0, steps=args.steps, context=args.context,
        max_new_tokens=96, out=str(root / name.replace(" ", "-")), seed=args.seed, device="cpu",
    )  # fmt: skip
    start = time.perf_counter()
    report = distill_blackbox_lm(config)
    h = report["held_out"]
    return {
        "run": name, "pairs": report["filtering"]["examples"],
        "dropped": sum(report["filtering"]["form"].values()),
        "params": report["student"]["params"], "accuracy": h["accuracy"],
        "teacher_accuracy": h["teacher_accuracy"], "agreement": h["agreement"],
        "answer_ppl": h["teacher_answer_perplexity"],
        "seconds": time.perf_counter() - start, "gen_s": report["timings_s"]["generation"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1500)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--digits", type=int, default=2)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default=",".join(r[0] for r in RUNS),
                        help="comma-separated subset of the run names")  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("EDGEKD_NO_PROGRESS", "1")
    wanted = set(args.runs.split(","))
    print(f"load before: {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="edgekd-bench-bb-") as tmp:
        root = Path(tmp)
        os.environ.setdefault("EDGEKD_CACHE", str(root / "cache"))
        train = write_prompts(root / "train.jsonl", args.train, args.digits, 1, "tr")
        test = write_prompts(root / "test.jsonl", args.test, args.digits, 2, "te")
        rows = [run_one(*r, train, test, args, root) for r in RUNS if r[0] in wanted]
    print(f"load after: {os.getloadavg()[0]:.1f}")
    print(f"{args.train} training / {args.test} held-out {args.digits}-digit problems, "
          f"{args.steps} steps, seed {args.seed}")  # fmt: skip
    print("| run | training pairs | dropped (disagree) | student params | held-out accuracy "
          "| teacher accuracy | agreement | teacher-answer ppl | wall s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['pairs']} | {r['dropped']} | {r['params']:,} | "
              f"{100 * r['accuracy']:.1f}% | {100 * r['teacher_accuracy']:.1f}% | "
              f"{100 * r['agreement']:.1f}% | {r['answer_ppl']:.2f} | {r['seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
