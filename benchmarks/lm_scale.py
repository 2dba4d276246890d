"""Does the default causal-LM run fit the issue's scale target? "With a ~135M-parameter
pretrained teacher and about 10,000 short documents, the default run must finish within 40
minutes on 2 CPU cores (teacher outputs computed once, top-k cached)."

Nothing can be downloaded, so the teacher has SmolLM-135M's shape (``LlamaConfig``: hidden 576,
30 layers, 9 heads, 3 kv heads, intermediate 1536, vocabulary 49,152, tied embeddings) with random
weights: the cost of every stage depends on the shape, not on what the weights know. Its
tokenizer is a byte-level BPE trained here on the standard library's docstrings (read with
``ast``, nothing imported), smaller than the model's 49,152 outputs, as padded checkpoints are
(``edgekd.lm.data.check_vocabulary`` accepts a wider output). The documents are docstring
paragraphs and ``pydoc_data.topics`` lines of 40-400 characters.

The run is the default command, on a cold cache (a fresh ``EDGEKD_CACHE``):

    edgekd distill --task causal-lm --teacher FOLDER --data docs.txt --target mobile

Printed: per-stage seconds (the report's ``timings_s`` and, from the time each status line
arrived on stderr, the teacher top-k pass), the run's peak RSS (the child's ``ru_maxrss``) and the
load average before and after; which limit chose the student (``edgekd.lm.affordable``: the
device budget, half the teacher, or what training affords) and training's estimated seconds
against the measured ones (and the steps sizing timed to check its estimate); a shared host's
times are indicative only.

    PYTHONPATH=. python benchmarks/lm_scale.py --docs 1000      # a reduced run, for stage rates
    PYTHONPATH=. python benchmarks/lm_scale.py --docs 1000 -- --steps 100 --time-budget 480
    PYTHONPATH=. python benchmarks/lm_scale.py                  # the full 10,000 documents
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import resource
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

# SmolLM-135M's config.json (HuggingFaceTB/SmolLM-135M), written out here: nothing is downloaded
SMOLLM_135M = dict(
    hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
    num_key_value_heads=3, vocab_size=49152, max_position_embeddings=2048,
    tie_word_embeddings=True, rms_norm_eps=1e-5, rope_theta=10000.0,
)  # fmt: skip
TOKENIZER_VOCAB = 16384  # what the docstrings support; the model's table stays 49,152 wide


def stdlib_paragraphs(limit: int, low: int = 40, high: int = 400) -> list[str]:
    """Up to ``limit`` short documents: docstring paragraphs of the standard library's sources
    (parsed, not imported) and the lines of ``pydoc_data.topics``, in a fixed order."""
    from pydoc_data.topics import topics

    docs: list[str] = []
    seen: set[str] = set()

    def add(text: str) -> None:
        para = " ".join(text.split())
        if low <= len(para) <= high and para not in seen:
            seen.add(para)
            docs.append(para)

    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if "test" in path.parts or "site-packages" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                for para in (ast.get_docstring(node) or "").split("\n\n"):
                    add(para)
        if len(docs) >= limit:
            return docs[:limit]
    for key in sorted(topics):
        for line in topics[key].splitlines():
            add(line)
    return docs[:limit]


def build_teacher(folder: Path, docs: list[str], seed: int = 0) -> Path:
    """A random-weight SmolLM-135M-shaped Llama with a locally trained tokenizer, saved as a
    Hugging Face folder (safetensors); reused when it is already there."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from edgekd.lm.default import EOS, train_tokenizer
    from edgekd.lm.teacher import save_hf_quietly

    raw = train_tokenizer(docs, TOKENIZER_VOCAB)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=EOS)
    eos = tok.convert_tokens_to_ids(EOS)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**SMOLLM_135M, bos_token_id=eos, eos_token_id=eos))
    folder.mkdir(parents=True, exist_ok=True)
    save_hf_quietly(model, folder)
    tok.save_pretrained(folder)
    return folder


def run_distill(teacher: Path, data: Path, out: Path, extra: list[str]) -> dict:
    """The default command on a cold cache; the report, the seconds at which each stderr line
    arrived, the child's peak RSS (MiB) and the wall time."""
    # progress on: status lines and the bars' final states (elapsed times) are the stage clock
    env = {**os.environ,
           "EDGEKD_CACHE": tempfile.mkdtemp(prefix="edgekd-cold-cache-")}  # fmt: skip
    cmd = [sys.executable, "-m", "edgekd", "distill", "--task", "causal-lm", "--teacher",
           str(teacher), "--data", str(data), "--target", "mobile", "--out", str(out),
           "--overwrite", *extra]  # fmt: skip
    start = time.perf_counter()
    lines: list[tuple[float, float, str]] = []  # (wall s, the child's CPU s, the line)
    with subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True) as proc:
        for line in proc.stderr:
            lines.append((time.perf_counter() - start, cpu_seconds(proc.pid), line.rstrip()))
            print(f"  [{lines[-1][0]:7.1f} s wall, {lines[-1][1]:7.1f} s CPU] {line.rstrip()}",
                  file=sys.stderr, flush=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"edgekd distill failed (exit {proc.returncode})")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = json.loads((out / "report.json").read_text())
    return {"report": report, "lines": lines, "peak_rss_mb": usage.ru_maxrss / 1024,
            "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime}  # fmt: skip


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process has used so far (Linux /proc), all threads:
    on a loaded host this, not the wall time, is what a stage would cost on idle cores."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def arrival(lines: list[tuple[float, float, str]], prefix: str) -> tuple[float, float] | None:
    """(wall s, CPU s) when the last line starting with ``prefix`` arrived: a stage's progress
    bar prints a line every 30 s on a pipe, and its final state when the stage ends."""
    return next(((w, c) for w, c, line in reversed(lines) if line.strip().startswith(prefix)),
                None)  # fmt: skip


# (what has happened by then, the start of the stderr line that says so)
STAGE_LINES = (
    ("teacher loaded, text tokenized, teacher top-k pass", "teacher top-"),
    ("student sized", "the largest"),
    ("student trained", "distill"),
    ("exported and quantized", "quantization:"),
    ("teacher exported to ONNX (or not)", "teacher in ONNX:"),
)


def print_sizing(rep: dict) -> None:
    """Which limit chose the student, and training's estimate (edgekd.lm.affordable) against
    the measured training stage (the report's "distill" lap: steps, evaluations, the thread
    trial if training made one)."""
    limits = rep["student"].get("sizing_limits") or {}
    print(f"\nsizing: {rep['student']['sizing']}")
    for r in limits.get("calibration") or []:  # the chosen students' own steps, timed
        print(f"timed: {r['params']:,} params (dim {r['dim']}, {r['layers']} layers) "
              f"{r['measured_step_s']:.2f} s a step against {r['estimated_step_s']:.2f} s "
              "estimated")
    est = limits.get("training")
    if est:
        history = rep["training"]
        steps = history["eval_steps"][-1] if history["eval_steps"] else 0
        took = rep["timings_s"]["distill"]
        print(f"training: estimated {est['estimate_s']:.0f} s for {est['steps']} steps at "
              f"{est['throughput']['flops_per_s'] / 1e9:.1f} GFLOP/s; measured {took:.0f} s "
              f"for {steps} steps ({history['stopped'] or 'not stopped by the clock'}): "
              f"{took / max(steps, 1) / (est['estimate_s'] / est['steps']):.2f} x the estimate "
              "per step")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", type=int, default=10_000)
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "edgekd-lm-scale")
    p.add_argument("extra", nargs="*", help="more edgekd distill options, after --")
    args = p.parse_args()

    load_before = os.getloadavg()
    docs = stdlib_paragraphs(max(args.docs, 10_000))
    start = time.perf_counter()
    teacher = build_teacher(args.work / "teacher-smollm135m-shape", docs)
    print(f"teacher folder ready in {time.perf_counter() - start:.0f} s: {teacher}")
    data = args.work / f"docs-{args.docs}.txt"
    data.write_text("\n".join(docs[: args.docs]) + "\n", encoding="utf-8")
    print(f"{min(args.docs, len(docs))} documents ({sum(map(len, docs[: args.docs])):,} "
          f"characters); load {load_before[0]:.1f}", flush=True)
    got = run_distill(teacher, data, args.work / f"run-{args.docs}", args.extra)
    rep, lines = got["report"], got["lines"]
    print("\n| from the start to this line | wall s | CPU s |\n|---|---|---|")
    for label, prefix in STAGE_LINES:
        at = arrival(lines, prefix)
        if at is not None:
            print(f"| {label} | {at[0]:.0f} | {at[1]:.0f} |")
    print(f"| end of the run | {got['wall_s']:.0f} | {got['cpu_s']:.0f} |")
    print("\nreport timings_s: " + ", ".join(f"{k} {v:.0f} s" for k, v in rep["timings_s"].items()))
    print_sizing(rep)
    train = rep["data"]["train"]
    print(f"\nblocks: {train}; student {rep['student']['params']:,} params; teacher "
          f"{rep['teacher']['params']:,}; peak RSS {got['peak_rss_mb']:.0f} MiB; load before "
          f"{load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}; verdict {rep['verdict']}")


if __name__ == "__main__":
    main()
