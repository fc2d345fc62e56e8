"""A PNG of an evaluation's ``report.html`` as headless Chromium draws it (Debian's
``chromium``), offline: the screenshot in ``docs/images/``.

    make demo
    .venv/bin/python scripts/screenshot_report.py \\
        "$(ls -d .standby/demo/pipeline/runs/*/ | tail -1)evaluation/report.html" \\
        docs/images/evaluation-report.png

(the demo's last run is the one-step candidate, compared with the version then serving).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def screenshot(page: Path, out: Path, width: int, height: int) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("screenshot_report: chromium is missing (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--disable-gpu",
                "--no-sandbox",
                "--no-first-run",
                "--hide-scrollbars",
                "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: what the page carries
                f"--user-data-dir={profile}",
                f"--screenshot={out.resolve()}",
                f"--window-size={width},{height}",
                page.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="an evaluation's report.html")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args()
    if not args.report.is_file():
        sys.exit(f"screenshot_report: {args.report}: not found")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    screenshot(args.report, args.out, args.width, args.height)
    print(args.out)


if __name__ == "__main__":
    main()
