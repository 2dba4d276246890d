"""`edgekd distill`: the whole pipeline, teacher to budget-verified quantized student."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from edgekd.cli._app import verb

# Options that may accompany --resume (everything else comes from the interrupted run's config).
_WITH_RESUME = {"resume", "trust_checkpoint", "as_json", "nproc", "max_restarts", "dist_timeout"}


@verb
def distill(
    ctx: typer.Context,
    target: Annotated[
        str, typer.Option(help="Target profile: name, alias, or path to a TOML.")
    ] = "mobile",
    data: Annotated[
        str | None,
        typer.Option(
            help="Training data: 'digits' (default), 'mnist1d', a .npz (one array per model "
            "input, 'y' labels), a .csv, a folder of class sub-folders, or pkg.module:factory."
        ),
    ] = None,
    test_data: Annotated[
        str | None, typer.Option(help="Held-out test data, same format (default: split off).")
    ] = None,
    val_data: Annotated[
        str | None, typer.Option(help="Held-out validation data, same format.")
    ] = None,
    label_column: Annotated[
        str | None, typer.Option(help="CSV label column (default 'label'; .npz: 'y').")
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option(
            help="Your teacher: pkg.module:factory, file.py:factory, .onnx, TorchScript .pt, "
            ".pt2, or a Hugging Face folder (default: a teacher trained on the data)."
        ),
    ] = None,
    teacher_weights: Annotated[
        str | None, typer.Option(help="Weights for a factory teacher (.safetensors or .pt).")
    ] = None,
    teacher_output: Annotated[
        str | None,
        typer.Option(help="Which output to distil when the teacher returns a tuple or dict."),
    ] = None,
    trust_checkpoint: Annotated[
        bool,
        typer.Option(
            help="Allow loading files that can run code (pickles, TorchScript, .pt2). Only for "
            "files whose source you trust."
        ),
    ] = False,
    task: Annotated[
        str, typer.Option(help="'classification' (logits) or 'embedding' (vectors).")
    ] = "classification",
    method: Annotated[
        str | None,
        typer.Option(help="Distillation method (default kd; embed for --task embedding)."),
    ] = None,
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
    epochs: Annotated[
        int | None,
        typer.Option(help="Student training epochs (default: 300 with augmented views, else 100)."),
    ] = None,
    lr: Annotated[float, typer.Option(help="Peak learning rate (one-cycle schedule).")] = 1e-2,
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
    blackbox_output: Annotated[
        str, typer.Option(help="What the black-box teacher gives: probs, topk:K or labels.")
    ] = "probs",
    seed: Annotated[int, typer.Option(help="Seed for splits, initialisation and shuffling.")] = 0,
    student: Annotated[
        str | None,
        typer.Option(
            help="Student family (see `edgekd students`) or pkg.module:factory; default by "
            "input kind."
        ),
    ] = None,
    init_from_teacher: Annotated[
        bool,
        typer.Option(
            help="Initialise the student from the teacher's weights (every other layer, leading "
            "channels; same family only)."
        ),
    ] = False,
    out: Annotated[
        str | None, typer.Option(help="Output folder (default runs/TARGET-TIMESTAMP).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
    teacher_epochs: Annotated[
        int | None,
        typer.Option(
            help="Epochs for training the default teacher (cached afterwards; default 100 for "
            "sequences, 40 otherwise)."
        ),
    ] = None,
    bench_seconds: Annotated[
        float, typer.Option(help="Minimum timed seconds per model in the benchmark.")
    ] = 0.5,
    config: Annotated[
        str | None,
        typer.Option(help="TOML file whose keys mirror these options; options given win."),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(help="Continue the interrupted run in this folder (OUT or OUT.partial)."),
    ] = None,
    bench_processes: Annotated[
        int, typer.Option(help="Fresh processes per model in the benchmark (pyperf-style).")
    ] = 3,
    augment: Annotated[
        str | None,
        typer.Option(
            help="Transfer-set augmentation, teacher and student on the same view: none, light "
            "or strong (mixup; for long runs). Default: strong for sequences, else none."
        ),
    ] = None,
    patience: Annotated[
        int, typer.Option(help="Stop after N epochs without a better validation score (0: off).")
    ] = 0,
    seeds: Annotated[
        int, typer.Option(help="Train N seeds; report mean +- std (artifacts of the first).")
    ] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print report.json to stdout.")] = False,
    nproc: Annotated[
        int,
        typer.Option(
            help="Train with N local worker processes (torchrun + DistributedDataParallel; gloo "
            "on CPU). Same result as one process with the same --batch-size (global batch)."
        ),
    ] = 1,
    max_restarts: Annotated[
        int,
        typer.Option(
            help="With --nproc: restart all workers up to N times after a failure; they resume "
            "from the last complete checkpoint."
        ),
    ] = 0,
    dist_timeout: Annotated[
        float,
        typer.Option(
            help="Distributed runs: seconds a worker waits for the others in a collective before "
            "the run fails (exit 7)."
        ),
    ] = 300.0,
) -> None:
    """Distil a teacher into a student sized for the target; export, quantize, bench, gate.

    Ctrl-C/SIGTERM: checkpoint at the next step, exit 130; continue with --resume OUT.

    A NaN or infinite loss or teacher output stops the run with exit code 5.

    Several workers: --nproc N here, or `torchrun ... -m edgekd distill ...` (multi-node); a
    failed worker ends the run with exit code 7 naming its rank.
    """
    from edgekd.errors import BadInputError
    from edgekd.pipeline import DistillConfig, resume_config
    from edgekd.pipeline import distill as run_distill
    from edgekd.report.markdown import print_summary
    from edgekd.safety import check_versions

    for message in check_versions():
        typer.echo(f"edgekd: warning: {message}", err=True)
    # Options typed on the command line (typer >= 0.29 vendors click: compare by enum name).
    explicit = ("COMMANDLINE", "ENVIRONMENT")
    given = {n for n in ctx.params if getattr(ctx.get_parameter_source(n), "name", "") in explicit}
    if resume is not None:
        extra = sorted(given - _WITH_RESUME)
        if extra:
            flags = ", ".join("--" + name.replace("_", "-") for name in extra)
            raise BadInputError(f"--resume continues a run as it was configured; drop {flags}")
        settings = resume_config(resume, trust_checkpoint=trust_checkpoint)
    else:
        options = {
            "target": target, "data": data, "test_data": test_data, "val_data": val_data,
            "label_column": label_column, "teacher": teacher, "teacher_weights": teacher_weights,
            "teacher_output": teacher_output, "trust_checkpoint": trust_checkpoint, "task": task,
            "method": method, "temperature": temperature, "alpha": alpha, "epochs": epochs,
            "lr": lr, "seed": seed, "student_family": student,
            "init_from_teacher": init_from_teacher, "out": out, "overwrite": overwrite,
            "teacher_epochs": teacher_epochs, "bench_min_time_s": bench_seconds,
            "strategy": strategy, "pairs": tuple(pair or ()), "temperature_end": temperature_end,
            "method_weight": weight, "finetune_epochs": finetune_epochs,
            "generations": generations, "peer": peer, "teacher_onnx": teacher_onnx,
            "teacher_cmd": teacher_cmd, "blackbox_output": blackbox_output,
            "bench_processes": bench_processes, "augment": augment, "patience": patience,
            "seeds": seeds,
        }  # fmt: skip
        values = options
        if config is not None:  # the file's values, under the options given explicitly
            from edgekd.config import load_config_file

            values = load_config_file(config, DistillConfig, refused=("trust_checkpoint",))
            renamed = {"student": "student_family", "bench_seconds": "bench_min_time_s"}
            keys = {renamed.get(name, name) for name in given}
            values.update({k: v for k, v in options.items() if k in keys})
        settings = DistillConfig(**values)
    from edgekd.train.distributed import distributed_session, worker_env

    if nproc < 1:
        raise BadInputError(f"--nproc must be >= 1, got {nproc}")
    if nproc > 1 or max_restarts:  # start the workers, each runs this command without --nproc
        if worker_env() is not None:
            raise BadInputError("--nproc/--max-restarts start torchrun; under torchrun, drop them")
        from edgekd.train.launch import launch_workers, worker_args

        args = worker_args(sys.argv[1:])
        if "distill" not in args:  # called from Python (CliRunner), not from a command line
            raise BadInputError("--nproc re-runs the command line: `edgekd distill ... --nproc N`")
        launch_workers(nproc, args, max_restarts)
        return
    with distributed_session(dist_timeout) as dist:  # None outside torchrun
        report = run_distill(settings, resume=resume is not None, dist=dist)
    if report is None:  # a worker other than rank 0: rank 0 prints the summary
        return
    if as_json:
        typer.echo(report.to_json())
    else:
        print_summary(report)
        typer.echo(f"report: {report.out_dir}/report.md")
        # distill exits 0 when it produced its artifacts; `edgekd gate` is the step that fails CI.
        typer.echo(
            f"gate: {report.gate.get('verdict')} (in CI: edgekd gate {report.out_dir}/report.json)"
        )
