"""End to end with a real Prometheus and Alertmanager: a gateway serves traffic, the simulated
Gemini goes down, the fallback-rate alerts fire and reach a webhook; Gemini recovers, they
resolve. Then every PromQL expression of the Grafana dashboard runs against the same live
Prometheus.

The rules are the deploy ones with time shrunk (``shorten_rules``: one minute of window is 5 s,
every ``for`` is 2 s), so the expressions under test are the real ones.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.gateway import ROUTE, GatewayServer, StartGateway, base_config
from tests.fixtures.prometheus import (
    REPO,
    Prometheus,
    PrometheusQueryError,
    Webhook,
    wait_for,
)
from tests.fixtures.sim import RunningSim

DASHBOARD = REPO / "deploy" / "grafana" / "standby.json"
FIRE = ("StandbyFallbackRateHigh", "StandbyFallbackRateCritical")
# 5xx to clients must not happen: the fallback answers. (StandbyGatewayDown is not listed: on a
# loaded CI machine two slow 1 s scrapes in a row would fire its shortened 2 s `for`.)
NEVER = ("StandbyAllBackendsFailing",)


class Traffic:
    """A steady trickle of chat requests from a background thread (bounded in count and time)."""

    def __init__(self, gw: GatewayServer, *, max_requests: int = 5000, max_s: float = 150):
        self.gw = gw
        self.max_requests = max_requests
        self.max_s = max_s
        self.stop_event = threading.Event()
        self.answered_by: dict[str, int] = {}
        self.failures: list[str] = []
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as e:  # reported by the test, not lost in the thread
            self.failures.append(f"traffic thread crashed: {e!r}")

    def _loop(self) -> None:
        deadline = time.monotonic() + self.max_s
        with self.gw.client() as client:
            while (
                not self.stop_event.is_set()
                and self.sent < self.max_requests
                and time.monotonic() < deadline
            ):
                self.sent += 1
                try:
                    raw = client.chat.completions.with_raw_response.create(
                        model=ROUTE, messages=[{"role": "user", "content": "hello"}]
                    )
                except Exception as e:  # counted and asserted on by the test
                    self.failures.append(repr(e))
                else:
                    backend = raw.headers.get("x-standby-backend", "?")
                    self.answered_by[backend] = self.answered_by.get(backend, 0) + 1
                self.stop_event.wait(0.05)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "traffic thread did not stop"


def _states(prom: Prometheus) -> dict[str, set[str]]:
    states = prom.alert_states()
    noisy = {name: s for name, s in states.items() if name in NEVER}
    assert not noisy, f"alerts that must not fire in this drill: {noisy}"
    return states


def _notified(hook: Webhook, path: str, alertname: str, status: str) -> dict[str, Any] | None:
    for got_path, payload in hook.notifications():
        if got_path != path:
            continue
        for alert in payload.get("alerts", []):
            if alert["labels"].get("alertname") == alertname and alert["status"] == status:
                return dict(alert)
    return None


@pytest.mark.timeout(180)
def test_fallback_rate_alert_fires_on_outage_and_resolves(
    prometheus: Prometheus,
    alert_webhook: Webhook,
    sim: RunningSim,
    tiny_model_dir: Path,
    start_gateway: StartGateway,
) -> None:
    gw = start_gateway(base_config(sim.url, tiny_model_dir))
    prometheus.set_targets([f"127.0.0.1:{gw.port}"])
    wait_for(
        "Prometheus to scrape the gateway",
        lambda: prometheus.query('up{job="standby"} == 1'),
        timeout=20,
    )
    with Traffic(gw) as traffic:

        def detail() -> str:
            ratio = {
                window: [r["value"][1] for r in prometheus.query(f"standby:fallback_rate:{window}")]
                for window in ("ratio_rate5m", "ratio_rate1m")
            }
            return (
                f"alerts {prometheus.alert_states()}, fallback rate {ratio}, targets "
                f"{prometheus.target_health()}, answered by {traffic.answered_by}, "
                f"client failures {traffic.failures[:3]}, webhook {alert_webhook.notifications()}"
            )

        # healthy: the primary answers and the recorded fallback rate is 0, not "no data"
        wait_for(
            "healthy traffic to be recorded",
            lambda: prometheus.query("standby:fallback_rate:ratio_rate1m == 0"),
            timeout=20,
            detail=detail,
        )
        assert not set(FIRE) & set(_states(prometheus))
        # The role table the breaker and readiness alerts join on: the route's order, as the
        # gateway exports it (standby_backend_role).
        roles = {
            (r["metric"]["backend"], r["metric"]["role"])
            for r in prometheus.query("standby:backend_role:info")
        }
        assert roles == {("gemini", "primary"), ("gemma", "fallback")}

        sim.sim.set_fault("error-503")  # Gemini goes down; the local Gemma answers instead
        outage = time.monotonic()

        def firing() -> bool:
            states = _states(prometheus)
            return all("firing" in states.get(name, set()) for name in FIRE)

        wait_for(f"{' and '.join(FIRE)} to fire", firing, timeout=45, detail=detail)
        fired_s = time.monotonic() - outage
        value = prometheus.query("standby:fallback_rate:ratio_rate5m")
        assert float(value[0]["value"][1]) > 0.5

        # Alertmanager routed the critical alert to the pager webhook (and the ticket webhook)
        page = wait_for(
            "the webhook to receive the firing critical alert",
            lambda: _notified(alert_webhook, "/page", "StandbyFallbackRateCritical", "firing"),
            timeout=15,
            detail=detail,
        )
        assert page["labels"]["severity"] == "critical"
        assert page["annotations"]["runbook_url"].endswith("#standbyfallbackratecritical")
        assert "%" in page["annotations"]["summary"]

        sim.sim.set_fault("ok")  # Gemini recovers: the breaker's next probe closes it
        recovery = time.monotonic()

        def resolved() -> bool:
            states = _states(prometheus)
            return not any(name in states for name in FIRE)

        wait_for(f"{' and '.join(FIRE)} to resolve", resolved, timeout=45, detail=detail)
        resolved_s = time.monotonic() - recovery
        wait_for(
            "the webhook to receive the resolved notification",
            lambda: _notified(alert_webhook, "/page", "StandbyFallbackRateCritical", "resolved"),
            timeout=15,
            detail=detail,
        )

    assert not traffic.failures, f"clients saw errors: {traffic.failures[:3]}"
    assert traffic.answered_by.get("gemini", 0) > 0
    assert traffic.answered_by.get("gemma", 0) > 0, traffic.answered_by
    print(
        f"fired {fired_s:.1f}s after the outage, resolved {resolved_s:.1f}s after recovery; "
        f"{traffic.sent} requests, answered by {traffic.answered_by}"
    )


# ------------------------------------------------------------------------------- dashboard

GRAFANA_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "job": ".*",
    "route": ".*",
}


def substitute(expr: str) -> str:
    """Replace Grafana's ``$var``, ``${var}``, ``${var:fmt}`` and ``[[var]]`` with values."""

    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name not in GRAFANA_VARIABLES:
            raise AssertionError(f"unknown dashboard variable ${name} in {expr!r}")
        return GRAFANA_VARIABLES[name]

    return re.sub(
        r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)",
        value,
        expr,
    )


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target, annotation and query variable."""
    dash = json.loads(DASHBOARD.read_text())
    queries: list[tuple[str, str]] = []

    def panels(items: list[dict[str, Any]]) -> None:
        for panel in items:
            for target in panel.get("targets", []):
                queries.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
            panels(panel.get("panels", []))

    panels(dash["panels"])
    for annotation in dash["annotations"]["list"]:
        if "expr" in annotation:
            queries.append((f"annotation {annotation['name']!r}", annotation["expr"]))
    for variable in dash["templating"]["list"]:
        if variable["type"] == "query":
            definition = variable["query"]["query"]
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", definition)
            assert match, f"variable {variable['name']}: unsupported query {definition!r}"
            queries.append((f"variable ${variable['name']}", match.group(1)))
    return queries


def test_every_dashboard_expression_runs_on_prometheus(prometheus: Prometheus) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 20
    errors = []
    for where, expr in queries:
        promql = substitute(expr)
        try:
            prometheus.api("query", query=promql)
        except PrometheusQueryError as e:
            errors.append(f"{where}: {promql}\n    {e}")
    assert not errors, "dashboard PromQL rejected by Prometheus:\n" + "\n".join(errors)


def test_prometheus_rejects_a_broken_expression(prometheus: Prometheus) -> None:
    """The dashboard check above has teeth: a parse error is an error, not an empty result."""
    with pytest.raises(PrometheusQueryError, match="parse error"):
        prometheus.api("query", query="sum(rate(standby_requests_total[5m])")


def test_substitute_handles_grafana_variable_forms() -> None:
    assert (
        substitute('rate(x{a=~"$job",b=~"${route}",c=~"${route:regex}"}[$__rate_interval])')
        == 'rate(x{a=~".*",b=~".*",c=~".*"}[1m])'
    )
    assert substitute("increase(x[[[__range]]])") == "increase(x[1h])"
