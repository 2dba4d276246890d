"""A fake text teacher for the black-box LM tests: ``python fake_text_teacher.py MODE LOG REQ ANS``.

MODE: ``good`` answers every request deterministically (arithmetic prompts are solved; a prompt
asking for reasoning gets worked column arithmetic); ``flaky`` fails each request's first attempt
with an ``error`` line; ``partial`` answers only every other request; ``malformed`` writes lines
that are not JSON; ``crash`` exits 3; ``sleep`` sleeps far past any test timeout. Every request id
received is appended to LOG, so a test can check no prompt was asked twice.
"""

import json
import sys
import time
from pathlib import Path

from edgekd.lm.blackbox.forms import EVOLVE_INSTRUCTION, RATIONALE_INSTRUCTION
from edgekd.lm.blackbox.tasks import operands, worked_rationale


def harder(prompt: str) -> str:
    """An --evolve request: the same question with every number n made 10n + 7."""
    task = prompt.split("Task: ", 1)[1]
    return " ".join(str(10 * int(w) + 7) if w.isdigit() else w for w in task.split(" "))


def solve(prompt: str) -> str:
    if EVOLVE_INSTRUCTION in prompt:
        return harder(prompt)
    question = prompt.rsplit("Q: ", 1)[-1].replace(RATIONALE_INSTRUCTION, "")
    a, b, op = operands(question)
    if RATIONALE_INSTRUCTION in prompt:
        return worked_rationale(a, b, op)
    return str(a + b if op == "+" else a - b)


def main() -> int:
    mode, log, src, dst = sys.argv[1:5]
    requests = [json.loads(line) for line in Path(src).read_text().splitlines() if line]
    seen = set(Path(log).read_text().split()) if Path(log).exists() else set()
    with open(log, "a") as fh:
        fh.write("".join(r["id"] + "\n" for r in requests))
    if mode == "crash":
        print("teacher exploded", file=sys.stderr)
        return 3
    if mode == "sleep":
        time.sleep(60)
    lines = []
    for i, r in enumerate(requests):
        if mode == "malformed":
            lines.append("{not json")
        elif mode == "flaky" and r["id"] not in seen:
            lines.append(json.dumps({"id": r["id"], "error": "rate limited"}))
        elif mode == "partial" and i % 2:
            continue
        else:
            texts = [solve(r["prompt"]) for _ in range(r["n"])]
            lines.append(json.dumps({"id": r["id"], "texts": texts}))
    Path(dst).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
