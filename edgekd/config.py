"""Run configuration files: TOML read into a validated dataclass; nothing in them is executed.

    edgekd distill --config run.toml

Top-level keys mirror the dataclass's fields (``DistillConfig``: ``target``, ``epochs``, ``lr``,
``teacher``, ...). Every problem is found before any is reported: unknown keys (with the closest
known one), wrong types and out-of-range values, each with its line, in one message::

    run.toml: 2 problems: line 3 'epochs': must be >= 1, got 0; line 5 'lrr': unknown key
    (did you mean 'lr'?)

Some fields are refused in files (``trust_checkpoint``: only a person at the command line can
decide to trust a downloaded file).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from edgekd.errors import BadInputError


class ConfigError(BadInputError):
    """A configuration file is unreadable or has problems (all of them are in the message)."""


def load_config_file(
    path: str | os.PathLike[str], cls: type, refused: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The validated values of TOML file ``path`` for dataclass ``cls`` (only keys it sets).

    ``cls.field_problems(values) -> [(key, message)]``, when defined, adds value checks.

    >>> values = load_config_file("run.toml", DistillConfig)  # doctest: +SKIP
    >>> config = DistillConfig(**values)  # doctest: +SKIP
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the configuration file ({exc})") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    problems: list[tuple[str, str]] = []
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in refused:
            problems.append((key, "may only be given on the command line"))
        elif key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append((key, f"unknown key{hint}"))
        else:
            checked, error = _check_type(value, hints[key])
            if error:
                problems.append((key, error))
            else:
                values[key] = checked
    check = getattr(cls, "field_problems", None)
    if check is not None:
        problems += check(values)
    if problems:
        lines = _key_lines(text)
        shown = [
            (f"line {lines[k]} " if k in lines else "") + f"{k!r}: {message}"
            for k, message in problems
        ]
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise ConfigError(f"{path}: {count}: " + "; ".join(shown))
    return values


def _check_type(value: Any, hint: Any) -> tuple[Any, str | None]:
    """``(value, None)`` when ``value`` fits ``hint`` (an int where a float is wanted is fine)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    options = tuple(o for o in options if o is not type(None))  # TOML has no null: omit the key
    for option in options:
        if option is bool and isinstance(value, bool):
            return value, None
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value, None
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value), None
        if option is str and isinstance(value, str):
            return value, None
    want = " or ".join(_NAMES.get(o, getattr(o, "__name__", str(o))) for o in options)
    return value, f"expected {want}, got {_NAMES.get(type(value), type(value).__name__)} {value!r}"


_NAMES = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}


def _key_lines(text: str) -> dict[str, int]:
    """Line numbers of top-level ``key = value`` lines (tomllib does not report positions)."""
    lines: dict[str, int] = {}
    in_table = False
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("["):
            in_table = True  # keys inside tables are not top-level fields
            lines.setdefault(stripped.strip("[] "), number)
            continue
        match = re.match(r'\s*"?([A-Za-z0-9_\-]+)"?\s*=', line)
        if match and not in_table:
            lines.setdefault(match.group(1), number)
    return lines
