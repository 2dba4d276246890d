"""A language-model training step three ways, side by side in one run: as it was (whole
logits, the top-k view and the cross-entropy by autograd), with the fused top-k scores
(``methods._tokens.top_k_scores``: one softmax, its backward written out) on whole logits, and
with both computed a chunk of tokens at a time (``edgekd.lm.head``), as training now runs it.

The step is ``edgekd.lm.train``'s: 16 blocks of 512 tokens, the next-token CE weighted by alpha
0.1 plus fkl on a cached teacher's top-32 (the default method at scale), for students the scale
run (``benchmarks/lm_scale.py``) sizes at SmolLM's 49,152-entry vocabulary, and one at a 4,096
vocabulary where the logits matter less. The variants alternate, a step each, so a change in
the host's load falls on all; printed are the median seconds per step and the ratio to the
first.

    PYTHONPATH=. python benchmarks/lm_head.py
    PYTHONPATH=. python benchmarks/lm_head.py --steps 3 --batch 4   # a quick look
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from edgekd.distill.methods import make_method
from edgekd.distill.methods._tokens import LOG_FLOOR
from edgekd.lm import train as lm_train
from edgekd.lm.head import WholeLogits
from edgekd.lm.student import LMStudent, LMStudentConfig
from edgekd.lm.topk import TopK
from edgekd.lm.train import LMTrainConfig, TeacherSide, _Run

# (label, config): the scale run's 3.2M student, a 4-layer one, and a small vocabulary
STUDENTS = (
    ("49k vocab, dim 64, 2 layers (3.2M)", dict(vocab_size=49152, dim=64, n_layers=2, n_heads=2,
                                                n_kv_heads=1, ffn_hidden=192)),
    ("49k vocab, dim 192, 4 layers (11M)", dict(vocab_size=49152, dim=192, n_layers=4, n_heads=6,
                                                n_kv_heads=3, ffn_hidden=512)),
    ("4k vocab, dim 192, 4 layers (2.5M)", dict(vocab_size=4096, dim=192, n_layers=4, n_heads=6,
                                                n_kv_heads=3, ffn_hidden=512)),
)  # fmt: skip
TOP_K = 32
VARIANTS = ("autograd", "fused", "chunks")


def top_k(rows: int, context: int, vocab: int) -> TopK:
    rng = np.random.default_rng(0)
    lp = np.log(rng.dirichlet(np.ones(TOP_K + 1), size=(rows, context))).astype(np.float16)
    index = rng.integers(0, vocab, (rows, context, TOP_K)).astype(np.int32)
    return TopK(lp, index)


def autograd_scores(logits, index, labels):
    """The top-k view and the cross-entropy as they were computed before the fused pass: by
    autograd, two log-sum-exps, a scatter and a log-softmax over the vocabulary."""
    logits = logits.float()
    total = torch.logsumexp(logits, dim=-1, keepdim=True)
    top = logits.gather(-1, index) - total
    tail = torch.logsumexp(logits.scatter(-1, index, float("-inf")), -1, keepdim=True) - total
    ce = F.cross_entropy(logits, labels.clamp_min(0), reduction="none") * (labels != -100)
    return torch.cat([top, tail], dim=-1).clamp_min(LOG_FLOOR), ce


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant (after one)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--context", type=int, default=512)
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; load "
          f"{os.getloadavg()[0]:.1f}; {args.batch} x {args.context} tokens a step, fkl alpha 0.1 "
          f"on a top-{TOP_K}")
    print("\n| student | as it was: whole logits, autograd s/step | fused scores | fused, in "
          "chunks (now) | speed-up, now over as it was |\n|---|---|---|---|---|")
    rows = max(args.batch * 2, 32)
    blocks = np.random.default_rng(0).integers(0, 4096, (rows, args.context + 1))
    for label, fields in STUDENTS:
        cfg = LMStudentConfig(**fields, context=args.context)
        side = TeacherSide(top_k=top_k(rows, args.context, cfg.vocab_size))
        config = LMTrainConfig(steps=args.steps + 1, batch_size=args.batch, alpha=0.1)
        runs = {}
        for variant in VARIANTS:
            torch.manual_seed(0)
            model = LMStudent(cfg)
            student = model if variant == "chunks" else WholeLogits(model)
            runs[variant] = _Run(student, make_method("fkl"), side, blocks, None, config, variant)
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        fused = lm_train.top_k_scores
        for _ in range(args.steps + 1):  # the first step of each is a warm-up
            for variant, run in runs.items():
                lm_train.top_k_scores = autograd_scores if variant == "autograd" else fused
                start = time.perf_counter()
                run.one_step()
                times[variant].append(time.perf_counter() - start)
        lm_train.top_k_scores = fused
        med = {v: statistics.median(times[v][1:]) for v in VARIANTS}
        print(f"| {label} | {med['autograd']:.2f} | {med['fused']:.2f} | {med['chunks']:.2f} | "
              f"{med['autograd'] / med['chunks']:.2f}x |", flush=True)
    print(f"\nload after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
