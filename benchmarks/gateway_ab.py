"""A/B of two versions of the gateway on this machine, with an A/A control.

Starts one simulated Gemini and three ``standby serve`` gateways with capture on: ``old`` runs
the code of another checkout (``--old DIR``, e.g. ``git worktree add /tmp/old <commit>``), ``new``
and ``new2`` this one. Short ``wrk`` runs alternate between the three in every order (so
position and carry-over are balanced), and it prints, per mode and concurrency, the req/s ratio
new/old beside the A/A ratio new2/new, and each gateway's CPU per request (median of runs).
A difference smaller than the A/A control's distance from 1 is noise.

    git worktree add /tmp/old 0dba004
    .venv/bin/python benchmarks/gateway_ab.py --old /tmp/old --rounds 12
    .venv/bin/python benchmarks/gateway_ab.py --old /tmp/old --modes responses,responses-stream

The modes are ``gateway_overhead.py``'s: ``non-stream``, ``stream``, ``tools`` on chat, and
``responses``, ``responses-stream`` on ``POST /v1/responses`` (``store`` at its default, true:
each answer is also kept in the gateway's bus file).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import gateway_overhead as g

ARMS = ("old", "new", "new2")
SERVE = "import sys; from standby.cli import main; sys.argv = ['standby', *sys.argv[1:]]; main()"


def start(
    procs: g.Procs, old: Path, sim_port: int, workers: dict[str, int]
) -> dict[str, tuple[g.Proc, str]]:
    """The three gateways, each importing standby from its own checkout (PYTHONPATH first),
    each with its count of ``workers``."""
    arms: dict[str, tuple[g.Proc, str]] = {}
    for name in ARMS:
        source = old if name == "old" else g.REPO
        port = g.free_port()
        config = procs.workdir / f"{name}.yaml"
        bus = f'{{enabled: true, bus: "sqlite:///{procs.workdir}/{name}.db"}}'
        config.write_text(g.standby_yaml(port, sim_port, bus))
        argv = [sys.executable, "-c", SERVE, "serve", "--config", str(config)]
        argv += ["--workers", str(workers[name])]
        proc = procs.start(name, argv, env={"PYTHONPATH": str(source)})
        arms[name] = (proc, f"http://127.0.0.1:{port}")
    for name, (proc, base) in arms.items():
        why = g.wait_ready(proc, f"{base}/readyz", 90)
        if why is not None:
            raise SystemExit(f"error: gateway {name} did not start: {why} ({proc.log_tail()})")
    return arms


def url(base: str, mode: str) -> str:
    """The mode's endpoint: chat completions, or ``POST /v1/responses``."""
    return g.url_for(f"{base}/v1/chat/completions", mode)


def compare(
    arms: dict[str, tuple[g.Proc, str]],
    mode: str,
    script: Path,
    conc: int,
    rounds: int,
    seconds: int,
) -> str:
    """``rounds`` runs of each gateway, the order rotating through every permutation."""
    rps: dict[str, list[float]] = {n: [] for n in ARMS}
    cpu: dict[str, list[float]] = {n: [] for n in ARMS}
    orders = list(itertools.permutations(ARMS))
    for r in range(rounds):
        for name in orders[r % len(orders)]:
            proc, base = arms[name]
            before = g.group_cpu_s(proc.pgid)
            got = g.run_wrk(url(base, mode), script, conc, seconds, False)
            used = g.group_cpu_s(proc.pgid) - before
            if got["non2xx"] or got["bad"]:
                raise SystemExit(f"error: {name} answered badly: {got}")
            rps[name].append(got["requests"] / (got["duration_us"] / 1e6))
            cpu[name].append(used * 1000 / max(got["requests"], 1))
            time.sleep(0.3)  # let the capture writers finish before the next run
    total = {n: sum(v) for n, v in rps.items()}
    medians = " / ".join(f"{statistics.median(cpu[n]):.3f}" for n in ARMS)
    return (
        f"c={conc}: req/s old {total['old'] / rounds:,.0f}, new {total['new'] / rounds:,.0f}, "
        f"new2 {total['new2'] / rounds:,.0f}; new/old {total['new'] / total['old']:.3f}, "
        f"A/A new2/new {total['new2'] / total['new']:.3f}; "
        f"CPU ms/req (median) old / new / new2 {medians}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="checkout of the older version")
    parser.add_argument("--rounds", type=int, default=12, help="runs per gateway and cell")
    parser.add_argument("--seconds", type=int, default=2, help="seconds per run")
    parser.add_argument("--concurrency", default="1,16", help="comma list")
    parser.add_argument(
        "--modes",
        default="non-stream,stream",
        help="comma list of non-stream, stream, tools, responses, responses-stream",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="standby serve --workers for new and new2"
    )
    parser.add_argument("--old-workers", type=int, help="for old (default: --workers)")
    args = parser.parse_args(argv)
    if args.workers < 1 or (args.old_workers is not None and args.old_workers < 1):
        raise SystemExit("error: --workers and --old-workers must be at least 1")
    workers = {"old": args.old_workers or args.workers, "new": args.workers, "new2": args.workers}
    modes = args.modes.split(",")
    known = [*g.MODES, g.TOOLS_MODE, *g.RESPONSES_MODES]
    if unknown := [m for m in modes if m not in known]:
        raise SystemExit(f"error: --modes: unknown {', '.join(unknown)}; known: {', '.join(known)}")
    if not (args.old / "standby" / "cli.py").is_file():
        raise SystemExit(f"error: --old {args.old}: no standby/cli.py there")
    with TemporaryDirectory(prefix="standby-ab-") as tmp:
        procs = g.Procs(Path(tmp))
        try:
            sim_port = g.free_port()
            sim_argv = [g.executable("standby") or "standby", "sim", "gemini"]
            sim = procs.start("sim", [*sim_argv, "--port", str(sim_port)], role="sim")
            if g.wait_ready(sim, f"http://127.0.0.1:{sim_port}/healthz", 30) is not None:
                raise SystemExit("error: the simulated Gemini did not start")
            arms = start(procs, args.old.resolve(), sim_port, workers)
            print("workers: " + ", ".join(f"{n} {w}" for n, w in workers.items()), flush=True)
            for mode in modes:
                script = g.wrk_script(procs.workdir, mode)
                for _, base in arms.values():  # warm-up
                    g.run_wrk(url(base, mode), script, 16, 2, False)
                for conc in (int(c) for c in args.concurrency.split(",")):
                    line = compare(arms, mode, script, conc, args.rounds, args.seconds)
                    print(f"{mode} {line}", flush=True)
        finally:
            procs.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
