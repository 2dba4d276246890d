"""``edgekd gate LM_REPORT --baseline BASE_REPORT``: a causal-LM student against a baseline's.

Regression lines, each of the ``student`` rows of both reports:

- ``decode_regression``, ``ttft_regression`` (latency): the per-token decode time and the time to
  first token, compared with the classifier gate's statistics (``compare_processes``: a
  regression past ``threshold`` that is significant across runs AND across samples fails; a
  noisy one is INCONCLUSIVE). Decode tokens/s is 1000 / decode ms, so its regression is this one.
  The LM benchmark's unit is a run: a fresh process for an ONNX model, a repeat within one
  process for a PyTorch one (``edgekd.lm.bench``; the line's detail says which). An undecided
  line is measured again within ``--max-seconds``, in more probe processes of both students
  where their files are here (``edgekd.gate.lm_remeasure``), rounds back to back also compared
  as pairs, as the classifier's ``latency_regression``.
- ``perplexity_regression``: current / baseline perplexity - 1 at most ``perplexity_tolerance``
  (0.02: 2% higher). Perplexity on the same held-out blocks is deterministic, so the figures are
  compared directly; reports measured on different held-out text are INCONCLUSIVE.
- ``agreement_regression``: baseline - current next-token top-1 agreement with the teacher at
  most ``agreement_tolerance`` (0.01: one point), as the classifier's ``accuracy_regression``.
- ``size_regression``: current / baseline file size at most 1 + ``threshold``, exact bytes.

A classifier report on one side and a causal-LM report on the other is refused (``lm_pair``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekd.errors import BadInputError
from edgekd.gate.checks import Verdict
from edgekd.gate.inputs import lm_report, read_json_object
from edgekd.gate.lines import (  # the classifier lines' direct comparison and latency regression
    GateLine,
    _at_most,
    _latency_regression,
)
from edgekd.gate.lm_remeasure import FIGURES, LMSettler, run_unit, student_row

REGRESSION_LINES = ("decode_regression", "ttft_regression", "perplexity_regression",
                    "agreement_regression", "size_regression")  # fmt: skip
DEFAULT_PERPLEXITY_TOLERANCE = 0.02
_LATENCY = {"decode_regression": ("decode", "decode time per token"),
            "ttft_regression": ("ttft", "time to first token")}  # fmt: skip


def lm_pair(report: Any, baseline: Any) -> tuple[dict | None, dict | None]:
    """(report, baseline) as causal-LM report JSON, (None, None) when neither is one; a
    causal-LM report with a classifier baseline (or the reverse) is refused in one line."""
    current = lm_report(report)
    if baseline is None:
        return current, None
    base = lm_report(baseline)
    if current is None and base is None:
        return None, None
    if current is not None and base is not None:
        return current, base
    # The side that is not a causal-LM report is read again, for the error that names what is
    # wrong with it (missing, not JSON), before the two are called different kinds.
    other = baseline if base is None else report
    if isinstance(other, str | Path):
        read_json_object(other)
    kinds = ("a causal-LM report", "a classifier report")
    kinds = kinds if base is None else kinds[::-1]
    raise BadInputError(
        f"gate --baseline: {_name(report)} is {kinds[0]} and {_name(baseline)} is {kinds[1]}: "
        "a regression check compares two reports of the same kind"
    )


def _name(report: Any) -> str:
    return str(report) if isinstance(report, str | Path) else "the report given in memory"


def regression_lines(
    data: dict[str, Any],
    where: str,
    base: dict[str, Any],
    base_where: str,
    threshold: float,
    alpha: float,
    agreement_tolerance: float,
    perplexity_tolerance: float = DEFAULT_PERPLEXITY_TOLERANCE,
    any_host: bool = False,
    settle: LMSettler | None = None,
) -> tuple[list[GateLine], list[str]]:
    """The student's regression lines against ``base``'s student, and notes; ``settle`` decides
    the latency lines (default: once, on the stored runs)."""
    cur, old = student_row(data), student_row(base)
    if old is None:
        return [], [f"{base_where}: no 'student' row in field 'models': no regression check"]
    for row, at in ((cur, where), (old, base_where)):
        _check_figures(row, at)
    differs = _measured_differently(cur, old, data, base, any_host)
    settle = settle or LMSettler(data, where, base, base_where)
    lines = [_latency(name, settle, differs, threshold, alpha) for name in _LATENCY]
    lines += [_perplexity(cur, old, data, base, perplexity_tolerance),
              _agreement(cur, old, agreement_tolerance), _size(cur, old, threshold)]  # fmt: skip
    return lines, []


def _check_figures(row: dict[str, Any], where: str) -> None:
    """The figures compared directly: each a finite number (> 0 but agreement) or absent."""
    for key in ("perplexity", "top1_agreement", "size_bytes"):
        value = row.get(key)
        if value is None:
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value < 0 or (
                value == 0 and key != "top1_agreement"):  # fmt: skip
            raise BadInputError(f"{where}: field 'models[student].{key}' must be a finite "
                                f"number{'' if key == 'top1_agreement' else ' > 0'}, got "
                                f"{value!r}")  # fmt: skip


def _maker(name: str, limit: float, unit: str, detail: str) -> Callable[..., GateLine]:
    def make(verdict: Verdict, value: float | None, reason: str) -> GateLine:
        return GateLine(name=name, value=None if value is None else float(value),
                        limit=float(limit), unit=unit, kind="regression", model="student",
                        verdict=verdict, detail=detail, reason=reason)  # fmt: skip

    return make


def _measured_differently(cur, old, data, base, any_host: bool) -> str:
    differs = [f"{what} {cur.get(key)} vs the baseline's {old.get(key)}"
               for what, key in (("format", "format"), ("prompt tokens", "prompt_tokens"))
               if cur.get(key) != old.get(key)]  # fmt: skip
    cpu = (data.get("host") or {}).get("cpu_model")
    old_cpu = (base.get("host") or {}).get("cpu_model")
    if cpu != old_cpu and not any_host:
        differs.append(f"CPU {cpu!r} vs the baseline's {old_cpu!r} (gate --any-host to compare)")
    return "measured differently: " + "; ".join(differs) if differs else ""


def _latency(name, settle: LMSettler, differs: str, threshold, alpha) -> GateLine:
    figure, what = _LATENCY[name]
    current, baseline = settle.side("current", figure), settle.side("baseline", figure)
    per = run_unit([*current.runs, *baseline.runs])
    detail = f"p50 {what} vs the baseline's student, per-run samples of the LM benchmark ({per})"
    make = _maker(name, 1.0 + threshold, "x", detail)
    if differs:
        return make(Verdict.INCONCLUSIVE, None, differs)
    if not current.runs or not baseline.runs:
        side = "the report" if not current.runs else "the baseline"
        return make(Verdict.INCONCLUSIVE, None,
                    f"{side} keeps no per-run '{FIGURES[figure]}' (written before they were "
                    "stored); re-run the LM benchmark")  # fmt: skip

    def decide(cur, base, pairs=()) -> GateLine:  # the classifier's latency_regression
        return _latency_regression(make, cur, base, threshold, alpha, pairs)

    return settle.regression(decide, figure)


def _perplexity(cur, old, data, base, tolerance: float) -> GateLine:
    make = _maker("perplexity_regression", tolerance, "",
                  "current / baseline perplexity - 1, same held-out text (deterministic)")
    a, b = cur.get("perplexity"), old.get("perplexity")
    if a is None or b is None:
        return make(Verdict.NOT_MEASURED, None, "only one report has a perplexity")
    texts = [(d.get("data") or {}).get("test") for d in (data, base)]
    if None not in texts and texts[0] != texts[1]:
        return make(Verdict.INCONCLUSIVE, None,
                    "the reports measured perplexity on different held-out text")
    return _at_most(make, a / b - 1.0, tolerance, "", "")


def _agreement(cur, old, tolerance: float) -> GateLine:
    make = _maker("agreement_regression", tolerance, "",
                  "baseline - current next-token top-1 agreement with the teacher")
    a, b = cur.get("top1_agreement"), old.get("top1_agreement")
    if a is None or b is None:
        return make(Verdict.NOT_MEASURED, None,
                    "needs the teacher's agreement in both reports (a white-box teacher)")
    return _at_most(make, b - a, tolerance, "", "")


def _size(cur, old, threshold: float) -> GateLine:
    make = _maker("size_regression", 1.0 + threshold, "x",
                  "current / baseline file size of the student, exact bytes")
    a, b = cur.get("size_bytes"), old.get("size_bytes")
    if not a or not b:
        return make(Verdict.NOT_MEASURED, None, "only one report has the student's file size")
    return _at_most(make, a / b, 1.0 + threshold, "x", "")
