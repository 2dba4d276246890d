"""`edgekd tune`: search distillation settings within a time budget (``edgekd.tune``)."""

from __future__ import annotations

from typing import Annotated

import typer

from edgekd.cli._app import verb
from edgekd.cli.options import (
    Config,
    Data,
    Epochs,
    Json,
    Seed,
    Student,
    Target,
    Teacher,
    TeacherWeights,
    field_defaults,
    settings_from_cli,
)
from edgekd.config import DistillConfig

D = field_defaults(DistillConfig)  # the trials' defaults are distill's


@verb
def tune(
    ctx: typer.Context,
    time_budget: Annotated[
        float, typer.Option(help="Seconds for the whole search (teacher, sizing, trials).")
    ] = 600.0,
    target: Target = D["target"],
    data: Data = D["data"],
    teacher: Teacher = D["teacher"],
    teacher_weights: TeacherWeights = D["teacher_weights"],
    student: Student = D["student"],
    epochs: Epochs = D["epochs"],
    seed: Seed = D["seed"],
    trials: Annotated[
        int | None, typer.Option(help="At most this many trials (default: until the budget).")
    ] = None,
    backend: Annotated[
        str, typer.Option(help="auto (Optuna if installed, else random), optuna or random.")
    ] = "auto",
    methods: Annotated[
        str, typer.Option(help="Comma-separated logit methods to search.")
    ] = "kd,mse,dkd",
    config: Config = None,
    # Not DistillConfig.out (each trial's run folder): the search's own folder.
    tune_out: Annotated[
        str | None, typer.Option("--out", help="Output folder (default runs/tune-TIMESTAMP).")
    ] = None,
    as_json: Json = False,
) -> None:
    """Search temperature, alpha, learning rate, augmentation and method; write the winner.

    Writes OUT/tune.json (every trial) and OUT/run.toml; reproduce the winner with
    `edgekd distill --config OUT/run.toml`.
    """
    import json

    from edgekd.tune import TuneSettings, check_config_file
    from edgekd.tune import tune as run_tune

    check_config_file(config)
    settings = TuneSettings(
        budget_s=time_budget,
        max_trials=trials,
        backend=backend,
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
    )
    result = run_tune(settings_from_cli(ctx, DistillConfig, config), settings, tune_out)
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
