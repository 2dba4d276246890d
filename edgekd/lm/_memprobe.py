"""Child process for an LM's peak memory: open the ONNX LM, fill its KV cache to the context
length (a prefill of all but one position, then one decode step), print peak RSS in MiB.

Run as ``python -m edgekd.lm._memprobe SPEC_JSON``; free of torch so the figure is the runtime's
and the model's alone.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def main(spec: dict) -> float:
    from edgekd.bench._memprobe import _peak_rss_mb
    from edgekd.lm.bench import open_onnx_lm

    lm = open_onnx_lm(spec["model"], spec.get("threads", 1))
    context = max(2, int(spec["context_tokens"]))
    prompt = np.zeros((1, context - 1), dtype=np.int64)
    logits, cache = lm.step(prompt, lm.empty_cache())
    lm.step(np.array([[int(logits[0, -1].argmax())]], dtype=np.int64), cache)
    return _peak_rss_mb()


if __name__ == "__main__":
    print(json.dumps({"peak_rss_mb": main(json.loads(sys.argv[1]))}))
