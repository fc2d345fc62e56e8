"""Soak: a steady request rate against ``standby serve`` (simulated Gemini primary, the tiny local
Gemma as fallback, capture to SQLite) for a long time, with a primary outage in the middle.
Records client errors, p50/p99 per phase, and the gateway's RSS and open file descriptors
every ``--sample-s``; prints tables (docs/reliability.md keeps the figures).

    .venv/bin/python benchmarks/soak.py                          # 50 req/s for 20 minutes
    .venv/bin/python benchmarks/soak.py --rate 20 --duration 60  # the CI version's shape
    .venv/bin/python benchmarks/soak.py --json soak.json         # also write the figures

The outage (``--outage-fault``, default ``error-503``) covers the middle fifth of the run.
Not a test (tests/gateway/test_soak.py runs a 60-second version): numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

ROUTE = "gemini-3.8-flash"
BODY = {"model": ROUTE, "messages": [{"role": "user", "content": "Soak test: are you there?"}]}


@dataclass
class Sample:
    t_s: float
    rss_mib: float
    open_fds: int
    requests: int
    errors: int


@dataclass
class Phase:
    name: str
    requests: int = 0
    errors: int = 0
    fallback: int = 0
    latencies: list[float] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {
            "phase": self.name,
            "requests": self.requests,
            "errors": self.errors,
            "fallback": self.fallback,
            "p50_ms": percentile(self.latencies, 50),
            "p99_ms": percentile(self.latencies, 99),
        }


@dataclass
class SoakResult:
    rate: float
    duration_s: float
    outage: tuple[float, float]
    phases: list[Phase]
    samples: list[Sample]
    error_bodies: list[str]

    @property
    def errors(self) -> int:
        return sum(p.errors for p in self.phases)

    def figures(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "duration_s": self.duration_s,
            "outage_s": list(self.outage),
            "phases": [p.row() for p in self.phases],
            "samples": [asdict(s) for s in self.samples],
            "error_bodies": self.error_bodies[:5],
        }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] * 1000, 1)


def free_port() -> int:
    from standby.sim.background import free_port as free

    return free()


def process_figures(pid: int) -> tuple[float, int]:
    """RSS in MiB and the number of open file descriptors of ``pid`` (Linux /proc)."""
    rss_kib = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kib = int(line.split()[1])
    return round(rss_kib / 1024, 1), len(os.listdir(f"/proc/{pid}/fd"))


def wait_healthy(url: str, proc: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become healthy")


def gateway_config(sim_url: str, tiny: Path, port: int, workdir: Path) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": port, "api_keys": []},
        "backends": {
            "gemini": {
                "type": "gemini",
                "model": ROUTE,
                "api_key": "sim-key",
                "base_url": sim_url,
                "timeouts": {"connect_s": 1, "first_token_s": 2, "idle_s": 2, "total_s": 4},
            },
            "gemma": {
                "type": "local",
                "model": str(tiny),
                "max_new_tokens": 16,
                "threads": 1,
                "max_queue": 256,
                "timeouts": {"connect_s": 1, "first_token_s": 20, "idle_s": 20, "total_s": 60},
            },
        },
        "routes": {ROUTE: ["gemini", "gemma"]},
        "breaker": {"failures": 3, "cooldown_s": 2, "window_s": 30},
        "capture": {"enabled": True, "bus": f"sqlite:///{workdir / 'events.db'}"},
    }


async def drive(
    url: str,
    sim_url: str,
    pid: int,
    rate: float,
    duration: float,
    outage: tuple[float, float],
    fault: str,
    sample_s: float,
) -> SoakResult:
    """Open-loop load: request i starts at ``i / rate`` seconds whatever the others do."""
    phases = {name: Phase(name) for name in ("before outage", "outage", "after outage")}
    samples: list[Sample] = []
    error_bodies: list[str] = []
    done = {"requests": 0, "errors": 0}
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=128)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def one(at: float) -> None:
            phase = phases[
                "before outage"
                if at < outage[0]
                else "outage"
                if at < outage[1]
                else "after outage"
            ]
            t0 = time.perf_counter()
            try:
                r = await client.post("/v1/chat/completions", json=BODY)
                ok = r.status_code == 200
                if not ok:
                    error_bodies.append(f"{r.status_code} {r.text[:300]}")
                elif r.headers.get("x-standby-backend") != "gemini":
                    phase.fallback += 1
            except httpx.HTTPError as e:
                ok = False
                error_bodies.append(f"{type(e).__name__}: {e}")
            phase.latencies.append(time.perf_counter() - t0)
            phase.requests += 1
            done["requests"] += 1
            if not ok:
                phase.errors += 1
                done["errors"] += 1

        async def sampler(t_start: float) -> None:
            while True:
                rss, fds = process_figures(pid)
                samples.append(
                    Sample(
                        round(time.monotonic() - t_start, 1),
                        rss,
                        fds,
                        done["requests"],
                        done["errors"],
                    )
                )
                await asyncio.sleep(sample_s)

        async def set_fault(spec: str) -> None:
            r = await client.post(f"{sim_url}/_sim/fault", json={"fault": spec})
            r.raise_for_status()

        t_start = time.monotonic()
        sampling = asyncio.create_task(sampler(t_start))
        tasks: set[asyncio.Task[None]] = set()
        faulted = restored = False
        i = 0
        while (at := i / rate) < duration:
            now = time.monotonic() - t_start
            if not faulted and now >= outage[0]:
                await set_fault(fault)
                faulted = True
            if faulted and not restored and now >= outage[1]:
                await set_fault("ok")
                restored = True
            if at > now:
                await asyncio.sleep(at - now)
            task = asyncio.create_task(one(at))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.wait(tasks)
        if not restored:
            await set_fault("ok")
        sampling.cancel()
        rss, fds = process_figures(pid)
        samples.append(
            Sample(round(time.monotonic() - t_start, 1), rss, fds, done["requests"], done["errors"])
        )
    return SoakResult(rate, duration, outage, list(phases.values()), samples, error_bodies)


def run_soak(
    rate: float = 50,
    duration: float = 1200,
    sample_s: float = 60,
    fault: str = "error-503",
    workdir: Path | None = None,
    tiny: Path | None = None,
) -> SoakResult:
    """Start the simulator and ``standby serve``, drive them, stop them; the figures."""
    from standby.sim.tiny_model import build_tiny_gemma

    work = Path(workdir or tempfile.mkdtemp(prefix="standby-soak-"))
    tiny = tiny or build_tiny_gemma(work / "tiny-gemma", seed=0)
    sim_port, gw_port = free_port(), free_port()
    sim_url, url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{gw_port}"
    config = work / "standby.yaml"
    config.write_text(yaml.safe_dump(gateway_config(sim_url, tiny, gw_port, work)))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    cli = [sys.executable, "-m", "standby.cli", "--log-level", "warning"]
    logs = (work / "sim.log").open("wb"), (work / "gateway.log").open("wb")
    sim = subprocess.Popen(
        [*cli, "sim", "gemini", "--port", str(sim_port)],
        stdout=logs[0],
        stderr=subprocess.STDOUT,
        env=env,
    )
    gateway = subprocess.Popen(
        [*cli, "serve", "--config", str(config)], stdout=logs[1], stderr=subprocess.STDOUT, env=env
    )
    try:
        wait_healthy(sim_url, sim)
        wait_healthy(url, gateway)
        outage = (round(duration * 0.4, 1), round(duration * 0.6, 1))
        return asyncio.run(
            drive(url, sim_url, gateway.pid, rate, duration, outage, fault, sample_s)
        )
    finally:
        for proc in (gateway, sim):
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for log in logs:
            log.close()


def print_tables(result: SoakResult) -> None:
    print(
        f"\nsoak: {result.rate:g} req/s for {result.duration_s:g} s, primary outage "
        f"{result.outage[0]:g}-{result.outage[1]:g} s\n"
    )
    print("| phase | requests | errors | answered by fallback | p50 ms | p99 ms |")
    print("|---|--:|--:|--:|--:|--:|")
    for phase in result.phases:
        r = phase.row()
        print(
            f"| {r['phase']} | {r['requests']} | {r['errors']} | {r['fallback']} "
            f"| {r['p50_ms']} | {r['p99_ms']} |"
        )
    print("\n| t (s) | RSS MiB | open fds | requests | errors |")
    print("|--:|--:|--:|--:|--:|")
    for s in result.samples:
        print(f"| {s.t_s:g} | {s.rss_mib:g} | {s.open_fds} | {s.requests} | {s.errors} |")
    for body in result.error_bodies[:5]:
        print(f"error: {body}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=50, help="requests per second (default 50)")
    p.add_argument("--duration", type=float, default=1200, help="seconds (default 1200)")
    p.add_argument("--sample-s", type=float, default=60, help="RSS/fd sample interval")
    p.add_argument("--outage-fault", default="error-503", help="the primary's fault mid-run")
    p.add_argument("--json", help="write the figures to this file")
    args = p.parse_args(argv)
    result = run_soak(args.rate, args.duration, args.sample_s, args.outage_fault)
    print_tables(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result.figures(), indent=1))
    return 1 if result.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
