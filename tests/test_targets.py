"""Target profiles: every shipped TOML loads; malformed profiles are refused naming file + field."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekd.errors import TargetError
from edgekd.targets import TARGETS_DIR, list_targets, load_target

SHIPPED = sorted(TARGETS_DIR.glob("*.toml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_profile_loads_with_positive_budget(path: Path) -> None:
    t = load_target(path.stem)
    assert t.name == path.stem
    assert t.threads >= 1 and t.batch_size >= 1
    b = t.budget
    assert b.latency_ms > 0 and b.peak_memory_mb > 0 and b.model_size_kb > 0 and b.params > 0
    assert 0 < b.accuracy_drop < 1
    assert t.device.fp32_gflops > 0 and t.device.memory_bandwidth_gbs > 0
    # Each profile cites where its figures come from.
    assert t.source and "#" in path.read_text().splitlines()[0]


def test_three_profiles_and_aliases() -> None:
    assert {t.name for t in list_targets()} >= {"mobile", "iot", "car"}
    assert load_target("phone").name == "mobile"
    assert load_target(str(SHIPPED[0])).name == SHIPPED[0].stem


GOOD = (TARGETS_DIR / "mobile.toml").read_text()


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "mine.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda s: s.replace("threads = 4", "threads = 4\ncolour = 'red'"), "colour"),
        (lambda s: s.replace("opset = 17\n", ""), "opset"),
        (lambda s: s.replace("threads = 4", "threads = 'four'"), "threads"),
        (lambda s: s.replace("latency_ms = 5.0", "latency_ms = -5.0"), "budget.latency_ms"),
        (lambda s: s.replace("params = 1000000", "params = 1.5"), "budget.params"),
        (
            lambda s: s.replace("memory_bandwidth_gbs = 25.0", "memory_bandwidh_gbs = 25.0"),
            "device.memory_bandwidh_gbs",
        ),
        (
            lambda s: s.replace('precisions = ["fp32", "int8"]', 'precisions = ["int3"]'),
            "precisions",
        ),
    ],
)
def test_malformed_profile_names_file_and_field(tmp_path: Path, edit, field: str) -> None:
    path = _write(tmp_path, edit(GOOD))
    with pytest.raises(TargetError) as err:
        load_target(path)
    message = str(err.value)
    assert str(path) in message and f"'{field}'" in message
    assert "\n" not in message


def test_unreadable_toml_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="not valid TOML"):
        load_target(_write(tmp_path, "name = [unclosed"))
    with pytest.raises(TargetError, match="unknown target 'watch'"):
        load_target("watch")
    with pytest.raises(TargetError, match="not found"):
        load_target(tmp_path / "absent.toml")
