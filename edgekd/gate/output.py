"""How a gate result is shown: a Markdown pull-request comment, JUnit XML, a terminal table."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from edgekd.gate.checks import Verdict
from edgekd.gate.lines import GateResult, format_value


def to_markdown(result: GateResult) -> str:
    """A pull-request comment: the verdict, one table row per line, the reasons below it."""
    counts = result.counts()
    lines = [
        f"### edgekd gate: **{result.verdict}** (target `{result.target}`)",
        "",
        f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['INCONCLUSIVE']} inconclusive"
        + (f", {counts['NOT MEASURED']} not measured" if counts["NOT MEASURED"] else "")
        + (
            f"; baseline `{result.baseline}`, threshold {result.threshold:.0%}"
            if result.baseline
            else ""
        ),
        "",
        "| line | model | kind | measured | limit | verdict |",
        "|---|---|---|---:|---:|---|",
    ]
    for g in result.lines:
        shown = g.verdict if g.verdict == Verdict.PASS else f"**{g.verdict}**"
        lines.append(
            f"| {g.name} | {g.model} | {g.kind} | {format_value(g.value, g.unit)} | "
            f"{format_value(g.limit, g.unit)} | {shown} |"
        )
    lines += ["", "<details><summary>Why</summary>", ""]
    lines += [
        f"- **{g.name}** ({g.model}, {g.verdict}): {g.detail}. {g.reason}" for g in result.lines
    ]
    lines += [f"- note: {n}" for n in result.notes]
    lines += ["", "</details>", ""]
    return "\n".join(lines).replace("\n\n\n", "\n\n")


def to_junit(result: GateResult) -> str:
    """JUnit XML: one testcase per line; FAIL a <failure>, INCONCLUSIVE and NOT MEASURED
    <skipped>."""
    counts = result.counts()
    attrs = {
        "tests": str(len(result.lines)),
        "failures": str(counts["FAIL"]),
        "errors": "0",
        "skipped": str(counts["INCONCLUSIVE"] + counts["NOT MEASURED"]),
        "time": "0",
    }
    root = ET.Element("testsuites", {"name": "edgekd gate", **attrs})
    suite = ET.SubElement(root, "testsuite", {"name": f"edgekd gate ({result.target})", **attrs})
    for g in result.lines:
        case = ET.SubElement(
            suite,
            "testcase",
            {"classname": f"edgekd.gate.{result.target}.{g.model}", "name": g.name, "time": "0"},
        )
        value, limit = format_value(g.value, g.unit), format_value(g.limit, g.unit)
        measured = f"{value} (limit {limit}, {g.kind})"
        if g.verdict == Verdict.FAIL:
            ET.SubElement(
                case, "failure", {"message": g.reason, "type": "FAIL"}
            ).text = f"{measured}: {g.detail}. {g.reason}"
        elif g.verdict in (Verdict.INCONCLUSIVE, Verdict.NOT_MEASURED):
            ET.SubElement(case, "skipped", {"message": f"{g.verdict}: {g.reason}"})
        ET.SubElement(case, "system-out").text = f"{measured}: {g.detail}. {g.reason}"
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def print_result(result: GateResult) -> None:
    """A rich table of the lines, the reasons for every line that did not pass, the verdict."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(width=100 if not Console().is_terminal else None)
    table = Table(title=f"edgekd gate: target {result.target}", box=box.SIMPLE_HEAD)
    for col in ("line", "model", "kind", "measured", "limit", "verdict"):
        table.add_column(col, justify="right" if col in ("measured", "limit") else "left")
    for g in result.lines:
        style = {"PASS": "green", "FAIL": "red", "NOT MEASURED": "dim"}.get(g.verdict, "yellow")
        table.add_row(
            g.name,
            g.model,
            g.kind,
            format_value(g.value, g.unit),
            format_value(g.limit, g.unit),
            f"[{style}]{g.verdict}[/{style}]",
        )
    console.print(table)
    for g in result.lines:
        if g.verdict != Verdict.PASS:
            console.print(f"  {g.verdict} {g.name} ({g.model}): {g.reason}", highlight=False)
    for n in result.notes:
        console.print(f"  note: {n}", highlight=False)
    style = {"PASS": "green", "FAIL": "red"}.get(result.verdict, "yellow")
    console.print(
        f"[{style}]gate: {result.verdict}[/{style}] (exit {result.exit_code})", highlight=False
    )
