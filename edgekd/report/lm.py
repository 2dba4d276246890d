"""A causal-LM run's report.md, from its report.json alone (so ``edgekd report`` re-renders it).

The white-box run (``edgekd.lm.pipeline``) writes report.md with :func:`lm_markdown`: the models'
figures, the budget lines, and the teacher's and the students' greedy continuations of the same
prompts side by side (``edgekd.lm.bench.side_by_side``). The decoded texts are stored in
report.json (``continuations``: :func:`continuation_texts`), because a re-render has no tokenizer;
a report written before they were stored shows the token ids. The black-box run's report.md is
``edgekd.lm.blackbox.pipeline.blackbox_markdown``, also a function of report.json alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgekd.lm.bench import side_by_side

_VERDICT = {True: "pass", False: "FAIL", None: "not measured"}


def continuation_texts(tokenizer: Any, prompts: Sequence[Sequence[int]], rows) -> dict[str, Any]:
    """report.json's ``continuations``: the prompts and each model's continuations, decoded."""
    return {"prompts": [tokenizer.decode(p) for p in prompts],
            "texts": {r.name: [tokenizer.decode(c) for c in r.continuations] for r in rows}}


def lm_markdown(report: dict[str, Any]) -> str:
    """report.md of a white-box causal-LM run: the models' figures, the budget lines and the
    continuations side by side.

    >>> lm_markdown(json.loads(Path("runs/lm/report.json").read_text()))  # doctest: +SKIP
    """
    out = [
        f"# edgekd causal-LM run: {report['target']} ({report['verdict']})", "",
        f"Teacher: {report['teacher']['source']} ({report['teacher']['params']:,} params). "
        f"Student: {report['student']['params']:,} params ({report['student']['sizing']}). "
        f"Method: {report['method']['name']} (alpha {report['method']['alpha']:g}).", "",
        "| model | perplexity | top-1 agreement | KL to teacher | ttft ms | decode tokens/s "
        "| size MB |", "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in report["models"]:
        size = "-" if r["size_bytes"] is None else f"{r['size_bytes'] / 2**20:.2f}"
        agree = "-" if r["top1_agreement"] is None else f"{r['top1_agreement']:.3f}"
        kl = "-" if r["kl_to_teacher"] is None else f"{r['kl_to_teacher']:.3f}"
        out.append(f"| {r['name']} | {r['perplexity']:.2f} | {agree} | {kl} | "
                   f"{r['ttft_ms']:.2f} | {r['decode_tokens_per_s']:.1f} | {size} |")  # fmt: skip
    out += ["", "## Budget lines", ""]
    out += [f"- {b['name']}: {num(b['value'])} (limit {b['limit']}{b['unit']}, {b['kind']}): "
            f"{_line_verdict(b)}" for b in report["budget"]]  # fmt: skip
    out += ["", "## Continuations (greedy)", "", _continuations(report), ""]
    return "\n".join(out)


def _line_verdict(line: dict[str, Any]) -> str:
    """The gate's verdict on a budget line and why (a report written before the gate's verdicts
    were stored: the figure against its limit)."""
    if "verdict" not in line:
        return _VERDICT[line["passed"]]
    verdict = "FAIL" if line["verdict"] == "fail" else line["verdict"]
    return f"{verdict} ({line['reason']})" if line.get("reason") else verdict


def _continuations(report: dict[str, Any]) -> str:
    stored = report.get("continuations")
    if stored:
        return side_by_side(stored["prompts"], stored["texts"])
    ids = {m["name"]: [" ".join(map(str, c)) for c in m.get("continuations") or []]
           for m in report["models"]}  # fmt: skip
    prompts = [f"prompt {i + 1} (token ids)" for i in range(max(map(len, ids.values()), default=0))]
    return side_by_side(prompts, ids)


def num(value: float | None) -> str:
    """A figure in three significant digits, '-' when missing."""
    return "-" if value is None else f"{value:.3g}"
