"""The layout's safety net: every module and benchmark script imports, and the public surface
(the lazy verbs, ``edgekd.losses``, the console entry, the ``-m`` targets) stays where users
and child processes look for it."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import edgekd

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))


def _all_modules() -> list[str]:
    names = ["edgekd"]
    for info in pkgutil.walk_packages(edgekd.__path__, "edgekd."):
        if not info.name.endswith(".__main__"):  # runs the CLI; checked by its own test below
            names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _all_modules())
def test_every_module_imports(name: str) -> None:
    importlib.import_module(name)


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_every_benchmark_script_imports(path: Path) -> None:
    """Scripts guard their work with ``__main__``; importing them checks every import they make,
    so moving a module cannot silently break a benchmark."""
    spec = importlib.util.spec_from_file_location(f"_bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))


def test_public_verbs_resolve() -> None:
    assert set(edgekd.__all__) == {
        "load_target",
        "DistillConfig",
        "distill",
        "export_onnx",
        "quantize",
        "load_data",
        "benchmark",
        "gate",
        "size_student_to_budget",
    }
    for name in edgekd.__all__:
        assert getattr(edgekd, name) is not None, name


def test_losses_public_names() -> None:
    losses = importlib.import_module("edgekd.losses")
    # the published names stay; a new method adds its own
    assert set(losses.__all__) >= {"at", "dkd", "fitnet", "kd", "mse_logits", "pkt", "rkd", "sp"}
    for name in losses.__all__:
        assert callable(getattr(losses, name)), name


def test_console_entry_and_module_entry() -> None:
    from edgekd.cli import main

    assert callable(main)
    out = subprocess.run(
        [sys.executable, "-m", "edgekd", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "distill" in out.stdout


def test_verbs_win_over_stage_packages_of_the_same_name() -> None:
    """``edgekd.distill``/``gate``/``quantize`` stay callable after their packages are imported."""
    for name in ("edgekd.distill.job", "edgekd.gate", "edgekd.quantize"):
        importlib.import_module(name)
    assert callable(edgekd.distill) and callable(edgekd.gate) and callable(edgekd.quantize)
    assert edgekd.gate.__name__ == "gate" and edgekd.distill.__module__ == "edgekd.pipeline"


def _import_graph() -> dict[str, set[str]]:
    """Module -> the edgekd modules it imports, read with ``ast`` (imports inside functions
    count: a lazy import still ties two modules together)."""
    import ast

    files = {}
    for path in (ROOT / "edgekd").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        files[name] = path

    def resolve(dotted: str) -> str | None:
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in files:
                return ".".join(parts[:i])
        return None

    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                continue
            for target in targets:
                found = resolve(target) if target.startswith("edgekd") else None
                if found and found != name:
                    graph[name].add(found)
    return graph


def test_no_import_cycles() -> None:
    """Imports run one way, from the CLI down to the ground floor (ARCHITECTURE.md)."""
    graph, cycles = _import_graph(), []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


@pytest.mark.parametrize(
    "call, room", [("InferenceSession", "edgekd/runtimes"), ("onnx.export", "edgekd/export")]
)
def test_one_place_opens_sessions_and_one_place_traces(call: str, room: str) -> None:
    """ONNX Runtime sessions are opened only in runtimes/, models traced only in export/."""
    import ast

    offenders = []
    for path in (ROOT / "edgekd").rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith(call):
                if not rel.startswith(room):
                    offenders.append(f"{rel}:{node.lineno}")
    assert not offenders, f"{call} outside {room}: {offenders}"
