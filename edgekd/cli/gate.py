"""`edgekd gate`: budget and regression verdicts on a report; the exit code is the verdict."""

from __future__ import annotations

from typing import Annotated

import typer

from edgekd.cli._app import verb
from edgekd.cli.options import Json


@verb
def gate(
    report: Annotated[str, typer.Argument(help="report.json from edgekd bench or edgekd distill.")],
    target: Annotated[
        str | None,
        typer.Option(help="Gate by this target profile (default: the one stored in the report)."),
    ] = None,
    baseline: Annotated[
        str | None, typer.Option(help="Baseline report.json: flag regressions against it.")
    ] = None,
    threshold: Annotated[
        float, typer.Option(help="Latency regression threshold (0.10 = 10% slower).")
    ] = 0.10,
    model: Annotated[
        list[str] | None, typer.Option(help="Gate only these models (default: the students).")
    ] = None,
    any_host: Annotated[
        bool, typer.Option(help="Compare latency with a baseline measured on another CPU.")
    ] = False,
    only: Annotated[
        list[str] | None,
        typer.Option(
            help="Check only these lines (e.g. latency_ms); the rest are listed as skipped."
        ),
    ] = None,
    require: Annotated[
        list[str] | None,
        typer.Option(
            help="Lines that must be measured: NOT MEASURED counts as INCONCLUSIVE for them "
            "(e.g. accuracy_drop)."
        ),
    ] = None,
    max_seconds: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds to spend measuring more processes when a latency line is undecided "
            "(0: never).",
        ),
    ] = 60.0,
    markdown: Annotated[
        str | None, typer.Option(help="Write a Markdown summary (a pull-request comment) here.")
    ] = None,
    junit: Annotated[
        str | None, typer.Option(help="Write JUnit XML here: one test case per budget line.")
    ] = None,
    as_json: Json = False,
) -> None:
    """Check a report against the target's budget; exit 0 pass, 3 fail, 4 inconclusive.

    A line the benchmark did not measure (no teacher, no labels) is shown as NOT MEASURED and
    does not count unless given to --require. An undecided latency line is measured again, in
    more fresh processes of the model (and the baseline's), for up to --max-seconds (a causal-LM
    report's: more runs of its student's time probe).
    """
    import json

    from edgekd.fileio import write_text_atomic
    from edgekd.gate import gate as run_gate
    from edgekd.gate import print_result, to_junit, to_markdown

    result = run_gate(
        report,
        target,
        baseline=baseline,
        threshold=threshold,
        models=model,
        any_host=any_host,
        only=only,
        require=require,
        max_seconds=max_seconds,
    )
    if markdown:
        write_text_atomic(markdown, to_markdown(result))
    if junit:
        write_text_atomic(junit, to_junit(result))
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        print_result(result)
    raise typer.Exit(result.exit_code)
