"""What the gate is given, read and checked before anything is judged: report files and limits.

A report file must be UTF-8 JSON holding an object with ``schema_version``, the integer this
edgekd writes (``edgekd.results.SCHEMA_VERSION``), and at least one model. Every other case is
refused with one line naming the file and the field, never gated as if it were the current
version:

- no ``schema_version``: not an edgekd report (a hand-written one says ``"schema_version": 1``);
- a string such as ``"1"``, a float or a bool: a damaged or hand-edited report;
- a larger number: written by a newer edgekd, whose fields this one may misread;
- a smaller one: there is none (version 1 is the first).

A causal-LM report (``"task": "causal-lm"``, written by ``edgekd.lm``) has no schema version
and its own fields; ``lm_report`` recognises one, and ``edgekd.gate.lm`` checks what it reads.

The budget's limits are checked here too (finite numbers, ``accuracy_drop`` a fraction in
[0, 1]), for profiles read from a TOML file and for profiles stored in a report alike, so a NaN
limit never turns into a FAIL and a limit of 2 never passes everything silently.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from edgekd.errors import BadInputError
from edgekd.results import SCHEMA_VERSION, Report
from edgekd.targets import TargetProfile


def load_report(path: str | Path) -> Report:
    """``path`` read as a report, or ``BadInputError`` naming the file and what is wrong."""
    data = read_json_object(path)
    check_schema_version(data, str(path))
    models = data.get("models")
    if not isinstance(models, list) or not models:
        raise BadInputError(f"{path}: field 'models' is empty or missing: no model to gate")
    if not all(isinstance(m, dict) for m in models):
        raise BadInputError(f"{path}: field 'models' must be a list of objects")
    return Report.from_dict(data, str(path))


def read_json_object(path: str | Path) -> dict[str, Any]:
    """``path`` read as a JSON object (any report, classifier or causal-LM), or
    ``BadInputError`` naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: report not found" + (" (a folder)" if path.is_dir() else ""))
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise BadInputError(f"{path}: not a report (a binary file, not UTF-8 JSON)") from None
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read the report ({exc.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: not an edgekd report (a JSON {type(data).__name__})")
    return data


def lm_report(report: Any) -> dict[str, Any] | None:
    """The report's JSON when ``report`` is a path to a causal-LM report; None otherwise (the
    classifier path then reads and checks it)."""
    if not isinstance(report, str | Path):
        return None
    try:
        data = json.loads(Path(report).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("task") == "causal-lm" else None


def check_schema_version(data: dict[str, Any], where: str) -> None:
    """Refuse a report whose ``schema_version`` is missing, not an integer, or not this one."""
    if "schema_version" not in data:
        raise BadInputError(
            f"{where}: field 'schema_version' is missing: not an edgekd report (one written by "
            f'hand needs "schema_version": {SCHEMA_VERSION})'
        )
    v = data["schema_version"]
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadInputError(
            f"{where}: field 'schema_version' must be the integer {SCHEMA_VERSION}, got {v!r}"
        )
    if v > SCHEMA_VERSION:
        raise BadInputError(
            f"{where}: field 'schema_version' is {v}: written by a newer edgekd (this one reads "
            f"version {SCHEMA_VERSION}); upgrade edgekd to gate it"
        )
    if v != SCHEMA_VERSION:
        raise BadInputError(
            f"{where}: field 'schema_version' is {v}: no such version (this edgekd reads "
            f"{SCHEMA_VERSION})"
        )


def check_limits(profile: TargetProfile, where: str, prefix: str = "budget.") -> None:
    """Every numeric budget limit finite and >= 0, ``accuracy_drop`` within [0, 1]. ``where``
    names the profile's file, or the report that stores it (then ``prefix`` is
    ``target.budget.``); optional limits left unset (None) are not checked."""
    for name, value in vars(profile.budget).items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue  # an optional line that is not set
        field = f"{prefix}{name}"
        if not math.isfinite(value):
            raise BadInputError(f"{where}: field '{field}' must be a finite number, got {value}")
        if value < 0:
            raise BadInputError(f"{where}: field '{field}' must be >= 0, got {value}")
    drop = profile.budget.accuracy_drop
    if drop > 1:
        raise BadInputError(
            f"{where}: field '{prefix}accuracy_drop' must be a fraction in [0, 1] (0.02 = 2 "
            f"points), got {drop}"
        )
