"""``standby demo``: the whole system, offline, as a SIMULATION. The primary is the simulated
Gemini (not Google's service), the fallback a tiny random-weight Gemma in-process (gibberish
until the demo trains it). No keys, no downloads.

The story (:mod:`standby.sim.demo_story`): build the tiny Gemma, start the simulator and the
gateway (capture on, SQLite bus, the fallback following the model registry), send traffic through
the official OpenAI SDK (counting questions, a domain the simulated Gemini answers for real),
take Gemini down and back up, run the pipeline (retrain on the captured pairs, judge, gate,
promote; the base model's held-out score before, the candidate's after), watch the gateway load
the promoted version, run it once more with a single training step to show the gate rejecting a
candidate that did not learn, print a summary and exit. The judge is the simulated Gemini,
scoring with chrF against its own answers (:mod:`standby.sim.judge`).

``--keep-running`` then leaves everything up until Ctrl-C; ``--serve-only`` skips the story and
just serves, as a playground for curl.

Every run starts from a fresh ``.standby/demo/`` (bus, pairs, registry, pipeline runs); the
tiny model is built once into ``.standby/tiny-gemma`` and reused."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import threading
import warnings
from pathlib import Path
from typing import Any

import uvicorn

from standby.config import Settings, parse_settings
from standby.errors import ConfigError
from standby.gateway.app import Gateway
from standby.gateway.server import serve
from standby.sim.background import AiohttpServer, free_port
from standby.sim.demo_flywheel import bus_url
from standby.sim.demo_gateway import GatewayThread
from standby.sim.demo_report import Steps, summary
from standby.sim.demo_story import ROUTE, Story

STATE_DIR = Path(".standby/demo")
BANNER = """\
standby demo - a SIMULATION, offline: "Gemini" is a local simulator (not Google's service) and
the fallback is a tiny random-weight Gemma (gibberish until trained), the judge is the simulator
scoring with chrF. The gateway, capture, metrics, training, gate and promotion are the real
thing."""


def demo_settings(
    *, host: str, port: int, sim_url: str, model_dir: Path, state_dir: Path
) -> Settings:
    data: dict[str, Any] = {
        "server": {"host": host, "port": port, "api_keys": []},
        "backends": {
            "gemini": {
                "type": "gemini",
                "model": ROUTE,
                "api_key": "simulated-key",
                "base_url": sim_url,
                "timeouts": {"connect_s": 1, "first_token_s": 2, "idle_s": 2, "total_s": 5},
            },
            "gemma": {"type": "local", "model": str(model_dir), "max_new_tokens": 48, "threads": 1},
        },
        "routes": {ROUTE: ["gemini", "gemma"]},
        "breaker": {"failures": 3, "cooldown_s": 5},
        "capture": {"enabled": True, "bus": bus_url(state_dir), "flush_interval_s": 0.05},
        "registry": {"follow": ["gemma"], "poll_s": 0.5},
    }
    return parse_settings(data, "demo")


def run_demo(
    *,
    host: str,
    port: int,
    sim_port: int,
    model_dir: Path,
    log_level: str,
    keep_running: bool = False,
    serve_only: bool = False,
    verbose: bool = False,
) -> None:
    """Run the story (or, ``serve_only``, just serve). Port 0 picks a free one."""
    from standby.sim.gemini import SimGemini, build_app
    from standby.sim.tiny_model import build_tiny_gemma

    port = _free_or_fail(host, port, "--port")
    sim_port = _free_or_fail(host, sim_port, "--sim-port")
    if not verbose and not serve_only:
        _quiet()
    steps = Steps(total=1 if serve_only else 7)
    steps.say(BANNER)
    steps.say()
    model_dir, state_dir = model_dir.resolve(), _fresh(STATE_DIR)
    base = f"http://{host}:{port}"
    with contextlib.ExitStack() as running:
        with steps.step("Build the tiny Gemma, start the simulated Gemini and the gateway"):
            cached = (model_dir / "config.json").is_file()
            build_tiny_gemma(model_dir)
            steps.note(f"tiny Gemma: {model_dir} ({'cached' if cached else 'built'})")
            sim = AiohttpServer(build_app(SimGemini()), host=host, port=sim_port).start()
            running.callback(sim.stop)
            settings = demo_settings(
                host=host, port=port, sim_url=sim.url, model_dir=model_dir, state_dir=state_dir
            )
            if not serve_only:
                gateway = GatewayThread(settings, "info" if verbose else "warning").start()
                running.callback(gateway.stop)
                steps.note(
                    f"simulated Gemini {sim.url}; gateway {base} (capture on, the "
                    "fallback follows the model registry)"
                )
                steps.note(f"state (bus, pairs, registry, runs): {state_dir}")
        if serve_only:
            _serve_only(settings, base, sim.url, state_dir, log_level)
        else:
            _story(
                Story(base, sim.url, state_dir, model_dir, steps, quiet=not verbose), keep_running
            )


def _story(story: Story, keep_running: bool) -> None:
    steps = story.steps
    with story.http, story.client() as client:
        story.traffic(client)
        story.outage(client)
        story.retrain()
        story.pickup()
        story.reject()
    story.result["wall_s"] = steps.elapsed
    steps.heading("Summary (SIMULATION: simulated Gemini, tiny random-weight Gemma)")
    for line in summary(story.result):
        steps.say(line)
    if keep_running:
        steps.say(_instructions(story.base, story.sim, story.state_dir))
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            steps.say("stopping")


def _serve_only(
    settings: Settings, base: str, sim_url: str, state_dir: Path, log_level: str
) -> None:
    def started(server: uvicorn.Server, gateway: Gateway) -> None:
        print(_instructions(base, sim_url, state_dir), flush=True)

    serve(settings, log_level=log_level, on_started=started)


def _free_or_fail(host: str, port: int, flag: str) -> int:
    """``port`` if nothing listens there (0: any free port); else one line naming the flag."""
    if port == 0:
        return free_port(host)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise ConfigError(
                f"{host}:{port} is not free ({e.strerror}): stop what listens "
                f"there (another standby demo?) or pass {flag} PORT "
                f"({flag} 0 picks a free one)"
            ) from None
    return port


def _fresh(path: Path) -> Path:
    """An empty state folder: repeated demos never see an earlier demo's pairs or models."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path.resolve()


def _quiet() -> None:
    """The step lines are the display: the per-request access log, the stage logs and the
    libraries' notes are for ``--verbose``."""
    logging.getLogger().setLevel(logging.WARNING)
    # The demo trains its tiny model for many epochs over a small domain on purpose; the
    # trainer's warning about that is for real runs (it is in the log with --verbose).
    logging.getLogger("standby.trainer").setLevel(logging.ERROR)
    for progress_bars_off in (
        "TQDM_DISABLE",
        "HF_DATASETS_DISABLE_PROGRESS_BARS",
        "HF_HUB_DISABLE_PROGRESS_BARS",
    ):
        os.environ.setdefault(progress_bars_off, "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)


def _instructions(base: str, sim_url: str, state_dir: Path) -> str:
    return f"""
standby demo is up: gateway {base}  (simulated Gemini {sim_url}, fallback: tiny local Gemma)

  ask:      curl -s {base}/v1/chat/completions -H 'content-type: application/json' \\
              -d '{{"model":"{ROUTE}","messages":[{{"role":"user","content":"Hello!"}}]}}'
  outage:   curl -s -XPOST {sim_url}/_sim/fault -d '{{"fault":"error-503"}}'
  recover:  curl -s -XPOST {sim_url}/_sim/fault -d '{{"fault":"ok"}}'
  state:    curl -s {base}/readyz      metrics: curl -s {base}/metrics

The answering backend is in the x-standby-backend header (curl -i). Answers are captured
as events in {state_dir}/events.db. Ctrl-C stops.
"""
