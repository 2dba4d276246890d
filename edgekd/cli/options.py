"""The options several commands share, declared once with one help text each, and the one
settings builder that turns a command's parameters into a run configuration.

A command declares ``target: Target = "mobile"``; ``settings_from_cli`` then builds a
``DistillConfig`` from the parameters whose names are its fields (explicit options over the
``--config`` file over the field defaults), so no command restates the fields in a dict.
Nothing heavy is imported here: ``edgekd --help`` reads these at start-up.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import typer

from edgekd.errors import BadInputError

Target = Annotated[str, typer.Option(help="Target profile: name, alias or path to a TOML file.")]
Data = Annotated[
    str | None,
    typer.Option(
        help="Data: 'digits' (default), 'mnist1d', a .npz (one array per model input, 'y' "
        "labels), a .csv, a folder of class sub-folders, or pkg.module:factory."
    ),
]
Teacher = Annotated[
    str | None,
    typer.Option(
        help="Your teacher: pkg.module:factory, file.py:factory, .onnx, TorchScript .pt, .pt2, "
        "or a Hugging Face folder (default: a teacher trained on the data)."
    ),
]
TeacherWeights = Annotated[
    str | None, typer.Option(help="Weights for a factory teacher (.safetensors or .pt).")
]
Student = Annotated[
    str | None,
    typer.Option(
        help="Student family (see `edgekd students`) or pkg.module:factory; default by input kind."
    ),
]
Epochs = Annotated[
    int | None,
    typer.Option(
        help="Student training epochs (default: a budget of optimizer steps, at most 300 with "
        "augmented views, else 100)."
    ),
]
Seed = Annotated[
    int, typer.Option(help="Seed for everything random: data split, initialisation, shuffling.")
]
Out = Annotated[str | None, typer.Option(help="Output folder (default: a new one under runs/).")]
Overwrite = Annotated[bool, typer.Option(help="Replace an existing output folder.")]
Config = Annotated[
    str | None,
    typer.Option(
        help="Run TOML whose keys mirror `edgekd distill`'s options (tune writes one); options "
        "given win."
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON to stdout.")]

# Sources that mean "typed by the user" (typer >= 0.29 vendors click: compare by enum name).
_EXPLICIT = ("COMMANDLINE", "ENVIRONMENT")


def field_defaults(cls: type) -> dict[str, Any]:
    """``{field: default}`` of dataclass ``cls``, read without building one (building a
    ``DistillConfig`` checks its task, which imports torch; ``--help`` must not)."""
    return {f.name: f.default for f in dataclasses.fields(cls)}


def given_options(ctx: typer.Context) -> set[str]:
    """The parameters of this command that were typed, not left at their defaults."""
    sources = {name: ctx.get_parameter_source(name) for name in ctx.params}
    return {name for name, src in sources.items() if getattr(src, "name", "") in _EXPLICIT}


def settings_from_cli(
    ctx: typer.Context, cls: type, config_path: str | None, resume: str | None = None
) -> Any:
    """The ``cls`` instance the command's parameters describe, matched to fields by name.

    Explicit options win over the ``config_path`` file, which wins over the field defaults (a
    command's option defaults are the field defaults). With ``resume`` (a ``DistillConfig`` run
    folder) the configuration is the interrupted run's; only options that are not fields (and
    ``--trust-checkpoint``, which is never saved) may accompany it.
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    given = given_options(ctx)
    if resume is not None:
        from edgekd.config import resume_config

        extra = sorted(given & (fields | {"config"}) - {"resume", "trust_checkpoint"})
        if extra:
            raise BadInputError(
                f"--resume continues a run as it was configured; drop {_flags(ctx, extra)}"
            )
        return resume_config(resume, trust_checkpoint=ctx.params.get("trust_checkpoint", False))
    values: dict[str, Any] = {}
    if config_path is not None:
        from edgekd.config import load_config_file

        values = load_config_file(config_path, cls)
    for name in given & fields:
        value = ctx.params[name]
        values[name] = tuple(value) if isinstance(value, list) else value  # repeated options
    return cls(**values)


def _flags(ctx: typer.Context, names: list[str]) -> str:
    """``--pair, --epochs``: the flags of these parameters, as the user typed them."""
    flags = {p.name: p.opts[0] for p in ctx.command.params if p.opts}
    return ", ".join(flags.get(name, "--" + name.replace("_", "-")) for name in names)
