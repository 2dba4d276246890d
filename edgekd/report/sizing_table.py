"""The sizing search as a table: one row per candidate, for ``edgekd size`` and report.md.

Kept out of ``report/tables.py`` for now: ``tables.py`` imports ``report/markdown.py`` (for
``short_provider``) and ``markdown.py`` shows this table, so one file would tie the two in a
circle.
"""

from __future__ import annotations

from typing import Any

from edgekd.sizing.search import SizingResult

TABLE_COLUMNS = (
    "candidate",
    "params",
    "MACs",
    "size KB",
    "est. ms",
    "int8 KB",
    "est. int8 ms",
    "host ms",
    "est. MB",
    "fits?",
    "breaks",
)


def sizing_rows(result: SizingResult | dict[str, Any]) -> list[list[str]]:
    """One row per candidate, smallest first; the chosen one marked ``*``. Takes the result or
    its ``to_dict()`` (as stored in report.json)."""
    d = result.to_dict() if isinstance(result, SizingResult) else result
    chosen = d["chosen"]["label"]

    def ms(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    rows = []
    for c in d["candidates"]:
        short = " ".join(
            [c["family"]]
            + ([f"w{c['width']:g}"] if c["width"] is not None else [])
            + ([f"d{c['depth']:g}"] if c["depth"] is not None else [])
        )
        rows.append(
            [
                short + (" *" if c["label"] == chosen else ""),
                f"{c['params']:,}",
                f"{c['macs']:,}",
                f"{c['size_kb']:.1f}",
                ms(c["latency_estimate_ms"], ".3f"),
                ms(c["int8_size_kb"], ".1f"),
                ms(c["int8_latency_estimate_ms"], ".3f"),
                ms(c["host_ms"], ".4f"),
                f"{c['peak_memory_mb_estimate']:.1f}",
                "yes" if c["fits"] else "no",
                "; ".join(x["name"] for x in c["lines"] if not x["passed"]),
            ]
        )
    return rows


TRIAL_COLUMNS = ("stage", "candidate", "sees", "params", "augment", "steps", "val agreement")


def trial_rows(result: SizingResult | dict[str, Any]) -> list[list[str]]:
    """One row per trial run (``edgekd.sizing.trial``); none where there was no trial."""
    d = result.to_dict() if isinstance(result, SizingResult) else result
    trial = d.get("trial") or {}
    return [
        [
            r["stage"],
            r["candidate"],
            "as given" if r["view"] is None else "[" + ",".join(map(str, r["view"])) + "]",
            f"{r['params']:,}",
            r["augment"],
            str(r["steps"]),
            f"{r['agreement']:.3f}",
        ]
        for r in trial.get("rows", [])
    ]


def choice_lines(result: SizingResult | dict[str, Any]) -> list[str]:
    """The evidence for the family and what the trial chose, as sentences."""
    d = result.to_dict() if isinstance(result, SizingResult) else result
    evidence, trial = d.get("evidence") or {}, d.get("trial") or {}
    lines = [f"evidence: {x}" for x in evidence.get("evidence", [])]
    if trial.get("sized"):
        each = ", ".join(f"{x['candidate']} ({x['params']:,})" for x in trial["sized"])
        lines.append(f"largest fitting candidate of each plausible family: {each}")
    elif evidence.get("families"):
        names = ", ".join(p["family"] for p in evidence["families"])
        lines.append(f"plausible families: {names}")
    if trial:
        lines.append(f"family: {trial['family_why']}")
        lines.append(f"augmentation: {trial['augment_why']}")
        if trial.get("rows"):
            lines.append(
                f"trial: {len(trial['rows'])} runs of at most {trial['steps_per_run']} steps on "
                f"{trial['train_samples']} training samples, {trial['seconds']:.1f} s"
            )
    return lines


def _choice_markdown(d: dict[str, Any]) -> list[str]:
    lines = ["", "How the family was chosen:", ""] + [f"- {x}" for x in choice_lines(d)]
    rows = trial_rows(d)
    if rows:
        lines += ["", "| " + " | ".join(TRIAL_COLUMNS) + " |", "|" + "---|" * len(TRIAL_COLUMNS)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def sizing_markdown(result: SizingResult | dict[str, Any]) -> str:
    """The search as a Markdown table, with what "est." means under it."""
    d = result.to_dict() if isinstance(result, SizingResult) else result
    lines = [
        "| " + " | ".join(TABLE_COLUMNS) + " |",
        "|" + "---|" * len(TABLE_COLUMNS),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in sizing_rows(d)]
    stop = "; ".join(d.get("stopped_by", [])) or "-"
    lines += [
        "",
        f"`*` chosen: {d['chosen']['label']} (checked at {d['precision']}); the next size up "
        f"breaks: {stop}. est. = estimated for {d['device']} (roofline model, not a "
        "measurement); host ms = measured on this host, 1 thread.",
    ]
    if d.get("evidence") or d.get("trial"):
        lines += _choice_markdown(d)
    return "\n".join(lines)
