"""Attacks that need no key, against ``standby serve`` in its own process (issue #19 items 1
and 9): connections sending header lines without end (the blank line never comes), slow-loris
connections sending a header byte a second, and floods of cheap requests (a 401, ``/metrics``,
``/healthz``). Prints the gateway's RSS before and at its peak during the header flood, how many
slow connections are still open after a while, and the gateway's CPU per request of each flood
(from /proc); docs/reliability.md keeps the figures.

    .venv/bin/python benchmarks/before_auth.py                 # the default limits
    .venv/bin/python benchmarks/before_auth.py --no-limits     # head limits set out of reach

``--no-limits`` sets ``server.max_header_bytes``, ``max_headers`` and ``header_timeout_s`` far
beyond the attack (the gateway as it was before the limits). The gateway's only backend is an
address nothing listens on: no request gets that far. Not a test
(tests/gateway/test_header_limits.py is): numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HEADER_LINES = "".join(f"x-flood-{i}: {'f' * 1000}\r\n" for i in range(1024)).encode()  # ~1 MiB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def start_gateway(workdir: Path, port: int, no_limits: bool) -> subprocess.Popen[bytes]:
    server: dict[str, Any] = {"host": "127.0.0.1", "port": port, "api_keys": ["bench-key"]}
    if no_limits:
        server.update(max_header_bytes=1 << 40, max_headers=10**9, header_timeout_s=10**6)
    config = {
        "server": server,
        "backends": {
            "gemini": {
                "type": "gemini",
                "model": "m",
                "api_key": "x",
                "base_url": "http://127.0.0.1:9",
            }
        },
        "routes": {"m": ["gemini"]},
        "capture": {"enabled": False},
    }
    path = workdir / "standby.yaml"
    path.write_text(json.dumps(config))
    cmd = [sys.executable, "-m", "standby.cli", "serve", "--config", str(path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the gateway did not start within 60 s")


def header_flood(port: int, pid: int, connections: int, mib: int) -> dict[str, Any]:
    """``connections`` sockets each send a request line, then up to ``mib`` MiB of header lines."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
    sent = [0] * connections

    def flood(i: int) -> None:
        try:
            socks[i].sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            while sent[i] < mib << 20:
                socks[i].sendall(HEADER_LINES)
                sent[i] += len(HEADER_LINES)
        except OSError:  # reset or broken pipe: the gateway closed the connection
            pass

    before = peak = rss_mib(pid)
    t0 = time.monotonic()
    threads = [threading.Thread(target=flood, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_mib(pid))
        time.sleep(0.02)
    elapsed = time.monotonic() - t0
    peak = max(peak, rss_mib(pid))  # the connections are still open
    for s in socks:
        s.close()
    return {
        "sent_mib": [round(n / (1 << 20), 1) for n in sent],
        "rss_before_mib": round(before),
        "rss_peak_mib": round(peak),
        "seconds": round(elapsed, 1),
    }


def slow_loris(port: int, connections: int, seconds: float) -> dict[str, Any]:
    """``connections`` sockets send a request line, then a header byte a second."""
    socks = []
    for _ in range(connections):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ")
        socks.append(s)
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for s in socks:
            with contextlib.suppress(OSError):
                s.sendall(b"s")
        time.sleep(1)
    still_open = refused_408 = 0
    for s in socks:
        s.setblocking(False)
        try:
            data = s.recv(65536)
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
        else:
            refused_408 += data.startswith(b"HTTP/1.1 408")
        s.close()
    return {
        "connections": connections,
        "after_s": seconds,
        "open": still_open,
        "got_408": refused_408,
    }


FLOODS = {
    "401": b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    b"content-length: 2\r\n\r\n{}",
    "/metrics": b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n",
    "/healthz": b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n",
}


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def requests_back_to_back(port: int, request: bytes, n: int) -> None:
    """``n`` requests on one kept-alive connection, each answer read whole."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        for _ in range(n):
            s.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                data += s.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.lower().split(b"\r\n")
            length = int(next(x for x in lines if x.startswith(b"content-length")).split(b":")[1])
            while len(body) < length:
                body += s.recv(65536)


def flood_cpu(port: int, pid: int, connections: int, per_connection: int) -> dict[str, int]:
    """The gateway's CPU microseconds per request of each flood in ``FLOODS``."""
    figures = {}
    for name, request in FLOODS.items():
        requests_back_to_back(port, request, 50)  # warm
        before = cpu_s(pid)
        threads = [
            threading.Thread(target=requests_back_to_back, args=(port, request, per_connection))
            for _ in range(connections)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        figures[name] = round((cpu_s(pid) - before) / (connections * per_connection) * 1e6)
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-limits", action="store_true", help="limits set out of reach")
    p.add_argument("--connections", type=int, default=4, help="header-flood connections")
    p.add_argument("--mib", type=int, default=128, help="MiB of header lines per connection")
    p.add_argument("--loris", type=int, default=300, help="slow-loris connections")
    p.add_argument("--loris-s", type=float, default=20, help="how long they send")
    p.add_argument("--floods", type=int, default=2000, help="requests per flood (4 connections)")
    args = p.parse_args(argv)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        gateway = start_gateway(Path(tmp), port, args.no_limits)
        try:
            time.sleep(0.5)
            flood = header_flood(port, gateway.pid, args.connections, args.mib)
            loris = slow_loris(port, args.loris, args.loris_s)
            cpu = flood_cpu(port, gateway.pid, 4, args.floods // 4)
        finally:
            gateway.terminate()
            gateway.wait(30)
    limits = "out of reach" if args.no_limits else "defaults"
    print(
        f"limits {limits}: header flood {args.connections} x {args.mib} MiB: sent "
        f"{flood['sent_mib']} MiB, gateway RSS {flood['rss_before_mib']} -> peak "
        f"{flood['rss_peak_mib']} MiB in {flood['seconds']} s"
    )
    print(
        f"limits {limits}: slow loris: {loris['open']} of {loris['connections']} connections "
        f"open after {loris['after_s']:g} s ({loris['got_408']} got 408)"
    )
    for name, us in cpu.items():
        print(f"flood of {name}: {us} us of gateway CPU per request")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
