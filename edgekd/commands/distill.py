"""`edgekd distill`: the whole pipeline, teacher to budget-verified quantized student."""

from __future__ import annotations

from typing import Annotated

import typer

from edgekd.cli import verb


@verb
def distill(
    target: Annotated[
        str, typer.Option(help="Target profile: name, alias, or path to a TOML.")
    ] = "mobile",
    data: Annotated[
        str | None, typer.Option(help="Training data: 'digits' (default), 'mnist1d', or a .npz.")
    ] = None,
    method: Annotated[str, typer.Option(help="Distillation method (see `edgekd methods`).")] = "kd",
    temperature: Annotated[
        float, typer.Option(help="Softmax temperature T for soft targets.")
    ] = 4.0,
    alpha: Annotated[
        float, typer.Option(help="Weight of the hard-label CE; 1 - alpha weights the KD term.")
    ] = 0.1,
    epochs: Annotated[int, typer.Option(help="Student training epochs.")] = 30,
    lr: Annotated[float, typer.Option(help="Peak learning rate (one-cycle schedule).")] = 3e-3,
    seed: Annotated[int, typer.Option(help="Seed for splits, initialisation and shuffling.")] = 0,
    student: Annotated[
        str | None,
        typer.Option(help="Student family (see `edgekd students`); default by input kind."),
    ] = None,
    out: Annotated[
        str | None, typer.Option(help="Output folder (default runs/TARGET-TIMESTAMP).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
    teacher_epochs: Annotated[
        int, typer.Option(help="Epochs for training the default teacher (cached afterwards).")
    ] = 40,
    bench_seconds: Annotated[
        float, typer.Option(help="Minimum timed seconds per model in the benchmark.")
    ] = 0.5,
    bench_processes: Annotated[
        int, typer.Option(help="Fresh processes per model in the benchmark (pyperf-style).")
    ] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print report.json to stdout.")] = False,
) -> None:
    """Distil a teacher into a student sized for the target; export, quantize, bench, gate."""
    from edgekd.pipeline import DistillConfig
    from edgekd.pipeline import distill as run_distill
    from edgekd.report import print_summary

    config = DistillConfig(
        target=target,
        data=data,
        method=method,
        temperature=temperature,
        alpha=alpha,
        epochs=epochs,
        lr=lr,
        seed=seed,
        student_family=student,
        out=out,
        overwrite=overwrite,
        teacher_epochs=teacher_epochs,
        bench_min_time_s=bench_seconds,
        bench_processes=bench_processes,
    )
    report = run_distill(config)
    if as_json:
        typer.echo(report.to_json())
    else:
        print_summary(report)
        typer.echo(f"report: {report.out_dir}/report.md")
        # distill exits 0 when it produced its artifacts; `edgekd gate` is the step that fails CI.
        typer.echo(
            f"gate: {report.gate.get('verdict')} (in CI: edgekd gate {report.out_dir}/report.json)"
        )
