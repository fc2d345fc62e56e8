"""Run the reliability drills (chaos, overload, bad input, fuzzing) and print their figures as
the table in docs/reliability.md.

    .venv/bin/python benchmarks/drills.py                 # the drill tests, ~1.5 minutes
    .venv/bin/python benchmarks/drills.py --fuzz 1000     # and schemathesis with 1000 examples
    .venv/bin/python benchmarks/drills.py --report DIR    # keep the JSON figures in DIR

Each drill test writes one JSON file (tests/fixtures/drill_report.py) into
``$STANDBY_DRILL_REPORT``; this script sets it, runs pytest and reads the files back.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TESTS = [
    "tests/gateway/test_chaos.py",
    "tests/gateway/test_fuzz.py",
    "tests/gateway/test_overload.py",
    "tests/gateway/test_capture_durability.py",
]


EXTRA = (
    "capture",
    "backends",
    "primary_calls",
    "p99_refused_ms",
    "stored_after_restart",
    "file_bytes",
    "traced_kib",
    "rss_mib",
    "open_fds",
    "exit_after_s",
    "captured",
)


def row(figures: dict[str, Any]) -> str:
    seen = []
    for key in EXTRA:
        if key in figures:
            seen.append(f"{key}: {json.dumps(figures[key], sort_keys=True)}")
    for name, values in (figures.get("metrics") or {}).items():
        if values:
            short = {k.replace('route="gemini-3.8-flash",', ""): v for k, v in values.items()}
            seen.append(f"{name} {json.dumps(short)}")
    tried = figures.get("tried", "")
    tried = json.dumps(tried) if not isinstance(tried, str) else tried
    cells = [
        figures.get("drill", "?"),
        tried,
        str(figures.get("requests", "")),
        str(figures.get("errors", "")),
        str(figures.get("p99_ms", "")),
        "; ".join(seen).replace("|", "/"),
    ]
    return "| " + " | ".join(cells)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report", help="folder for the JSON figures (default: a temporary one)")
    p.add_argument("--fuzz", type=int, default=60, help="schemathesis examples per operation")
    p.add_argument("tests", nargs="*", default=TESTS, help="test modules to run")
    args = p.parse_args(argv)
    folder = Path(args.report or tempfile.mkdtemp(prefix="standby-drills-"))
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, STANDBY_DRILL_REPORT=str(folder), STANDBY_FUZZ_EXAMPLES=str(args.fuzz))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args.tests],
        cwd=REPO,
        env=env,
        check=False,
    )
    print(f"\nfigures in {folder}\n")
    print("| drill | what was tried | requests | client errors | p99 ms | what the metrics showed")
    print("|---|---|--:|--:|--:|---")
    for path in sorted(folder.glob("*.json")):
        print(row(json.loads(path.read_text())))
    return run.returncode


if __name__ == "__main__":
    raise SystemExit(main())
