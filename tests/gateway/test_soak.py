"""The soak benchmark's CI version: 60 seconds at 20 req/s against ``standby serve`` (simulated
Gemini, tiny local Gemma fallback, capture to SQLite) with a primary outage in the middle. No
client error; the fallback answers the outage; open file descriptors and RSS stay flat."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.fixtures.drill_report import Record

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


def load_soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("standby_soak", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(240)
def test_soak_60_seconds(tmp_path: Path, tiny_model_dir: Path, drill_report: Record) -> None:
    soak = load_soak()
    result = soak.run_soak(rate=20, duration=60, sample_s=10, workdir=tmp_path,
                           tiny=tiny_model_dir)  # fmt: skip
    soak.print_tables(result)
    before, outage, after = result.phases
    assert result.errors == 0, result.error_bodies[:3]
    assert before.requests + outage.requests + after.requests == 20 * 60
    assert outage.fallback > outage.requests // 2  # the fallback answered the outage
    assert after.fallback < after.requests // 4  # and traffic went back to the primary
    first, last = result.samples[0], result.samples[-1]
    warm = max(s.rss_mib for s in result.samples[:2])
    assert last.open_fds - first.open_fds <= 20, result.samples
    assert last.rss_mib - warm < 150, result.samples
    drill_report(
        drill="soak (CI version)", tried="20 req/s, 60 s, primary 503 from 24 to 36 s",
        requests=20 * 60, errors=result.errors, p99_ms=max(p.row()["p99_ms"] for p in
                                                           result.phases),
        backends={"fallback": outage.fallback + after.fallback + before.fallback},
        rss_mib=[first.rss_mib, last.rss_mib], open_fds=[first.open_fds, last.open_fds],
    )  # fmt: skip
