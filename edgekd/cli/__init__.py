"""The ``edgekd`` command line: parse options, build a config, call one library verb, print.

No logic lives here, and nothing heavy is imported at module level, so ``edgekd --help`` stays fast
(torch and onnxruntime are imported only by the command that needs them). Every command is one
module in this package, registered by importing it below, in the order ``--help`` lists them.
"""

from __future__ import annotations

import sys

from edgekd.cli import (  # noqa: F401  (importing a command module registers it)
    bench,
    distill,
    export,
    gate,
    methods,
    quantize,
    report,
    size,
    students,
    targets,
    tune,
)
from edgekd.cli._app import app

__all__ = ["app", "main"]


def main() -> None:
    app(prog_name="edgekd")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
