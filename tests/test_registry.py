"""The one generic registry: register / get / all / names, the "unknown X (known: ...)" error,
and discovery of a package's public modules on first use (private ``_`` modules are not loaded)."""

from __future__ import annotations

import sys
import textwrap

import pytest

from edgekd.errors import BadInputError
from edgekd.registry import Registry


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """A package ``toyplugins`` whose modules register into ``toyplugins.REG`` when imported."""
    pkg = tmp_path / "toyplugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from edgekd.registry import Registry\nREG = Registry('toy plugin', __name__)\n"
    )
    for name in ("beta", "alpha", "_private"):
        (pkg / f"{name}.py").write_text(
            textwrap.dedent(
                f"""
                from toyplugins import REG
                REG.register({name!r}, {name.upper()!r})
                """
            )
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for mod in [m for m in sys.modules if m == "toyplugins" or m.startswith("toyplugins.")]:
        del sys.modules[mod]


def test_discovery_on_first_use_imports_public_modules_only(plugins):
    import toyplugins

    assert "toyplugins.alpha" not in sys.modules  # nothing imported before the first lookup
    assert toyplugins.REG.get("alpha") == "ALPHA"
    assert toyplugins.REG.all() == {"alpha": "ALPHA", "beta": "BETA"}  # in import order
    assert toyplugins.REG.names() == ["alpha", "beta"]
    assert "_private" not in toyplugins.REG and "toyplugins._private" not in sys.modules


def test_unknown_name_lists_the_known_ones(plugins):
    import toyplugins

    with pytest.raises(BadInputError, match=r"^unknown toy plugin 'gamma' \(known: alpha, beta\)$"):
        toyplugins.REG.get("gamma")


def test_register_returns_the_entry_and_all_is_a_copy(plugins):
    import toyplugins

    reg: Registry[str] = toyplugins.REG
    assert reg.register("gamma", "GAMMA") == "GAMMA"  # usable as a decorator's return value
    reg.all()["delta"] = "DELTA"
    assert reg.names() == ["alpha", "beta", "gamma"]


@pytest.mark.parametrize(
    ("module", "lookup", "kind"),
    [
        ("edgekd.distill.methods", "get_method", "method"),
        ("edgekd.distill.strategies", "get_strategy", "strategy"),
        ("edgekd.students", "get_family", "student family"),
        ("edgekd.runtimes", "get_runtime", "runtime"),
    ],
)
def test_every_registry_keeps_its_error_wording(module, lookup, kind):
    import importlib

    get = getattr(importlib.import_module(module), lookup)
    with pytest.raises(BadInputError, match=rf"^unknown {kind} 'nope' \(known: \w+"):
        get("nope")
