"""An LM student's quantized variants side by side: file size, decode tokens/s and time to first
token at batch 1, peak memory at the context, and agreement with the fp32 model (evidence, not a
test).

One student (random weights: this measures the device side only; quality against a teacher is
the pipeline's business) is exported with its KV cache (``edgekd.lm.export``), quantized to
weight-only int8 and int4 (``MatMulNBits``) and to dynamic int8 (``edgekd.lm.quantize``), and each
variant is timed in this one process, interleaved over ``--rounds`` rounds so that a burst of
load on a shared host hits every variant alike; the median over rounds is printed, with the load
average. Agreement and KL are against the fp32 ONNX model on random held-out blocks.

    PYTHONPATH=. python benchmarks/lm_quant.py                    # ~1-2 min on 2 busy cores
    PYTHONPATH=. python benchmarks/lm_quant.py --dim 384 --layers 8 --vocab 16000
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("EDGEKD_NO_PROGRESS", "1")


def main() -> None:
    import torch

    from edgekd.lm.bench import open_onnx_lm, peak_memory_mb, quality, time_decoding
    from edgekd.lm.export import export_lm
    from edgekd.lm.quantize import LMQuantConfig, quantize_lm
    from edgekd.lm.student import LMStudent, LMStudentConfig

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    torch.manual_seed(0)
    heads = max(1, args.dim // 64)
    config = LMStudentConfig(vocab_size=args.vocab, dim=args.dim, n_layers=args.layers,
                             n_heads=heads, n_kv_heads=max(1, heads // 2),
                             ffn_hidden=round(8 * args.dim / 3 / 32) * 32, context=args.context)
    model = LMStudent(config).eval()
    with tempfile.TemporaryDirectory() as work:
        fp32 = Path(work) / "student.onnx"
        export_lm(model, fp32, [[1, 2, 3]], new_tokens=4)
        paths = {"fp32": fp32}
        for q in (LMQuantConfig("int8"), LMQuantConfig("int4"), LMQuantConfig("dynamic_int8")):
            paths[q.name] = quantize_lm(fp32, q, Path(work) / f"student-{q.name}.onnx")
        lms = {name: open_onnx_lm(path, args.threads) for name, path in paths.items()}
        blocks = np.random.default_rng(1).integers(0, args.vocab, (4, 65))
        scores = quality(lms, blocks, teacher=lms["fp32"])
        tps = {name: [] for name in lms}
        ttft = {name: [] for name in lms}
        for _ in range(args.rounds):
            for name, lm in lms.items():
                speed = time_decoding(lm, args.prompt, args.new_tokens, 1, args.vocab)
                tps[name].append(speed.decode_tokens_per_s)
                ttft[name].append(speed.ttft_ms)
        memory = {n: peak_memory_mb(p, args.context, args.threads) for n, p in paths.items()}
        print(f"student: {config.param_count():,} params (dim {args.dim}, {args.layers} layers, "
              f"vocab {args.vocab}); prompt {args.prompt}, context {args.context}, "
              f"{args.threads} thread(s); load average {os.getloadavg()[0]:.1f}")
        print("| variant | file MB | decode tokens/s | ttft ms | peak MB | top-1 vs fp32 | "
              "KL vs fp32 |")
        print("|---|---|---|---|---|---|---|")
        base = statistics.median(tps["fp32"])
        for name, path in paths.items():
            rate = statistics.median(tps[name])
            print(f"| {name} | {path.stat().st_size / 2**20:.1f} | {rate:.0f} "
                  f"({rate / base:.2f}x) | {statistics.median(ttft[name]):.1f} | "
                  f"{memory[name]:.0f} | {scores[name].top1_agreement:.3f} | "
                  f"{scores[name].kl_to_teacher:.4f} |")


if __name__ == "__main__":
    main()
