"""`standby demo` (the README's first command) really serves, fails over and stops cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from standby.sim.background import free_port

BODY = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "Hello!"}]}


def test_demo_serves_fails_over_and_captures(tmp_path: Path) -> None:
    port, sim_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "standby.cli", "demo", "--port", str(port),
         "--sim-port", str(sim_port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base, sim = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{sim_port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise AssertionError("the demo did not become ready")
        first = httpx.post(f"{base}/v1/chat/completions", json=BODY, timeout=30)
        assert first.headers["x-standby-backend"] == "gemini"
        assert httpx.post(f"{sim}/_sim/fault", json={"fault": "error-503"}).status_code == 200
        second = httpx.post(f"{base}/v1/chat/completions", json=BODY, timeout=60)
        assert second.status_code == 200
        assert second.headers["x-standby-backend"] == "gemma"
        assert second.headers["x-standby-fallback-reason"] == "server_error"
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "standby demo is up" in out
    assert (tmp_path / ".standby" / "tiny-gemma" / "config.json").is_file()
    assert (tmp_path / ".standby" / "events.db").is_file()
    assert "Traceback" not in out
