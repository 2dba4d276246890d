#!/usr/bin/env bash
# One prepared check of edgekd's GPU paths, for a Linux machine with an NVIDIA GPU: training on
# CUDA (--device cuda, mixed precision), benchmarking on ONNX Runtime's CUDA and TensorRT
# providers and on torch-on-CUDA, and the `gpu`-marked tests. Meant to finish in under 8 minutes
# once the wheels are downloaded; each step also has a time limit (a ceiling for a step that hangs,
# not an estimate). Prints a summary of what ran on which provider, with each step's time.
#
# NOT YET RUN ON A GPU: it was written on a machine without one (no GPU machine was available to
# the session that wrote it), so every figure it prints is yours, measured on your machine; none is
# quoted in README.
#
# Usage, from the repository root:
#   bash benchmarks/gpu_check.sh                 # venv in .venv-gpu, installs from the indexes
#   SKIP_INSTALL=1 VENV=/path/venv bash benchmarks/gpu_check.sh   # a prepared (offline) venv
#   WITH_TENSORRT=0 bash benchmarks/gpu_check.sh  # skip the TensorRT wheels (about 1 GB)
# Output: gpu-check/ (run folder, bench JSON, logs, summary.txt).
set -u -o pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv-gpu}
OUT=${OUT:-gpu-check}
# A CUDA build of torch. README's `pip install torch==2.13.0` is the pin for CPU machines (the CPU
# build, no CUDA wheels); here the same version comes from PyTorch's CUDA index instead:
#   pip install torch==<version> --index-url https://download.pytorch.org/whl/cu<CUDA>
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cu128}
WITH_TENSORRT=${WITH_TENSORRT:-1}
PY="$VENV/bin/python"
EDGEKD="$VENV/bin/edgekd"
mkdir -p "$OUT"
rm -f "$OUT/steps.tsv"
export EDGEKD_NO_PROGRESS=1 EDGEKD_CACHE="$PWD/$OUT/cache"
START=$(date +%s)

# step NAME SECONDS CMD...: run CMD under a time limit, log it, record name/status/seconds.
step() {
    local name=$1 limit=$2
    shift 2
    local t0 rc
    t0=$(date +%s)
    echo "== $name (limit ${limit}s): $*"
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" >>"$OUT/steps.tsv"
    tail -n 5 "$OUT/$name.log"
    return $rc
}

install() {
    python3 -m venv "$VENV" &&
        "$PY" -m pip install -q --upgrade pip &&
        "$PY" -m pip install -q "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX" &&
        "$PY" -m pip install -q -e '.[dev]' &&
        # onnxruntime and onnxruntime-gpu install the same module: keep only the GPU build.
        "$PY" -m pip uninstall -q -y onnxruntime &&
        "$PY" -m pip install -q 'onnxruntime-gpu>=1.20'
}

# TensorRT's libraries for ORT's TensorRT provider (optional: a failure only costs ort_tensorrt).
install_tensorrt() {
    "$PY" -m pip install -q tensorrt-cu12 && "$PY" - <<'EOF'
import os, site, glob
libs = sorted({os.path.dirname(p) for d in site.getsitepackages()
               for p in glob.glob(os.path.join(d, "tensorrt_libs", "libnvinfer.so*"))})
print("\n".join(libs))
EOF
}

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    step install 240 install || { echo "install failed: see $OUT/install.log"; exit 1; }
    if [ "$WITH_TENSORRT" = 1 ]; then
        step tensorrt 90 install_tensorrt || echo "TensorRT libraries not installed"
    fi
fi
# ORT's CUDA and TensorRT providers find cuDNN, cuBLAS and libnvinfer through the loader path:
# the ones torch's CUDA wheels brought (nvidia-*), and TensorRT's.
NV_LIBS=$("$PY" -c 'import glob, os, site; print(":".join(sorted(p for d in site.getsitepackages()
    for p in glob.glob(os.path.join(d, "nvidia", "*", "lib")))))' 2>/dev/null)
TRT_LIBS=$(grep -h '/tensorrt_libs' "$OUT/tensorrt.log" 2>/dev/null | tail -n 1)
export LD_LIBRARY_PATH="${TRT_LIBS:+$TRT_LIBS:}${NV_LIBS:+$NV_LIBS:}${LD_LIBRARY_PATH:-}"

step environment 30 "$PY" - <<'EOF'
import onnxruntime as ort
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
print("onnxruntime", ort.__version__, ort.get_available_providers())
EOF

# A short distillation on the GPU: the car target (Jetson Orin-class, allows fp16), 5 epochs.
RUN="$OUT/run"
step distill 120 "$EDGEKD" distill --target car --device cuda --epochs 5 --teacher-epochs 5 \
    --bench-seconds 0.3 --bench-processes 1 --out "$RUN" --overwrite --json
# The student on each GPU runtime, and on the CPU for comparison (same run, same data).
# One process per runtime: TensorRT builds its engine in each (seconds to tens of seconds).
step bench_onnx 90 "$EDGEKD" bench "$RUN/student.onnx" --target car --data digits \
    --runtime ort_cpu --runtime ort_cuda --runtime ort_tensorrt --processes 1 --min-time 0.25 \
    --out "$OUT/bench-onnx.json"
step bench_torch 45 "$EDGEKD" bench "$RUN/student.safetensors" --target car --data digits \
    --runtime torch_cpu --runtime torch_cuda --processes 1 --min-time 0.25 \
    --out "$OUT/bench-torch.json"
# A language model on the GPU: the embedded default (white-box, teacher trained once on
# pydoc_data.topics), then the black-box path on arithmetic prompts with the scripted teacher.
step lm_whitebox 150 "$EDGEKD" distill --task causal-lm --target mobile --device cuda \
    --out "$OUT/lm" --overwrite --json
"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
from edgekd.lm.blackbox.tasks import arithmetic
out = Path(sys.argv[1])
for name, n, seed in (("prompts.jsonl", 400, 1), ("held_out.jsonl", 50, 2)):
    rows = arithmetic(n, 2, seed, name[:2])
    (out / name).write_text("".join(json.dumps({"prompt": r.prompt, "answer": r.answer}) + "\n"
                                    for r in rows))
EOF
step lm_blackbox 150 "$EDGEKD" distill --task causal-lm --strategy blackbox --device cuda \
    --teacher-cmd "$PY benchmarks/lm_blackbox_teacher.py" --data "$OUT/prompts.jsonl" \
    --test-data "$OUT/held_out.jsonl" --blackbox-form rationales --steps 300 \
    --out "$OUT/lm-blackbox" --overwrite --json
step gpu_tests 90 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests

"$PY" - "$OUT" "$(($(date +%s) - START))" <<'EOF' | tee "$OUT/summary.txt"
import json, sys
from pathlib import Path

out, total = Path(sys.argv[1]), sys.argv[2]
print(f"\nedgekd GPU check: {total} s in all")
for line in (out / "steps.tsv").read_text().splitlines():
    name, rc, seconds = line.split("\t")
    print(f"  {name:12} {'ok' if rc == '0' else f'FAILED (exit {rc})':18} {seconds:>4} s")
report = out / "run" / "report.json"
if report.is_file():
    t = json.loads(report.read_text())["training"]
    peak = t.get("peak_device_memory_bytes")
    memory = f"{peak / 2**20:.1f} MiB" if peak else "n/a"
    print(f"training: {t.get('device')} ({t.get('device_name')}), precision {t.get('precision')}, "
          f"peak device memory {memory}, {len(t['history']['loss'])} epochs")
for name in ("lm", "lm-blackbox"):
    path = out / name / "report.json"
    if path.is_file():
        r = json.loads(path.read_text())
        t = r["training"]
        rows = {m["name"]: m for m in r["models"]}
        s = rows.get("student", {})
        print(f"{name}: best step {t.get('best_step')}, student perplexity "
              f"{s.get('perplexity')}, {s.get('decode_tokens_per_s')} tokens/s (ONNX Runtime CPU)")
tests = out / "gpu_tests.log"
if tests.is_file():
    marks = "".join(ln.split(" [")[0] for ln in tests.read_text().splitlines() if "%]" in ln)
    print(f"gpu tests: {marks.count('.')} passed, {marks.count('F')} failed, "
          f"{marks.count('E')} errors, {marks.count('s')} skipped (log: {tests})")
for name in ("bench-onnx.json", "bench-torch.json"):
    path = out / name
    if not path.is_file():
        continue
    bench = json.loads(path.read_text())
    for m in bench["models"]:
        print(f"  {m['runtime']:13} ran on {m['provider']} ({m['device']}): "
              f"p50 {m['latency_ms']['p50']:.4f} ms, accuracy {m['accuracy']}")
    for w in bench.get("warnings", []):
        print(f"  warning: {w}")
EOF
