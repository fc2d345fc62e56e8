"""The story ``standby demo`` tells, against a running simulated Gemini and gateway: traffic
through the official OpenAI SDK (answers captured), a simulated Gemini outage (the fallback
answers, the fallback rate rises), recovery, one pipeline run in-process (snapshot, train,
batch inference, judge, gate, promote) and the gateway picking up the promoted version."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from standby.errors import ConfigError, StandbyError
from standby.pipeline.config import PipelineConfig
from standby.sim.demo_report import Scrape, Steps, counts, scrape

if TYPE_CHECKING:
    from openai import OpenAI

ROUTE = "gemini-3.8-flash"
TOPICS = (
    "rivers",
    "volcanoes",
    "the moon",
    "sourdough bread",
    "octopuses",
    "jazz",
    "glaciers",
    "honey bees",
    "lighthouses",
)
ASKS = (
    "Explain {} in one sentence.",
    "Give me three facts about {}.",
    "What is a common misconception about {}?",
    "Write a haiku about {}.",
)
OUTAGE_ASKS = (
    "How do I reset my password?",
    "Summarise our refund policy.",
    "Translate 'good morning' into French.",
    "What is 17 times 23?",
    "Suggest a name for a pet turtle.",
    "Why is the sky blue?",
    "Draft a one-line status update.",
    "What does HTTP 503 mean?",
)


def prompts() -> list[str]:
    """A few dozen varied prompts: every ask about every topic."""
    return [ask.format(topic) for ask in ASKS for topic in TOPICS]


def pipeline_config(state_dir: Path, model_dir: Path, judge_url: str) -> PipelineConfig:
    """A run that takes seconds on the tiny model: a few LoRA steps, short held-out answers,
    one judgement per answer by the simulated Gemini."""
    return PipelineConfig.model_validate(
        {
            "bus": bus_url(state_dir),
            "store": f"sqlite:///{state_dir / 'pairs.db'}",
            "backend": "gemma",
            "base_model_id": str(model_dir),
            "work_dir": str(state_dir / "pipeline"),
            "min_new_pairs": 10,
            "min_interval_s": 0,
            "lease_ttl_s": 30,
            "train": {
                "max_steps": 8,
                "per_device_train_batch_size": 4,
                "gradient_accumulation_steps": 1,
                "save_steps": 4,
                "logging_steps": 4,
                "threads": 1,
                "device": "cpu",
                "max_length": 256,
            },
            "batch_infer": {
                "max_new_tokens": 8,
                "inference_bs": 8,
                "device": "cpu",
                "threads": 1,
                "temperature": 0,
            },
            "evaluate": {
                "service_llm_base_url": judge_url,
                "service_llm_api_key": "simulated-key",
                "rate_limit_per_minute": 6000,
                "eval_repeat": 1,
                "avg_similarity_threshold": 90,
                "avg_precision_threshold": 90,
                "bootstrap_samples": 200,
            },
        }
    )


def bus_url(state_dir: Path) -> str:
    return f"sqlite:///{state_dir / 'events.db'}"


@dataclass
class Story:
    """The demo's steps 2-5 against ``base`` (the gateway) and ``sim`` (the simulated Gemini)."""

    base: str
    sim: str
    state_dir: Path
    model_dir: Path
    steps: Steps
    http: httpx.Client = field(default_factory=httpx.Client)
    sent: int = 0
    result: dict[str, Any] = field(default_factory=dict)

    def client(self) -> OpenAI:
        try:
            from openai import OpenAI
        except ImportError:
            raise ConfigError(
                "the demo sends its traffic with the openai package: "
                "pip install -c constraints.txt '.[demo]' (make install does)"
            ) from None
        return OpenAI(base_url=f"{self.base}/v1", api_key="demo", max_retries=0, timeout=60)

    def ask(self, client: OpenAI, prompt: str, *, stream: bool = False) -> tuple[str, str]:
        """One chat completion; (answering backend, fallback reason) from the headers."""
        raw = client.chat.completions.with_raw_response.create(
            model=ROUTE, messages=[{"role": "user", "content": prompt}], stream=stream
        )
        parsed = raw.parse()
        if stream:
            for _ in parsed:
                pass
        self.sent += 1
        return raw.headers.get("x-standby-backend", "?"), raw.headers.get(
            "x-standby-fallback-reason", ""
        )

    def metrics(self) -> Scrape:
        return scrape(self.http, self.base)

    # -- 2: traffic -----------------------------------------------------------------------------

    def traffic(self, client: OpenAI) -> None:
        with self.steps.step("Traffic through the official openai client (answers captured)"):
            answered: dict[str, int] = {}
            for i, prompt in enumerate(prompts()):
                backend, _ = self.ask(client, prompt, stream=i % 6 == 5)
                answered[backend] = answered.get(backend, 0) + 1
            self.steps.note(
                f"{self.sent} requests ({self.sent // 6} streamed) answered by: {counts(answered)}"
            )
            before = self.metrics()
            self.result["rate_before"] = _fallback_rate(before, None)
            self.steps.note(
                f"/metrics: standby_requests_total by backend {counts(_by_backend(before))}; "
                f"standby_fallbacks_total {before.total('standby_fallbacks_total'):.0f}"
            )

    # -- 3: outage and recovery -----------------------------------------------------------------

    def outage(self, client: OpenAI) -> None:
        with self.steps.step("Simulated Gemini outage (error-503), then recovery"):
            before = self.metrics()
            self._fault("error-503")
            for prompt in OUTAGE_ASKS:
                backend, reason = self.ask(client, prompt)
                self.steps.note(f"{prompt[:38]:<38} -> {backend:<6} ({reason or 'no failover'})")
            during = self.metrics()
            self.result["rate_outage"] = _fallback_rate(during, before)
            fallbacks = during.by("standby_fallbacks_total", "reason")
            self.steps.note(
                f"/metrics: fallback rate {self.result['rate_before']:.0%} -> "
                f"{self.result['rate_outage']:.0%}; standby_fallbacks_total by reason "
                f"{counts(fallbacks)}; breaker gemini "
                f"{_breaker(during.total('standby_breaker_state', backend='gemini'))}"
            )
            self._fault("ok")
            waited = self._until_gemini_answers(client)
            self.steps.note(
                f"Gemini recovered: answering again after {waited:.1f} s "
                "(the breaker's cool-down, then a half-open probe)"
            )

    def _fault(self, spec: str) -> None:
        self.http.post(f"{self.sim}/_sim/fault", json={"fault": spec}).raise_for_status()

    def _until_gemini_answers(self, client: OpenAI, limit_s: float = 60) -> float:
        start = time.monotonic()
        while True:
            backend, _ = self.ask(client, "Are you back?")
            if backend == "gemini":
                return time.monotonic() - start
            if time.monotonic() - start > limit_s:
                raise StandbyError(f"Gemini did not answer again within {limit_s:.0f} s")
            time.sleep(0.5)

    # -- 4: retrain, judge, gate, promote -------------------------------------------------------

    def retrain(self) -> dict[str, Any]:
        with self.steps.step("Retrain on the captured pairs, judge, gate, promote (pipeline)"):
            self._captured()
            config = pipeline_config(self.state_dir, self.model_dir, self.sim)
            run = asyncio.run(_run_pipeline(config, self.steps))
            if run is None:
                raise StandbyError("the pipeline did not start a run (its lease is held)")
            if run["status"] != "done" or run.get("decision") != "promoted":
                gate = run["stages"].get("gate", {}).get("result", {})
                why = run.get("error") or "; ".join(gate.get("reasons", [])) or run.get("decision")
                raise StandbyError(
                    f"the pipeline run ended {run['status']} at {run['stage']}: {why}"
                )
            results = {k: v["result"] for k, v in run["stages"].items()}
            snap, trained, gate = results["snapshot"], results["train"], results["gate"]
            self.result.update(
                splits=snap["exported"],
                pairs=sum(snap["exported"].values()),
                scores=gate["scores"],
                gate="passed" if gate["passed"] else "rejected",
                version=results["promote"]["version"],
            )
            loss = trained.get("train_loss")
            self.steps.note(
                f"{self.result['pairs']} pairs ({counts(snap['exported'])}); train loss "
                f"{loss if loss is None else round(loss, 3)}; {results['batch_infer']['rows']} "
                f"held-out answers judged: {counts_f(gate['scores'])}; gate "
                f"{self.result['gate']}; promoted {self.result['version']}"
            )
            return run

    def _captured(self, limit_s: float = 30) -> None:
        """Wait until the gateway's capture writer has every answer on the bus."""
        deadline = time.monotonic() + limit_s
        while True:
            m = self.metrics()
            handled = m.total("standby_capture_events_total")
            if handled >= self.sent and not m.total("standby_capture_queue_depth"):
                self.steps.note(
                    f"{m.total('standby_capture_events_total', outcome='written'):.0f}"
                    " answers captured on the bus"
                )
                return
            if time.monotonic() > deadline:
                raise StandbyError(f"only {handled:.0f} of {self.sent} answers were captured")
            time.sleep(0.1)

    # -- 5: the gateway follows the registry ----------------------------------------------------

    def pickup(self, limit_s: float = 60) -> None:
        version = self.result["version"]
        with self.steps.step("The gateway picks up the promoted version (registry follow)"):
            deadline = time.monotonic() + limit_s
            while True:
                m = self.metrics()
                info = m.labels("standby_fallback_model_info")
                if any(i.get("version") == version for i in info):
                    break
                if time.monotonic() > deadline:
                    raise StandbyError(f"the gateway did not load {version} in {limit_s:.0f} s")
                time.sleep(0.2)
            self.result["serving"] = "yes"
            score = m.by("standby_fallback_model_score", "criterion")
            self.steps.note(
                f'/metrics: standby_fallback_model_info{{version="{version}"}} 1; '
                f"standby_fallback_model_score {counts(score)}"
            )
            self.result["by_backend"] = _by_backend(m)
            self.result["reasons"] = m.by("standby_fallbacks_total", "reason")


async def _run_pipeline(config: PipelineConfig, steps: Steps) -> dict[str, Any] | None:
    """``Controller.once(force=True)``, with a line per stage as the persisted run moves on
    (stages quicker than the 0.2 s look are shown together when the run ends)."""
    from standby.pipeline.controller import RUN_KEY, Controller
    from standby.store import open_state

    async with open_state(config.bus) as state:
        work = asyncio.create_task(Controller(config).once(state, force=True))
        shown: list[str] = []
        since = time.monotonic()
        while True:
            finished = work.done()
            run = await state.get(RUN_KEY) or {"stages": {}}
            for stage, record in run["stages"].items():
                if stage not in shown:
                    took = f" ({time.monotonic() - since:.1f} s)" if not finished else ""
                    steps.note(f"  {stage}: {record['outcome']}{took}")
                    shown.append(stage)
                    since = time.monotonic()
            if finished:
                return await work
            await asyncio.wait({work}, timeout=0.2)


def counts_f(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in sorted(values.items())) or "none"


def _by_backend(m: Scrape) -> dict[str, int]:
    return m.by("standby_requests_total", "backend", outcome="ok")


def _fallback_rate(now: Scrape, before: Scrape | None) -> float:
    """Share of requests answered by a backend other than the route's first, since ``before``:
    what ``rate(standby_requests_total{backend!="gemini"}) / rate(standby_requests_total)``
    shows on a dashboard."""

    def totals(m: Scrape | None) -> tuple[float, float]:
        if m is None:
            return 0.0, 0.0
        every = m.total("standby_requests_total")
        return every, every - m.total("standby_requests_total", backend="gemini")

    (all_now, fb_now), (all_then, fb_then) = totals(now), totals(before)
    return (fb_now - fb_then) / (all_now - all_then) if all_now > all_then else 0.0


def _breaker(state: float) -> str:
    return {0: "closed", 1: "half-open", 2: "open"}.get(int(state), "?")
