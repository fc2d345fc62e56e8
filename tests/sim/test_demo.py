"""`standby demo` (the README's first command) tells the whole story end to end in a real
subprocess: traffic, a Gemini outage answered by the fallback, recovery, retraining, judging
(the simulated judge, chrF against Gemini's answers), promotion on merit (the held-out score
before training below the gate, after it above) and the gateway serving the promoted version,
then a one-step candidate the gate rejects; with ``--keep-running`` it keeps the gateway and
/metrics up until Ctrl-C and exits 0. A taken port is one line, not a traceback.

Measured on the 2-core machine (shared, loaded): ~30 s for the whole test (the story ~22 s);
the timeouts below are generous bounds, not speed assertions."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from standby.sim.background import free_port


def demo(*args: str) -> list[str]:
    return [sys.executable, "-m", "standby.cli", "demo", *args]


def summary_value(out: str, key: str) -> str:
    found = re.search(rf"^  {key}:\s+(.+)$", out, re.MULTILINE)
    assert found, f"no {key!r} in the summary:\n{out}"
    return found.group(1)


def score(text: str) -> float:
    """``precision 4.8, similarity 7.0 (...)`` -> 7.0 (similarity)."""
    found = re.search(r"similarity (\d+\.\d)", text)
    assert found, text
    return float(found.group(1))


def counted(text: str) -> dict[str, int]:
    """``gemini 37, gemma 13`` -> {"gemini": 37, "gemma": 13}."""
    return {k: int(v) for k, v in re.findall(r"([a-z_]+) (\d+)", text)}


@pytest.mark.timeout(300)
def test_demo_tells_the_whole_story_and_keeps_running(tmp_path: Path) -> None:
    port, sim_port = free_port(), free_port()

    # A taken port: one line naming the flag, exit 2, nothing started.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        refused = subprocess.run(
            demo("--port", str(port), "--sim-port", str(sim_port)),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert f"127.0.0.1:{port} is not free" in refused.stderr and "--port" in refused.stderr

    started = time.monotonic()
    log = (tmp_path / "stderr.log").open("w+")  # a file: a full pipe would stall the demo
    proc = subprocess.Popen(
        demo("--port", str(port), "--sim-port", str(sim_port), "--keep-running"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        for line in proc.stdout:  # the story, up to the keep-running instructions
            lines.append(line)
            if line.startswith("standby demo is up"):
                break
        story_s = time.monotonic() - started
        out = "".join(lines)
        assert "standby demo is up" in out, out
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        log.seek(0)
        err = log.read()
        log.close()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    print(f"demo story: {story_s:.1f} s")

    assert "SIMULATION" in out
    assert re.findall(r"^\[(\d)/7\]", out, re.MULTILINE) == list("1234567")
    by_backend = counted(summary_value(out, "requests by backend"))
    assert by_backend["gemini"] > 0 and by_backend["gemma"] > 0
    reasons = counted(summary_value(out, "failover reasons"))
    assert reasons.get("server_error", 0) > 0
    pairs = summary_value(out, "pairs captured")
    assert int(pairs.split()[0]) > 0, pairs
    # The fallback learned: its held-out score rose from below the demo's gate to above it.
    before, after = summary_value(out, "before training"), summary_value(out, "after training")
    rejected = summary_value(out, "one-step candidate")
    gate = re.search(r"similarity and precision >= (\d+) \(the demo's thresholds", out)
    assert gate, out
    threshold = float(gate.group(1))
    assert score(before) < threshold <= score(after), (before, after)
    assert "simulated judge" in before and "simulated judge; gate passed" in after
    # The one-step candidate did not, and the gate said so.
    assert score(rejected) < threshold and "gate failed, not promoted" in rejected
    assert re.search(r"^        mean similarity [\d.]+ < threshold", out, re.MULTILINE), out
    version = summary_value(out, "promoted version").split()[0]
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", version), version

    # The gateway stayed up and serves the promoted version; the state is the demo's own.
    assert re.search(
        rf'^standby_fallback_model_info{{.*version="{version}".*}} 1\.0$', metrics, re.MULTILINE
    ), metrics
    assert f"the gateway still serves {version}" in out
    assert "stopping" in rest
    assert (tmp_path / ".standby" / "tiny-gemma" / "config.json").is_file()
    assert (tmp_path / ".standby" / "demo" / "events.db").is_file()
    assert (tmp_path / ".standby" / "demo" / "pipeline" / "runs").is_dir()
    # The promoted version's model card and report say who judged it.
    run = tmp_path / ".standby" / "demo" / "pipeline" / "runs" / version
    card = json.loads((run / "adapter" / "standby-model.json").read_text())
    assert card["evaluation"]["judge"].startswith("simulated judge (gemini/"), card["evaluation"]
    assert "- **simulated judge**:" in (run / "evaluation" / "report.md").read_text()
    # Both runs' reports with their plots, named in the output; the rejected candidate's was
    # compared with the version then serving (the interval against the margin).
    pages = re.findall(r"report with plots(?:, against the serving version)?: (\S+)$", out, re.M)
    assert len(pages) == 2, out
    promoted, rejected_page = ((tmp_path / p).read_text() for p in pages)
    assert pages[0].endswith(f"/runs/{version}/evaluation/report.html"), pages
    assert '<figure id="fig-scores">' in promoted and 'id="fig-difference"' not in promoted
    assert '<figure id="fig-difference">' in rejected_page and "FAIL" in rejected_page
