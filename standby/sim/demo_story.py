"""The story ``standby demo`` tells, against a running simulated Gemini and gateway: traffic
through the official OpenAI SDK (answers captured), a simulated Gemini outage (the fallback
answers, the fallback rate rises), recovery, one pipeline run in-process (snapshot, train,
batch inference, judge, gate, promote) and the gateway picking up the promoted version."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from standby.errors import ConfigError, StandbyError
from standby.sim.demo_flywheel import (
    THRESHOLD,
    TRAINED_STEPS,
    UNTRAINED_STEPS,
    base_score,
    first_answer,
    pipeline_config,
    run_pipeline,
)
from standby.sim.demo_report import Scrape, Steps, counts, scrape

if TYPE_CHECKING:
    from openai import OpenAI

ROUTE = "gemini-3.8-flash"
# The simulated Gemini answers counting questions for real ("After 41 comes 42."): a small,
# regular domain the tiny Gemma can learn from the captured pairs in a few seconds.
TRAFFIC = range(10, 70)
OUTAGE = range(200, 208)


def prompts() -> list[str]:
    """The demo's traffic: one counting question per number."""
    return [f"What comes after {n}?" for n in TRAFFIC]


@dataclass
class Story:
    """The demo's steps 2-5 against ``base`` (the gateway) and ``sim`` (the simulated Gemini)."""

    base: str
    sim: str
    state_dir: Path
    model_dir: Path
    steps: Steps
    # Not verbose: what the trainer and the libraries print while the pipeline runs goes to
    # ``pipeline.log`` in the state folder, so that the step lines stay readable.
    quiet: bool = True
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
            for prompt in (f"What comes after {n}?" for n in OUTAGE):
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

    def retrain(self) -> None:
        with self.steps.step("Retrain on the captured pairs, judge, gate, promote (pipeline)"):
            self._captured()
            run = self._pipeline(TRAINED_STEPS)
            if run.get("decision") != "promoted":
                raise StandbyError(f"the trained candidate was not promoted: {_why(run)}")
            results = {k: v["result"] for k, v in run["stages"].items()}
            snap, trained, gate = results["snapshot"], results["train"], results["gate"]
            with self._logged():
                before, base_answers = base_score(
                    self.model_dir,
                    Path(results["train"]["adapter"]).parent / "data",
                    self.state_dir / "base-model",
                    self.sim,
                )
            after_answers = Path(results["batch_infer"]["answers"])
            self.result.update(
                splits=snap["exported"],
                pairs=sum(snap["exported"].values()),
                before=before,
                scores=gate["scores"],
                gate="passed" if gate["passed"] else "failed",
                version=results["promote"]["version"],
            )
            loss = trained.get("train_loss")
            self.steps.note(
                f"{self.result['pairs']} pairs ({counts(snap['exported'])}); "
                f"{TRAINED_STEPS} LoRA steps, train loss {loss if loss is None else round(loss, 3)}"
                + (f" (training log: {self.state_dir / 'pipeline.log'})" if self.quiet else "")
            )
            self.steps.note(
                f"{results['batch_infer']['rows']} held-out questions, answers scored by the "
                "simulated judge (chrF against Gemini's answers; precision: chrF1):"
            )
            for label, scores, answers in (
                ("before training (base tiny Gemma)", before, base_answers),
                ("after training (the candidate)   ", gate["scores"], after_answers),
            ):
                question, said = first_answer(answers)
                self.steps.note(f"  {label}: {counts_f(scores)}")
                self.steps.note(f"      e.g. {question} -> {said[:40]!r}")
            self.steps.note(
                f"gate: mean similarity and precision >= {THRESHOLD} (the demo's thresholds; "
                "90 by default, for a real judge) -> "
                f"{self.result['gate']}; promoted {self.result['version']}"
            )
            self.steps.note(f"report with plots: {_html(results['evaluate'])}")

    def reject(self) -> None:
        title = f"A candidate that did not learn ({UNTRAINED_STEPS} training step): gate fails"
        with self.steps.step(title):
            run = self._pipeline(UNTRAINED_STEPS)
            if run["status"] != "done" or run.get("decision") != "rejected":
                raise StandbyError(f"the one-step candidate was not rejected: {_why(run)}")
            gate = run["stages"]["gate"]["result"]
            self.result.update(
                rejected_scores=gate["scores"], rejected_reasons=gate.get("reasons", [])
            )
            m = self.metrics()
            serving = [i.get("version") for i in m.labels("standby_fallback_model_info")]
            self.result["still_serving"] = ", ".join(v for v in serving if v) or "none"
            self.steps.note(f"simulated judge: {counts_f(gate['scores'])}; gate failed:")
            for reason in gate.get("reasons", []):
                self.steps.note(f"  {reason}")
            self.steps.note(
                f"not promoted: the gateway still serves {self.result['still_serving']}"
            )
            evaluated = run["stages"]["evaluate"]["result"]
            self.steps.note(f"report with plots, against the serving version: {_html(evaluated)}")

    @contextlib.contextmanager
    def _logged(self) -> Iterator[None]:
        if not self.quiet:
            yield
            return
        with (
            (self.state_dir / "pipeline.log").open("a", encoding="utf-8") as log,
            contextlib.redirect_stderr(log),
        ):
            yield

    def _pipeline(self, train_steps: int) -> dict[str, Any]:
        config = pipeline_config(self.state_dir, self.model_dir, self.sim, train_steps=train_steps)
        with self._logged():
            run = asyncio.run(run_pipeline(config, self.steps))
        if run is None:
            raise StandbyError("the pipeline did not start a run (its lease is held)")
        if run["status"] != "done":
            raise StandbyError(
                f"the pipeline run ended {run['status']} at {run['stage']}: {_why(run)}"
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


def _why(run: dict[str, Any]) -> str:
    gate = run["stages"].get("gate", {}).get("result", {})
    return str(run.get("error") or "; ".join(gate.get("reasons", [])) or run.get("decision"))


def _html(evaluated: dict[str, Any]) -> Path:
    """The evaluate stage's report.html (beside the report.json its summary names)."""
    return Path(evaluated["report"]).with_name("report.html")


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
