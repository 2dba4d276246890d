"""`edgekd quantize`: every quantization mode the target allows, measured, and one chosen."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from edgekd.cli._app import verb
from edgekd.cli.options import Data, Json, Overwrite, Target


@verb
def quantize(
    model: Annotated[str, typer.Argument(help="fp32 ONNX model (e.g. from `edgekd export`).")],
    target: Target = "mobile",
    data: Data = None,
    out: Annotated[
        str | None, typer.Option(help="Output folder (default: MODEL-quantized beside MODEL).")
    ] = None,
    calibration: Annotated[
        list[str] | None,
        typer.Option(help="Calibration method(s) to try first: minmax, entropy, percentile."),
    ] = None,
    num_samples: Annotated[int, typer.Option(help="Calibration samples.")] = 256,
    allowed_drop: Annotated[
        float | None,
        typer.Option(help="Allowed accuracy drop versus fp32 (default: the target's budget)."),
    ] = None,
    exclude_nodes: Annotated[
        bool,
        typer.Option(
            "--exclude-nodes/--no-exclude-nodes",
            help="If no int8 variant fits, keep the most sensitive nodes in fp32.",
        ),
    ] = True,
    overwrite: Overwrite = False,
    as_json: Json = False,
) -> None:
    """Quantize MODEL every way the target allows; keep the fastest within the accuracy budget."""
    from edgekd.quantize.select import QuantSearch, format_variants, quantize_for_target

    search = QuantSearch(
        calibrations=tuple(calibration or ("minmax",)),
        num_samples=num_samples,
        allowed_drop=allowed_drop,
        exclude_nodes=exclude_nodes,
    )
    sel = quantize_for_target(model, target, data, out, search, overwrite=overwrite)
    if as_json:
        typer.echo(json.dumps(sel.to_dict(), indent=2))
        return
    typer.echo(format_variants(sel))
    for line in sel.warnings:
        typer.echo(f"- {line}")
    chosen = sel.chosen_variant
    typer.echo(f"chosen: {chosen.path}")
