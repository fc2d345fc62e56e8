"""``standby demo``: the gateway, offline, with the simulated Gemini as primary and a tiny
random-weight Gemma as the in-process fallback. No keys, no downloads. The fallback's answers
are gibberish by design (random weights); what the demo shows is the failover."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import uvicorn

from standby.config import Settings, parse_settings
from standby.gateway.app import Gateway
from standby.gateway.server import serve
from standby.sim.background import AiohttpServer

ROUTE = "gemini-2.5-flash"


def demo_settings(*, host: str, port: int, sim_url: str, model_dir: Path) -> Settings:
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
        "breaker": {"failures": 3, "cooldown_s": 10},
        "capture": {"enabled": True, "bus": "sqlite:///./.standby/events.db"},
    }
    return parse_settings(data, "demo")


def run_demo(*, host: str, port: int, sim_port: int, model_dir: Path, log_level: str) -> None:
    from standby.sim.gemini import SimGemini, build_app
    from standby.sim.tiny_model import build_tiny_gemma

    print(f"building the tiny fallback model in {model_dir} ...", flush=True)
    build_tiny_gemma(model_dir)
    sim = AiohttpServer(build_app(SimGemini()), host="127.0.0.1", port=sim_port).start()
    settings = demo_settings(host=host, port=port, sim_url=sim.url, model_dir=model_dir)

    def started(server: uvicorn.Server, gateway: Gateway) -> None:
        base = f"http://{host}:{port}"
        print(_instructions(base, sim.url), flush=True)

    try:
        serve(settings, log_level=log_level, on_started=started)
    finally:
        sim.stop()


def _instructions(base: str, sim_url: str) -> str:
    return f"""
standby demo is up: gateway {base}  (simulated Gemini {sim_url}, fallback: tiny local Gemma)

  ask:      curl -s {base}/v1/chat/completions -H 'content-type: application/json' \\
              -d '{{"model":"{ROUTE}","messages":[{{"role":"user","content":"Hello!"}}]}}'
  outage:   curl -s -XPOST {sim_url}/_sim/fault -d '{{"fault":"error-503"}}'
  recover:  curl -s -XPOST {sim_url}/_sim/fault -d '{{"fault":"ok"}}'
  state:    curl -s {base}/readyz      metrics: curl -s {base}/metrics

The answering backend is in the x-standby-backend header (curl -i). Answers are captured
as events in .standby/events.db. Ctrl-C stops.
"""
