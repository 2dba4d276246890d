"""Reproduce every table and figure in README.md: runs each benchmark script in turn.

    python benchmarks/run_all.py                 # everything, README settings
    python benchmarks/run_all.py --only quantization gate_reliability
    python benchmarks/run_all.py --out bench-results

Each script's output goes to OUT/<script>.txt and a summary (seconds per script, exit code, host)
to OUT/summary.json. Scripts are discovered from this folder, so a new benchmark is included
without editing this file; the settings that README's tables used are in README_ARGS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# The arguments each README table was produced with (defaults where absent).
README_ARGS: dict[str, list[str]] = {
    "methods": ["--seeds", "5", "--strategies"],
}


def discover() -> list[str]:
    return sorted(
        p.stem for p in HERE.glob("*.py") if p.stem != "run_all" and not p.stem.startswith("_")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-results", help="folder for the outputs")
    parser.add_argument("--only", nargs="*", help="run only these scripts (names without .py)")
    args = parser.parse_args(argv)
    names = args.only or discover()
    unknown = sorted(set(names) - set(discover()))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)} (known: {', '.join(discover())})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    from edgekd.hostinfo import host_info

    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEKD_NO_PROGRESS": "1"}
    summary = {"host": host_info(), "scripts": {}}
    total = time.perf_counter()
    for name in names:
        cmd = [sys.executable, str(HERE / f"{name}.py"), *README_ARGS.get(name, [])]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        with open(out / f"{name}.txt", "w") as log:
            code = subprocess.run(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            ).returncode
        seconds = round(time.perf_counter() - start, 1)
        summary["scripts"][name] = {
            "seconds": seconds,
            "exit_code": code,
            "args": README_ARGS.get(name, []),
        }
        print(f"   {seconds:.0f} s, exit {code}, output in {out / (name + '.txt')}", flush=True)
    summary["total_seconds"] = round(time.perf_counter() - total, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    failed = [n for n, r in summary["scripts"].items() if r["exit_code"] != 0]
    print(f"total {summary['total_seconds']:.0f} s; failed: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
