"""Child process for one repeat of an LM's timings: open the ONNX LM and time one greedy
generation after a warm-up one (``edgekd.lm.bench.time_decoding`` with ``runs=1``); print the
time-to-first-token and decode samples as JSON.

Run as ``python -m edgekd.lm._timeprobe SPEC_JSON``; free of torch. Each repeat in a fresh
process samples what differs between processes (memory placement, CPU frequency, neighbours),
which repeats within one process share: the gate compares per-process medians for that reason
(``edgekd.gate.compare``).
"""

from __future__ import annotations

import json
import sys


def main(spec: dict) -> dict:
    from edgekd.lm.bench import open_onnx_lm, time_decoding

    lm = open_onnx_lm(spec["model"], spec.get("threads", 1))
    speed = time_decoding(lm, spec["prompt_tokens"], spec["new_tokens"], 1, spec["vocab_size"],
                          prefills=spec["prefills"])  # fmt: skip
    return {"ttft": speed.ttft_runs[0].to_dict(), "decode": speed.decode_runs[0].to_dict()}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
