"""A scripted text teacher for ``benchmarks/lm_blackbox.py``, speaking edgekd's command protocol.

    python benchmarks/lm_blackbox_teacher.py [--error-rate P] REQUESTS.jsonl ANSWERS.jsonl

It stands in for a strong model behind an API on the locally generated arithmetic problems of
``edgekd.lm.blackbox.tasks``: asked for reasoning it writes column-by-column working, or splits
tens and ones (each sample takes either way), then an ``Answer:`` line; asked directly it writes
the number. With probability ``--error-rate`` a sample slips (one operand misread by a digit,
carried through to the answer), as a real teacher's sampled rationales sometimes do; at
temperature 0 it slips half as often. No model runs here: the benchmark measures what the
student learns from such text, not the teacher.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from edgekd.lm.blackbox.forms import RATIONALE_INSTRUCTION
from edgekd.lm.blackbox.tasks import operands, worked_rationale


def answer(prompt: str, rng: random.Random, error_rate: float) -> str:
    question = prompt.rsplit("Q: ", 1)[-1].replace(RATIONALE_INSTRUCTION, "").strip()
    a, b, op = operands(question)
    slip = rng.random() < error_rate
    if slip:  # one operand misread by a digit in a random column
        b = max(0, b + rng.choice((-1, 1)) * 10 ** rng.randrange(len(str(b))))
    if RATIONALE_INSTRUCTION in prompt:
        return worked_rationale(a, b, op) if rng.random() < 0.5 else split_rationale(a, b, op)
    return str(a + b if op == "+" else a - b)


def split_rationale(a: int, b: int, op: str) -> str:
    """A second way to the answer (tens and ones apart), so sampled rationales differ."""
    ta, oa, tb, ob = a - a % 10, a % 10, b - b % 10, b % 10
    tens = ta + tb if op == "+" else ta - tb
    ones = oa + ob if op == "+" else oa - ob
    result = a + b if op == "+" else a - b
    return "\n".join([
        f"Split {a} into {ta} and {oa}, and {b} into {tb} and {ob}.",
        f"Tens: {ta} {op} {tb} = {tens}. Ones: {oa} {op} {ob} = {ones}.",
        f"Together: {tens} + {ones} = {result}.",
        f"Answer: {result}",
    ])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--error-rate", type=float, default=0.1)
    parser.add_argument("requests")
    parser.add_argument("answers")
    args = parser.parse_args()
    out = []
    for line in Path(args.requests).read_text().splitlines():
        if not line.strip():
            continue
        request = json.loads(line)
        rng = random.Random(f"{request['seed']}:{request['id']}")
        rate = args.error_rate if request["temperature"] > 0 else args.error_rate / 2
        texts = [answer(request["prompt"], rng, rate) for _ in range(request["n"])]
        out.append(json.dumps({"id": request["id"], "texts": texts}))
    Path(args.answers).write_text("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
