"""The CLI reference in README.md, generated from the Typer app so that it cannot drift.

    python -m edgekd.cli.docs README.md      # rewrite the block between the cli markers
    python -m edgekd.cli.docs --check README.md

A test runs the check, so a command or option changed without regenerating fails CI.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import typer

BEGIN, END = "<!-- cli:begin -->", "<!-- cli:end -->"


def _option_row(param) -> str:
    if param.param_type_name == "argument":
        names = f"`{param.name.upper()}`"
        help_text = getattr(param, "help", "") or ""
        default = "required" if param.required else "optional"
    else:
        names = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
        help_text = getattr(param, "help", "") or ""
        if param.is_flag:
            default = "off" if not param.default else "on"
        elif param.default is None:
            default = ""
        else:
            default = f"`{param.default}`"
    help_text = help_text.replace("|", "\\|").replace("\n", " ")
    return f"| {names} | {help_text} | {default} |"


def cli_reference_markdown() -> str:
    from edgekd.cli import app

    root = typer.main.get_command(app)
    out = ["| command | what it does |", "|---|---|"]
    for name in sorted(root.commands):
        cmd = root.commands[name]
        out.append(f"| `edgekd {name}` | {(cmd.help or '').strip().splitlines()[0]} |")
    for name in sorted(root.commands):
        cmd = root.commands[name]
        out += ["", f"### `edgekd {name}`", "", (cmd.help or "").strip(), ""]
        params = [p for p in cmd.params if p.name != "help"]
        if params:
            out += ["| option | help | default |", "|---|---|---|"]
            out += [_option_row(p) for p in params]
    return "\n".join(out).strip() + "\n"


def replace_block(text: str, block: str) -> str:
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"README has no {BEGIN} ... {END} block")
    return pattern.sub(lambda _m: f"{BEGIN}\n{block}{END}", text)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [a for a in argv if not a.startswith("--")] or ["README.md"]
    path = Path(paths[0])
    text = path.read_text()
    new = replace_block(text, cli_reference_markdown())
    if check:
        if new != text:
            print(f"{path}: CLI reference is out of date; run python -m edgekd.cli.docs {path}")
            return 1
        return 0
    path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
