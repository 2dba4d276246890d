"""The public CLI does not move: every command keeps every flag it had (fixtures/cli_surface.json,
frozen before the layout change by ``tests/fixtures/make_surface.py``). New flags may be added."""

from __future__ import annotations

import json
import sys
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))

from make_surface import cli_surface  # noqa: E402


def test_every_command_keeps_every_flag() -> None:
    frozen = json.loads((FIXTURES / "cli_surface.json").read_text())
    now = cli_surface()
    missing = {cmd: sorted(set(flags) - set(now.get(cmd, []))) for cmd, flags in frozen.items()}
    assert not {cmd: gone for cmd, gone in missing.items() if gone}, missing
