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
    strategy: Annotated[
        str | None,
        typer.Option(
            help="offline (default), online, self, assistant or blackbox (see `edgekd methods`)."
        ),
    ] = None,
    pair: Annotated[
        list[str] | None,
        typer.Option(
            help="STUDENT_LAYER:TEACHER_LAYER for feature methods; repeatable "
            "(default features:features)."
        ),
    ] = None,
    temperature: Annotated[
        float, typer.Option(help="Softmax temperature T for soft targets.")
    ] = 4.0,
    temperature_end: Annotated[
        float | None, typer.Option(help="Anneal T linearly to this value by the last epoch.")
    ] = None,
    alpha: Annotated[
        float | None,
        typer.Option(
            help="Weight of the hard-label CE; 1 - alpha weights the method (default: its own)."
        ),
    ] = None,
    weight: Annotated[
        float | None, typer.Option(help="Multiplier of the method's own loss (default: its own).")
    ] = None,
    epochs: Annotated[int, typer.Option(help="Student training epochs.")] = 30,
    lr: Annotated[float, typer.Option(help="Peak learning rate (one-cycle schedule).")] = 3e-3,
    finetune_epochs: Annotated[
        int, typer.Option(help="Hard-label fine-tune epochs after the strategy.")
    ] = 0,
    generations: Annotated[int, typer.Option(help="Born-again generations (--strategy self).")] = 2,
    peer: Annotated[
        str,
        typer.Option(help="--strategy online: learn with a copy of the teacher, or a 2nd student."),
    ] = "teacher",
    teacher_onnx: Annotated[
        str | None, typer.Option(help="Black-box teacher: an ONNX file run with ONNX Runtime.")
    ] = None,
    teacher_cmd: Annotated[
        str | None,
        typer.Option(help="Black-box teacher: a command run as `CMD IN.npz OUT.npz` per batch."),
    ] = None,
    teacher_output: Annotated[
        str, typer.Option(help="What the black-box teacher gives: probs, topk:K or labels.")
    ] = "probs",
    seed: Annotated[int, typer.Option(help="Seed for splits, initialisation and shuffling.")] = 0,
    student: Annotated[
        str | None,
        typer.Option(help="Student family (see `edgekd students`); default by input kind."),
    ] = None,
    out: Annotated[
        str | None, typer.Option(help="Output folder (default runs/TARGET-TIMESTAMP).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
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
        strategy=strategy,
        pairs=tuple(pair or ()),
        temperature=temperature,
        temperature_end=temperature_end,
        alpha=alpha,
        method_weight=weight,
        finetune_epochs=finetune_epochs,
        generations=generations,
        peer=peer,
        teacher_onnx=teacher_onnx,
        teacher_cmd=teacher_cmd,
        teacher_output=teacher_output,
        epochs=epochs,
        lr=lr,
        seed=seed,
        student_family=student,
        out=out,
        overwrite=overwrite,
    )
    report = run_distill(config)
    if as_json:
        typer.echo(report.to_json())
    else:
        print_summary(report)
        typer.echo(f"report: {report.models[0].path.rsplit('/', 1)[0]}/report.md")
