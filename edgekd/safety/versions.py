"""Warnings for installed libraries older than the release that fixed a model-loading advisory.

Each entry names the advisory and the first fixed release as published (GitHub advisory database
and the projects' own release notes). No ONNX Runtime entry: we found hardening of its external
data loading (microsoft/onnxruntime#26776, #28709) but no published advisory with a fixed release.
Versions are compared as numbers by hand because ``packaging`` is not a dependency of edgekd.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata


@dataclass(frozen=True)
class Advisory:
    package: str
    fixed: tuple[int, ...]
    ids: str
    summary: str


ADVISORIES: tuple[Advisory, ...] = (
    Advisory(
        "torch", (2, 6, 0), "CVE-2025-32434 (GHSA-53q9-r3pm-6pq6)",
        "torch.load(weights_only=True) can still run code from a crafted checkpoint",
    ),
    Advisory(
        "torch", (2, 10, 0), "CVE-2026-24747 (GHSA-63cw-57p8-fm3p)",
        "a crafted checkpoint can corrupt memory in the weights_only unpickler",
    ),
    Advisory(
        "onnx", (1, 16, 0),
        "CVE-2024-27318 (GHSA-whh8-fjgc-qp73), CVE-2024-27319 (GHSA-h8wv-9h96-m4hr)",
        "path traversal in external data loading; out-of-bounds read",
    ),
    Advisory(
        "onnx", (1, 21, 0),
        "CVE-2026-27489 (GHSA-3r9x-f23j-gc73), CVE-2026-34446 (GHSA-cmw6-hcpp-c6jp), "
        "CVE-2026-34447, CVE-2026-34445",
        "external data read through symbolic or hard links outside the model's folder; "
        "crafted external-data keys overwrite loader state",
    ),
)  # fmt: skip

_VERSION = re.compile(r"\s*v?(\d+(?:\.\d+)*)(.*)")
# a1, b2, rc1, .dev0, -alpha ... come before the release they name; "+cpu" or ".post1" do not.
_PRE_RELEASE = re.compile(
    r"[-_.]?(a|b|c|rc|alpha|beta|pre|preview|dev)\d*(?![a-z])", re.IGNORECASE
)


def check_versions() -> list[str]:
    """One message per advisory whose fix is newer than the installed package; [] when up to date.

    >>> for message in check_versions():  # doctest: +SKIP
    ...     log.warning(message)
    """
    messages: list[str] = []
    unparsable: set[str] = set()
    for advisory in ADVISORIES:
        installed = _installed_version(advisory.package)
        if installed is None or advisory.package in unparsable:
            continue
        parsed = parse_version(installed)
        if parsed is None:
            unparsable.add(advisory.package)
            messages.append(
                f"{advisory.package} {installed!r}: cannot read this version, so cannot tell "
                "whether known advisories are fixed"
            )
        elif is_older(parsed, advisory.fixed):
            fixed = ".".join(map(str, advisory.fixed))
            messages.append(
                f"{advisory.package} {installed} is older than {fixed}, which fixes "
                f"{advisory.ids}: {advisory.summary}; upgrade {advisory.package}"
            )
    return messages


def parse_version(text: str) -> tuple[tuple[int, ...], bool] | None:
    """``"2.6.0rc1+cpu"`` -> ``((2, 6, 0), True)``: the release numbers and "is a pre-release"."""
    match = _VERSION.fullmatch(text)
    if match is None:
        return None
    release = tuple(int(part) for part in match.group(1).split("."))
    return release, bool(_PRE_RELEASE.match(match.group(2)))


def is_older(version: tuple[tuple[int, ...], bool], fixed: tuple[int, ...]) -> bool:
    release, pre = version
    width = max(len(release), len(fixed))
    release = release + (0,) * (width - len(release))
    fixed = fixed + (0,) * (width - len(fixed))
    # 2.6.0rc1 is older than 2.6.0: the fix may have landed after the release candidate.
    return release < fixed or (release == fixed and pre)


def _installed_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
