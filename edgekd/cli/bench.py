"""`edgekd bench`: measure models (and their teacher) for a target; write report.json."""

from __future__ import annotations

from typing import Annotated

import typer

from edgekd.cli._app import verb
from edgekd.cli.options import Json, Target


@verb
def bench(
    models: Annotated[
        list[str],
        typer.Argument(help="Models: .onnx, edgekd .safetensors, or pkg.module:factory."),
    ],
    target: Target = "mobile",
    data: Annotated[
        str | None,
        typer.Option(help="Test data: 'digits', 'mnist1d' or a .npz (default: random inputs)."),
    ] = None,
    image_size: Annotated[
        int | None,
        typer.Option(
            help="--data image folders: resize each image's short side to N and crop the centre "
            "N x N, as distill --image-size did.",
            min=1,
        ),
    ] = None,
    teacher: Annotated[
        str | None, typer.Option(help="Teacher model spec: relative latency, agreement, KL.")
    ] = None,
    runtime: Annotated[
        list[str] | None,
        typer.Option(help="Runtime(s): ort_cpu, ort_cuda, ort_tensorrt, torch_cpu, torch_cuda."),
    ] = None,
    processes: Annotated[
        int, typer.Option(min=1, help="Fresh processes per model (>= 2 lets the gate see drift).")
    ] = 3,
    min_time: Annotated[float, typer.Option(help="Timed seconds per model per process.")] = 0.25,
    out: Annotated[str | None, typer.Option(help="Write the report here (JSON).")] = None,
    as_json: Json = False,
) -> None:
    """Benchmark models on this host: latency (several fresh processes), memory, accuracy."""
    from edgekd.bench.runner import BenchSettings
    from edgekd.bench.suite import benchmark, check_out_path
    from edgekd.fileio import write_json_atomic
    from edgekd.report.tables import print_bench

    if out is not None:
        check_out_path(out)  # before the benchmark, not after it
    report = benchmark(
        models,
        target,
        data=data,
        teacher=teacher,
        runtimes=runtime,
        processes=processes,
        settings=BenchSettings(seconds_per_process=min_time),
        image_size=image_size,
    )
    if out:
        write_json_atomic(out, report.to_dict())
    if as_json:
        typer.echo(report.to_json())
        return
    print_bench(report)
    if out:
        typer.echo(f"report: {out}")
