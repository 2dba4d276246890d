"""`edgekd tune`: search distillation settings within a time budget (``edgekd.tune``)."""

from __future__ import annotations

from typing import Annotated

import typer

from edgekd.cli._app import verb


@verb
def tune(
    ctx: typer.Context,
    time_budget: Annotated[
        float, typer.Option(help="Seconds for the whole search (teacher, sizing, trials).")
    ] = 600.0,
    target: Annotated[str, typer.Option(help="Target profile: name, alias or TOML.")] = "mobile",
    data: Annotated[
        str | None, typer.Option(help="Training data, as for `edgekd distill` (default digits).")
    ] = None,
    teacher: Annotated[
        str | None, typer.Option(help="Your teacher, as for `edgekd distill`.")
    ] = None,
    teacher_weights: Annotated[
        str | None, typer.Option(help="Weights for a factory teacher.")
    ] = None,
    student: Annotated[
        str | None, typer.Option(help="Student family (default by input kind).")
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            help="Training epochs of every trial (default: 300, distill's patient schedule)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the data split, the student and sampler.")] = 0,
    trials: Annotated[
        int | None, typer.Option(help="At most this many trials (default: until the budget).")
    ] = None,
    backend: Annotated[
        str, typer.Option(help="auto (Optuna if installed, else random), optuna or random.")
    ] = "auto",
    methods: Annotated[
        str, typer.Option(help="Comma-separated logit methods to search.")
    ] = "kd,mse,dkd",
    config: Annotated[
        str | None,
        typer.Option(help="A run TOML (as for `edgekd distill --config`) to start from."),
    ] = None,
    out: Annotated[
        str | None, typer.Option(help="Output folder (default runs/tune-TIMESTAMP).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print tune.json to stdout.")] = False,
) -> None:
    """Search temperature, alpha, learning rate, augmentation and method; write the winner.

    Writes OUT/tune.json (every trial) and OUT/run.toml; reproduce the winner with
    `edgekd distill --config OUT/run.toml`.
    """
    import json

    from edgekd.pipeline import DistillConfig
    from edgekd.tune import TuneSettings
    from edgekd.tune import tune as run_tune

    options = {
        "target": target, "data": data, "teacher": teacher, "teacher_weights": teacher_weights,
        "student": student, "epochs": epochs, "seed": seed,
    }  # fmt: skip
    explicit = ("COMMANDLINE", "ENVIRONMENT")
    given = {n for n in ctx.params if getattr(ctx.get_parameter_source(n), "name", "") in explicit}
    values = {k: v for k, v in options.items() if v is not None}
    if config is not None:  # the file's values, under the options given explicitly
        from edgekd.config import load_config_file

        values = load_config_file(config, DistillConfig, refused=("trust_checkpoint",))
        values.update({k: v for k, v in options.items() if k in given})
    if "student" in values:
        values["student_family"] = values.pop("student")
    settings = TuneSettings(
        budget_s=time_budget,
        max_trials=trials,
        backend=backend,
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
    )
    result = run_tune(DistillConfig(**values), settings, out)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    best = result.best
    shown = ", ".join(
        f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in best.params.items()
    )
    states = [t.state for t in result.trials]
    typer.echo(
        f"{len(states)} trials in {result.elapsed_s:.0f} s ({result.backend} search): "
        + ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))
    )
    typer.echo(f"best: trial {best.number}, {result.metric} {best.score:.4f}: {shown}")
    typer.echo(f"written: {result.out}/tune.json, {result.out}/run.toml")
    typer.echo(f"reproduce: edgekd distill --config {result.out}/run.toml")
