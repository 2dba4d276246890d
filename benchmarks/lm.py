"""Does distillation help a small language model here? Scratch (``--alpha 1``: next-token
cross-entropy on the text alone) against each LM method, on the embedded default teacher and
text (``pydoc_data.topics``), at one or two student sizes (evidence, not a test).

Each student trains for the same number of steps from the same initial weights and batch order
(seeded); the teacher's top-k is computed once and its greedy continuations (seqkd) once. Printed
per row: test perplexity, next-token top-1 agreement with the teacher and KL to it on the held-out
blocks, and the training seconds with the load average (times on a shared host are indicative
only; the perplexities are not affected by the load).

    PYTHONPATH=. python benchmarks/lm.py                          # a few minutes on 2 busy cores
    PYTHONPATH=. python benchmarks/lm.py --dims 64 128 --steps 300 --seeds 2
    PYTHONPATH=. python benchmarks/lm.py --seqkd-cache 64   # seqkd's KV cache vs recompute only
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

os.environ.setdefault("EDGEKD_NO_PROGRESS", "1")
# The teacher's greedy continuations (seqkd) now use its KV cache: 64 blocks of 64 tokens took
# 2.65 s against 18.2 s re-reading each prefix (6.9x, identical tokens; load 11.4, 2026-12-02,
# --seqkd-cache 64), so seqkd is in the default rows.
DEFAULT_METHODS = ("scratch", "fkl", "rkl", "gkd", "seqkd")

# (method, alpha): scratch is the labels-only baseline; the methods at their default alphas
ROWS = (("scratch", 1.0), ("fkl", 0.1), ("rkl", 0.1), ("gkd", 0.0), ("seqkd", 0.0))


def rows(methods: list[str]) -> list[tuple[str, float]]:
    """The (method, alpha) rows asked for: ``NAME`` at its row's alpha (:data:`ROWS`), or
    ``NAME:ALPHA`` at that alpha (e.g. ``seqkd:0.5``), in the order given."""
    default = dict(ROWS)
    out = []
    for item in methods:
        name, _, alpha = item.partition(":")
        if name not in default:
            sys.exit(f"unknown method {name!r}: one of {', '.join(default)}")
        out.append((name, float(alpha) if alpha else default[name]))
    return out


def main() -> None:
    import torch

    from edgekd.distill.methods import make_method
    from edgekd.lm.bench import quality
    from edgekd.lm.decode import TorchLM
    from edgekd.lm.default import default_blocks, default_lm_teacher
    from edgekd.lm.sample import teacher_sequences
    from edgekd.lm.student import LMStudent, LMStudentConfig
    from edgekd.lm.topk import teacher_top_k
    from edgekd.lm.train import LMTrainConfig, TeacherSide, train_lm

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", type=int, nargs="+", default=[64])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                   help="rows: NAME (its default alpha) or NAME:ALPHA, e.g. seqkd:0.5")
    p.add_argument("--test-blocks", type=int, default=24)
    p.add_argument("--seqkd-cache", type=int, metavar="BLOCKS", default=0,
                   help="only time the teacher's greedy continuations with and without the KV "
                        "cache on this many training blocks, side by side")
    args = p.parse_args()

    teacher = default_lm_teacher()
    train, val, test = default_blocks(teacher.tokenizer, args.context)
    if args.seqkd_cache:
        seqkd_cache_speedup(teacher.module, train.blocks[: args.seqkd_cache])
        return
    test_blocks = test.blocks[: args.test_blocks]
    start = time.perf_counter()
    top = teacher_top_k(teacher.module, train.blocks, k=32)
    top_s = time.perf_counter() - start
    sequences = None
    if any(name == "seqkd" for name, _ in rows(args.methods)):
        start = time.perf_counter()
        sequences = teacher_sequences(teacher.module, train.blocks)
        seq_s = time.perf_counter() - start
        print(f"teacher greedy continuations: {seq_s:.0f} s")
    side = TeacherSide(top_k=top, live=teacher.module, sequences=sequences)
    t_lm = TorchLM(teacher.module.model)
    t_ppl = quality({"teacher": t_lm}, test_blocks)["teacher"].perplexity
    print(f"teacher: {teacher.params:,} params, test perplexity {t_ppl:.2f}; top-32 {top.source} "
          f"({top_s:.0f} s); {len(train)} training blocks of {args.context} tokens; load "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    print("| student | method | alpha | test ppl | top-1 agreement | KL to teacher | train s |")
    print("|---|---|---|---|---|---|---|")
    for dim in args.dims:
        for name, alpha in rows(args.methods):
            ppls, agrees, kls, secs, params = [], [], [], [], 0
            for seed in range(args.seeds):
                torch.manual_seed(seed)
                config = LMStudentConfig(
                    vocab_size=teacher.output_size, dim=dim, n_layers=args.layers,
                    n_heads=max(1, dim // 32), n_kv_heads=max(1, dim // 64),
                    ffn_hidden=(8 * dim // 3 + 31) // 32 * 32, context=args.context,
                )  # fmt: skip
                student = LMStudent(config)
                params = config.param_count()
                method = None if name == "scratch" else make_method(name, temperature=1.0)
                cfg = LMTrainConfig(steps=args.steps, alpha=alpha, seed=seed, evals=3)
                start = time.perf_counter()
                train_lm(student, train.blocks, val.blocks, cfg, method, side, description=name)
                secs.append(time.perf_counter() - start)
                q = quality({"s": TorchLM(student)}, test_blocks, t_lm)["s"]
                ppls.append(q.perplexity)
                agrees.append(q.top1_agreement)
                kls.append(q.kl_to_teacher)
            print(f"| {params:,} (dim {dim}) | {name} | {alpha:g} | {_mean(ppls)} | "
                  f"{_mean(agrees, 3)} | {_mean(kls, 3)} | {statistics.mean(secs):.0f} "
                  f"(load {os.getloadavg()[0]:.1f}) |", flush=True)


def seqkd_cache_speedup(teacher, blocks: np.ndarray, rounds: int = 2) -> float:
    """Seconds for the teacher's greedy continuations of ``blocks`` with the KV cache and by
    recomputing each prefix, alternated ``rounds`` times (so load drifts hit both alike); checks
    that both give the same tokens and prints the ratio with the load."""
    from edgekd.lm.sample import teacher_sequences

    times: dict[bool, list[float]] = {True: [], False: []}
    outs = {}
    for _ in range(rounds):
        for cached in (True, False):
            start = time.perf_counter()
            outs[cached] = teacher_sequences(teacher, blocks, use_cache=cached)
            times[cached].append(time.perf_counter() - start)
    same = bool((outs[True] == outs[False]).all())
    with_cache, recompute = min(times[True]), min(times[False])
    print(f"teacher greedy continuations of {len(blocks)} blocks of {blocks.shape[1] - 1} tokens: "
          f"KV cache {with_cache:.2f} s, recompute {recompute:.2f} s (best of {rounds}): "
          f"{recompute / with_cache:.1f}x faster with the cache; identical tokens: {same}; "
          f"load {os.getloadavg()[0]:.1f}")
    return recompute / with_cache


def _mean(values: list[float], digits: int = 2) -> str:
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} +- {statistics.stdev(values):.{digits}f}"


if __name__ == "__main__":
    main()
