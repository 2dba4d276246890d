"""The generated parts of README.md, so that they cannot drift: the CLI reference (from the Typer
app) and the tables of KD methods, student families (from their registries) and shipped targets
(``targets/*.toml``). Each sits between its own markers, ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->``.

    python -m edgekd.cli.docs README.md      # rewrite every generated block
    python -m edgekd.cli.docs --check README.md

A test runs the check, so a command, option, method, family or target changed without
regenerating fails CI. The registries import torch; they are imported only when a block is built.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import typer


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


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
    return f"| {names} | {_cell(help_text)} | {default} |"


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


def _paper(cite: str) -> str:
    """``"Hinton et al. 2015, https://arxiv.org/abs/1503.02531"`` as a Markdown link."""
    who, _, url = cite.partition(", http")
    return f"[{_cell(who)}](http{url})" if url else _cell(cite) or "-"


def methods_markdown() -> str:
    """One row per registered KD method: what it matches, its kind, paper and default weights."""
    from edgekd.distill.methods import all_methods

    out = [
        "| method | matches | kind | paper | alpha | weight (paper's) |",
        "|---|---|---|---|---|---|",
    ]
    for name, cls in sorted(all_methods().items()):
        method = cls()
        classifies = "classification" in cls.tasks
        kind = "features" if method.teacher_taps else "logits" if classifies else "embeddings"
        if "causal-lm" in cls.tasks:
            kind = "next-token logits"
        # Without class labels (embeddings) there is no hard-label CE term for alpha to weigh.
        alpha = f"{cls.default_alpha:g}" if classifies or "causal-lm" in cls.tasks else "-"
        weight = f"{cls.default_weight:g}"
        if cls.paper_weight != cls.default_weight:
            weight += f" ({cls.paper_weight:g})"
        row = [f"`{name}`", _cell(cls.description), kind, _paper(cls.paper), alpha, weight]
        out.append("| " + " | ".join(row) + " |")
    return "\n".join(out) + "\n"


def students_markdown() -> str:
    """One row per registered student family, in registration order; "default for" names the
    input kinds whose size search tries this family first."""
    from edgekd.students import all_families, families_for

    out = [
        "| family | inputs | default for | depths searched | description |",
        "|---|---|---|---|---|",
    ]
    for f in all_families():
        default_for = [k for k in f.input_kinds if families_for(k)[0].name == f.name]
        row = [
            f"`{f.name}`",
            ", ".join(f.input_kinds),
            ", ".join(default_for) or "-",
            ", ".join(map(str, f.depths)),
            _cell(f.description),
        ]
        out.append("| " + " | ".join(row) + " |")
    return "\n".join(out) + "\n"


def _count(n: float) -> str:
    return f"{n / 1e6:g} M" if n >= 1e6 else f"{n / 1e3:g} k" if n >= 1e3 else f"{n:g}"


def _kilobytes(kb: float) -> str:
    return f"{kb / 1024:g} MB" if kb >= 1024 else f"{kb:g} KB"


def targets_markdown() -> str:
    """One row per shipped target profile (``targets/*.toml``) with its budget."""
    from edgekd.targets import list_targets

    out = [
        "| target | device | threads | precisions | latency | memory | file | params "
        "| accuracy drop |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in list_targets():
        b = p.budget
        name = f"`{p.name}`" + (f" ({', '.join(f'`{a}`' for a in p.aliases)})" if p.aliases else "")
        points = b.accuracy_drop * 100
        row = [
            name,
            _cell(p.description),
            str(p.threads),
            ", ".join(p.precisions),
            f"{b.latency_ms:g} ms",
            f"{b.peak_memory_mb:g} MB",
            _kilobytes(b.model_size_kb),
            _count(b.params),
            f"{points:g} point" + ("" if points == 1 else "s"),
        ]
        out.append("| " + " | ".join(row) + " |")
    return "\n".join(out) + "\n"


# Marker name -> what fills the block. README.md has every one of these.
BLOCKS: dict[str, Callable[[], str]] = {
    "cli": cli_reference_markdown,
    "methods": methods_markdown,
    "students": students_markdown,
    "targets": targets_markdown,
}


def replace_block(text: str, block: str, name: str = "cli") -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"README has no {begin} ... {end} block")
    return pattern.sub(lambda _m: f"{begin}\n{block}{end}", text)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [a for a in argv if not a.startswith("--")] or ["README.md"]
    path = Path(paths[0])
    text = new = path.read_text()
    stale = []
    for name, build in BLOCKS.items():
        before, new = new, replace_block(new, build(), name)
        if new != before:
            stale.append(name)
    if check:
        if stale:
            print(
                f"{path}: generated blocks out of date ({', '.join(stale)}); "
                f"run python -m edgekd.cli.docs {path}"
            )
            return 1
        return 0
    if new != text:
        path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
