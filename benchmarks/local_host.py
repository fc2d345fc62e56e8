"""What serving the local fallback from one model process costs and saves under ``standby serve
--workers 2`` (the tiny random-weight Gemma of ``standby/sim``, on the CPU).

Three gateways run side by side, each with one route to the local backend alone:

    inproc-a  ``--workers 1``: the model in the gateway's process (no hop)
    hosted    ``--workers 2``: a supervisor, 2 workers and the host's one model process; each
              request crosses the unix socket to the model process and back
    inproc-b  ``--workers 1`` again: the A/A control for inproc-a

Memory: the resident set of every process of each gateway after warm-up. What ``--workers 2``
would take with a copy of the model in each worker is estimated as the supervisor plus twice
an in-process gateway (each worker would be one, model included).

Cost per request: ``--requests`` whole answers of ``--max-tokens`` tokens, ``--concurrency`` at a
time, to one gateway, then the next, in rounds of rotating order (so drift in machine speed
cancels). CPU is every process of the gateway under test (``psutil``: user + system), divided
by the requests; latency is each request's wall time at the client (httpx, one connection per
client task).

    .venv/bin/python benchmarks/local_host.py                    # 7 rounds of 200 requests
    .venv/bin/python benchmarks/local_host.py --rounds 3 --requests 100 --concurrency 4

Not a test: numbers depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import yaml

from standby.sim.background import free_port
from standby.sim.tiny_model import build_tiny_gemma

ROUTE = "local"


class Gateway:
    def __init__(self, name: str, model: Path, workers: int, work: Path, batch: int) -> None:
        self.name = name
        self.port = free_port()
        config = {
            "server": {"host": "127.0.0.1", "port": self.port, "api_keys": []},
            "backends": {
                "gemma": {
                    "type": "local",
                    "model": str(model),
                    "max_new_tokens": 64,
                    "threads": 1,
                    "max_queue": 256,
                    "max_batch_size": batch,
                }
            },
            "routes": {ROUTE: ["gemma"]},
            "capture": {"enabled": False},
        }
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.log = (work / f"{name}.log").open("wb")
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "standby.cli", "--log-level", "warning", "serve"),
                *("--config", str(path), "--workers", str(workers)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait(self, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.name} exited"
            with contextlib.suppress(httpx.HTTPError):
                body = {"model": ROUTE, "messages": [{"role": "user", "content": "hi"}]}
                if httpx.post(f"{self.url}/v1/chat/completions", json=body).status_code == 200:
                    return
            time.sleep(0.5)
        raise SystemExit(f"{self.name} did not start")

    def processes(self) -> list[psutil.Process]:
        root = psutil.Process(self.proc.pid)
        found = [root, *root.children(recursive=True)]
        # multiprocessing's resource tracker: a bystander of ~10 MB, not part of serving
        return [p for p in found if "resource_tracker" not in " ".join(p.cmdline())]

    def cpu(self) -> dict[int, tuple[str, float]]:
        """Each process's kind and CPU seconds so far."""
        out = {}
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                out[p.pid] = (self.kind(p), t.user + t.system)
        return out

    def kind(self, p: psutil.Process) -> str:
        if p.pid == self.proc.pid:
            return "supervisor" if self.name == "hosted" else "gateway"
        if "spawn_main" in " ".join(p.cmdline()):
            maps = " ".join(m.path for m in p.memory_maps())
            return "model host" if "libtorch" in maps else "worker"
        return "other"

    def rss(self) -> list[tuple[str, float]]:
        return [(self.kind(p), p.memory_info().rss / 2**20) for p in self.processes()]

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(60)
        self.log.close()


async def load(url: str, requests: int, concurrency: int, max_tokens: int) -> list[float]:
    body = {
        "model": ROUTE,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    latencies: list[float] = []
    left = iter(range(requests))

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            for _ in left:
                began = time.perf_counter()
                r = await http.post("/v1/chat/completions", json=body)
                latencies.append(time.perf_counter() - began)
                assert r.status_code == 200, r.text

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies


def run_round(gw: Gateway, args: argparse.Namespace) -> tuple[float, float, dict[str, float]]:
    """CPU ms per request (every process of ``gw``), the median latency in ms, and the CPU ms
    per request of each kind of process."""
    before = gw.cpu()
    lat = asyncio.run(load(gw.url, args.requests, args.concurrency, args.max_tokens))
    after = gw.cpu()
    kinds: dict[str, float] = {}
    for pid, (kind, seconds) in after.items():
        if pid in before:
            kinds[kind] = kinds.get(kind, 0.0) + (seconds - before[pid][1]) / args.requests * 1000
    return sum(kinds.values()), statistics.median(lat) * 1000, kinds


@contextlib.contextmanager
def gateways(model: Path, work: Path, batch: int) -> Iterator[list[Gateway]]:
    gws = [
        Gateway("inproc-a", model, 1, work, batch),
        Gateway("hosted", model, 2, work, batch),
        Gateway("inproc-b", model, 1, work, batch),
    ]
    try:
        for gw in gws:
            gw.wait()
        yield gws
    finally:
        for gw in gws:
            gw.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--max-batch-size", type=int, default=8, help="the local backend's")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="standby-bench-") as tmp:
        work = Path(tmp)
        model = build_tiny_gemma(work / "tiny-gemma", seed=0)
        with gateways(model, work, args.max_batch_size) as gws:
            for gw in gws:  # warm-up: every worker and the model's first batches
                run_round(gw, argparse.Namespace(**{**vars(args), "requests": 40}))
            print("## Resident memory after warm-up (MiB)")
            totals = {}
            for gw in gws:
                rows = gw.rss()
                totals[gw.name] = sum(r for _, r in rows)
                parts = ", ".join(f"{k} {r:.0f}" for k, r in sorted(rows))
                print(f"{gw.name:9s} total {totals[gw.name]:7.0f}  ({parts})")
            supervisor = sum(r for k, r in gws[1].rss() if k == "supervisor")
            copies = supervisor + 2 * totals["inproc-a"]
            print(
                f"--workers 2 with a model copy per worker (supervisor + 2 x inproc-a): "
                f"{copies:.0f} MiB; with the model process: {totals['hosted']:.0f} MiB "
                f"({totals['hosted'] / copies:.2f}x)"
            )
            print(
                f"\n## {args.rounds} rounds x {args.requests} requests, c={args.concurrency}, "
                f"max_tokens {args.max_tokens}, max_batch_size {args.max_batch_size}"
            )
            results: dict[str, list[tuple[float, float, dict[str, float]]]] = {
                gw.name: [] for gw in gws
            }
            for r in range(args.rounds):
                order = gws[r % 3 :] + gws[: r % 3]
                for gw in order:
                    results[gw.name].append(run_round(gw, args))
            print(f"{'gateway':9s} {'CPU ms/req (median, min)':>26s} {'latency ms p50':>16s}")
            med = {}
            for name, runs in results.items():
                cpu = [c for c, _, _ in runs]
                med[name] = statistics.median(cpu)
                lat = statistics.median(la for _, la, _ in runs)
                split = {k: statistics.median(r[2].get(k, 0.0) for r in runs) for k in runs[0][2]}
                parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(split.items()))
                print(f"{name:9s} {med[name]:17.2f} {min(cpu):8.2f} {lat:16.2f}   ({parts})")
            inproc = statistics.mean([med["inproc-a"], med["inproc-b"]])
            print(
                f"hosted / inproc-a CPU: {med['hosted'] / med['inproc-a']:.2f}; "
                f"A/A inproc-b / inproc-a: {med['inproc-b'] / med['inproc-a']:.2f}; "
                f"hosted - in-process: {med['hosted'] - inproc:.2f} ms CPU per request"
            )
            print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
