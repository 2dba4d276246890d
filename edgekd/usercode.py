"""Specs: the strings users write for code they bring, ``pkg.module:factory`` and
``path/to/file.py:factory``, resolved to the factory function (used for teachers and for data).

A factory is Python the user points at on purpose, so it is imported and run; a file someone
downloaded is data, read through ``edgekd.safety`` (see ``edgekd.teacher.user``). Importing this
module is cheap (no torch), so data loading and ``--help`` stay light.

User code that calls ``sys.exit()`` (on import or in the factory) does not end the run with its
exit code, 0 included: it is bad input like any other exception the factory raises (exit 2).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekd.errors import BadInputError, EdgekdError
from edgekd.safety._files import one_line

_FACTORY = re.compile(r"^(?P<target>.+):(?P<attr>[A-Za-z_]\w*)$")
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


# --- factories -----------------------------------------------------------------------------------


def parse_factory(spec: str) -> tuple[str, str] | None:
    """``("pkg.module", "make")`` for ``pkg.module:make``, ``("dir/f.py", "make")`` for a file."""
    match = _FACTORY.match(spec)
    if match is None:
        return None
    target, attr = match["target"], match["attr"]
    if target.endswith(".py") or _DOTTED.match(target):
        return target, attr
    return None


def load_factory(spec: str, what: str) -> Callable[[], Any]:
    """Import the module or file ``spec`` names and return its factory function."""
    parsed = parse_factory(spec)
    if parsed is None:
        raise BadInputError(f"{spec!r}: expected pkg.module:factory or path/to/file.py:factory")
    target, attr = parsed
    module = _import_file(Path(target)) if target.endswith(".py") else _import_module(target)
    fn = getattr(module, attr, None)
    if fn is None:
        raise BadInputError(f"{spec}: {target} has no attribute {attr!r} (the {what} factory)")
    if not callable(fn):
        raise BadInputError(
            f"{spec}: {attr!r} is a {type(fn).__name__}, neither a callable nor an nn.Module"
        )
    return fn


def call_factory(spec: str, what: str) -> Any:
    fn = load_factory(spec, what)
    try:
        return fn()
    except EdgekdError:
        raise
    except SystemExit as exc:
        raise BadInputError(
            f"{spec}: the {what} factory {called_exit(exc)} instead of returning"
        ) from None
    except Exception as exc:
        raise BadInputError(
            f"{spec}: the {what} factory raised {type(exc).__name__}: {one_line(exc)}"
        ) from None


def called_exit(exc: SystemExit) -> str:
    """``called sys.exit(0)``: what user code did that would have ended edgekd."""
    return f"called sys.exit({exc.code!r})"


def _import_module(name: str):
    # Like `python -m`, look in the current folder first (a console script's sys.path does not).
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise BadInputError(f"cannot import module {name!r} ({one_line(exc)})") from None
    except SystemExit as exc:
        raise BadInputError(f"importing module {name!r} {called_exit(exc)}") from None
    except Exception as exc:
        raise BadInputError(
            f"importing module {name!r} failed: {type(exc).__name__}: {one_line(exc)}"
        ) from None
    finally:
        if added:
            sys.path.remove(cwd)


def _import_file(path: Path):
    if not path.is_file():
        raise BadInputError(f"{path}: no such Python file")
    resolved = path.resolve()
    name = "edgekd_user_" + hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    sys.path.insert(0, str(resolved.parent))  # so the file can import its neighbours
    try:
        spec.loader.exec_module(module)
    except SystemExit as exc:
        del sys.modules[name]
        raise BadInputError(f"{path}: importing it {called_exit(exc)}") from None
    except Exception as exc:
        del sys.modules[name]
        raise BadInputError(
            f"{path}: importing it failed: {type(exc).__name__}: {one_line(exc)}"
        ) from None
    finally:
        sys.path.remove(str(resolved.parent))
    return module
