"""`edgekd export`: an edgekd checkpoint to a checked, parity-proven ONNX model."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from edgekd.cli._app import verb
from edgekd.cli.options import Data, Json, Target


@verb
def export(
    checkpoint: Annotated[str, typer.Argument(help="edgekd .safetensors checkpoint.")],
    target: Target = "mobile",
    data: Data = None,
    out: Annotated[
        str | None, typer.Option(help="Output .onnx (default: the checkpoint's name).")
    ] = None,
    simplify: Annotated[
        bool,
        typer.Option(
            "--simplify/--no-simplify",
            help="Simplify with onnxslim (kept only if the result passes the same checks).",
        ),
    ] = True,
    max_abs_diff: Annotated[
        float, typer.Option(help="Largest allowed |ONNX Runtime - PyTorch| output difference.")
    ] = 1e-3,
    min_top1_agreement: Annotated[
        float, typer.Option(help="Smallest allowed top-1 agreement with PyTorch (0..1).")
    ] = 0.999,
    as_json: Json = False,
) -> None:
    """Export a checkpoint to ONNX: checker, shape inference, parity with PyTorch on real inputs."""
    from edgekd.export import ParityThresholds, export_checkpoint

    result = export_checkpoint(
        checkpoint,
        target,
        data,
        out,
        simplify=simplify,
        thresholds=ParityThresholds(max_abs_diff, min_top1_agreement),
    )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    typer.echo(
        f"wrote {result.path}: opset {result.opset}, {result.nodes} nodes, parity on "
        f"{result.parity_samples} samples: max abs diff {result.max_abs_diff:.2g}, top-1 "
        f"agreement {result.top1_agreement:.4f}; {result.simplify_note}"
    )
    for note in result.notes:
        typer.echo(f"note: {note}")
