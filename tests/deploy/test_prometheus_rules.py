"""The Prometheus rules, their unit tests, the example Prometheus / Alertmanager configs, the
runbook and the dashboard agree with each other and with what the gateway exports.

Real tools: ``promtool`` (Debian ``prometheus``) and ``amtool`` (``prometheus-alertmanager``).
A missing tool fails the test with the package to install; nothing is skipped.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from standby.sim.background import free_port
from tests.fixtures.gateway import GatewayServer, StartGateway, base_config
from tests.fixtures.prometheus import REPO, require_binary
from tests.fixtures.sim import RunningSim

DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
DASHBOARD = DEPLOY / "grafana" / "standby.json"
RUNBOOK = REPO / "docs" / "runbook.md"
RUNBOOK_URL = "docs/runbook.md"  # relative to the repository root (docs/runbook.md says why)


def documented_metrics() -> dict[str, str]:
    """The "Metrics" table of docs/runbook.md: name -> type."""
    rows = re.findall(
        r"^\| `(standby_[a-z_]+)` \| (counter|gauge|histogram) \|", RUNBOOK.read_text(), re.M
    )
    return dict(rows)


DOCUMENTED_METRICS = documented_metrics()
REQUIRED_ALERTS = {
    "StandbyFallbackRateHigh",
    "StandbyFallbackRateCritical",
    "StandbyPrimaryBreakerOpen",
    "StandbyAllBackendsFailing",
    "StandbyFallbackNotReady",
    "StandbyCaptureDropping",
    "StandbyFallbackModelScoreLow",
    "StandbyGatewayDown",
    "StandbyLoadShedding",
    "StandbyFallbackRolledBack",
    "StandbyPipelineFailing",
    "StandbyPipelineWorkerDown",
}


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)


def load_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        rules.extend(group["rules"])
    return rules


def alert_rules() -> list[dict[str, Any]]:
    return [r for r in load_rules() if "alert" in r]


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading."""
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def runbook_anchors() -> set[str]:
    return {
        github_anchor(m.group(1))
        for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", RUNBOOK.read_text(), re.MULTILINE)
    }


def dashboard_exprs(node: Any) -> list[str]:
    """Every PromQL ``expr`` in the dashboard (panels, nested row panels, annotations)."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                found.append(value)
            else:
                found.extend(dashboard_exprs(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(dashboard_exprs(item))
    return found


def metric_names(expr: str) -> set[str]:
    """``standby_*`` metric names an expression uses (histogram series suffixes removed)."""
    names = set()
    for name in re.findall(r"\bstandby_[a-z_]+\b", expr):
        names.add(re.sub(r"_(bucket|sum|count)$", "", name))
    return names


def metrics_read() -> set[str]:
    """The ``standby_*`` metrics that the alert rules and the dashboard read."""
    used = set()
    for rule in load_rules():
        used |= metric_names(rule["expr"])
    for expr in dashboard_exprs(json.loads(DASHBOARD.read_text())):
        used |= metric_names(expr)
    return used


# ------------------------------------------------------------------------------------ promtool


def test_promtool_check_rules() -> None:
    promtool = require_binary("promtool", "prometheus")
    result = run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    promtool = require_binary("promtool", "prometheus")
    result = run(promtool, "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_config_resolves_the_rules() -> None:
    promtool = require_binary("promtool", "prometheus")
    result = run(promtool, "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    # rule_files resolve relative to the config file: the real alerts.yml was loaded and checked
    assert "1 rule files found" in result.stdout
    assert "deploy/prometheus/alerts.yml" in result.stdout
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {c["job_name"]: c for c in config["scrape_configs"]}
    assert jobs["standby"]["metrics_path"] == "/metrics"
    assert jobs["standby"]["static_configs"][0]["targets"] == ["127.0.0.1:8080"]


def test_amtool_check_config_and_routing() -> None:
    amtool = require_binary("amtool", "prometheus-alertmanager")
    result = run(amtool, "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout

    def receivers(*labels: str) -> str:
        out = run(
            amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", *labels
        )
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout.strip()

    critical = receivers("alertname=StandbyFallbackRateCritical", "severity=critical")
    assert critical == "standby-pager,standby-webhook"
    warning = receivers("alertname=StandbyFallbackRateHigh", "severity=warning")
    assert warning == "standby-webhook"


# ------------------------------------------------------------------------- rules' conventions


def test_required_alerts_exist_with_severity_and_annotations() -> None:
    alerts = alert_rules()
    names = [a["alert"] for a in alerts]
    assert len(names) == len(set(names)), "duplicate alert names"
    assert set(names) >= REQUIRED_ALERTS
    groups = [g["name"] for g in yaml.safe_load(RULES.read_text())["groups"]]
    assert "standby" in groups
    for alert in alerts:
        name = alert["alert"]
        assert alert["labels"]["severity"] in {"warning", "critical"}, name
        notes = alert["annotations"]
        for key in ("summary", "description", "runbook_url"):
            assert notes.get(key), f"{name}: no {key}"
        # the current value is in the text (a percentage, a rate or the raw value)
        assert "$value" in notes["summary"] or "$value" in notes["description"], name
        assert "for" in alert, f"{name}: no `for` (would page on a single evaluation)"


def test_runbook_urls_point_at_runbook_sections() -> None:
    anchors = runbook_anchors()
    for alert in alert_rules():
        url = alert["annotations"]["runbook_url"]
        base, _, anchor = url.partition("#")
        assert base == RUNBOOK_URL and (REPO / base).is_file(), url
        assert anchor == alert["alert"].lower(), url
        assert anchor in anchors, f"docs/runbook.md has no heading for #{anchor}"


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    spec = yaml.safe_load(RULE_TESTS.read_text())
    assert spec["rule_files"] == ["alerts.yml"]
    fires: dict[str, int] = {}
    silent: dict[str, int] = {}
    names = {a["alert"] for a in alert_rules()}
    for case in spec["tests"]:
        for check in case.get("alert_rule_test", []):
            name = check["alertname"]
            assert name in names, f"test {case.get('name')!r} checks an unknown alert {name}"
            bucket = fires if check.get("exp_alerts") else silent
            bucket[name] = bucket.get(name, 0) + 1
    for name in sorted(names):
        assert fires.get(name), f"{name}: no unit test where it fires"
        assert silent.get(name), f"{name}: no unit test where it must not fire"


def test_zero_traffic_is_guarded_in_fallback_ratio_alerts() -> None:
    rules = {r.get("alert") or r.get("record"): r for r in load_rules()}
    formula = "sum(rate(standby_fallbacks_total[5m]))"
    assert formula in rules["standby:fallback_rate:ratio_rate5m"]["expr"]
    assert (
        "sum(rate(standby_requests_total[5m]))"
        in rules["standby:fallback_rate:ratio_rate5m"]["expr"]
    )
    for name, threshold, for_ in (
        ("StandbyFallbackRateHigh", "0.05", "5m"),
        ("StandbyFallbackRateCritical", "0.5", "2m"),
    ):
        expr = rules[name]["expr"]
        assert f"standby:fallback_rate:ratio_rate5m > {threshold}" in expr, name
        assert "standby:requests:rate5m > 0" in expr, f"{name}: no zero-traffic guard"
        assert rules[name]["for"] == for_
    assert "standby_fallback_model_score < 90" in rules["StandbyFallbackModelScoreLow"]["expr"]


def test_roles_come_from_the_gateway_not_from_backend_names() -> None:
    """Primary and fallback are the routes' order (standby_backend_role), never a name pattern."""
    rules = {r.get("alert") or r.get("record"): r for r in load_rules()}
    assert "standby_backend_role" in rules["standby:backend_role:info"]["expr"]
    for name, rule in rules.items():
        assert "gemini" not in rule["expr"], f"{name} reads a backend name"


def test_metrics_used_are_design_metrics() -> None:
    unknown = metrics_read() - set(DOCUMENTED_METRICS)
    assert not unknown, f"not in the documented metrics table: {sorted(unknown)}"


def test_dashboard_recorded_series_are_recorded_by_the_rules() -> None:
    recorded = {r["record"] for r in load_rules() if "record" in r}
    used = set()
    for expr in dashboard_exprs(json.loads(DASHBOARD.read_text())):
        used |= set(re.findall(r"\bstandby:[a-z0-9_:]+", expr))
    assert used, "the dashboard shows the alerting view of the fallback rate"
    assert used <= recorded, sorted(used - recorded)


def scrape(url: str) -> dict[str, str]:
    """``# TYPE`` lines of a /metrics page: metric name -> type."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))


def pipeline_worker_metrics(tmp_path: Path) -> dict[str, str]:
    """What a real ``standby pipeline run`` (nothing to do) exports on its metrics port."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "standby.cli",
        "pipeline",
        "run",
        "--no-online-check",
        "--bus",
        f"sqlite:///{tmp_path / 'events.db'}",
        "--min-new-pairs",
        "1000000",
        "--store",
        f"sqlite:///{tmp_path / 'pairs.db'}",
        "--metrics-port",
        str(port),
        "--work-dir",
        str(tmp_path / "work"),
    ]
    worker = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                return scrape(f"http://127.0.0.1:{port}/metrics")
            except OSError:
                assert worker.poll() is None, worker.communicate()[1]
                assert time.monotonic() < deadline, "the worker's /metrics did not come up"
                time.sleep(0.1)
    finally:
        worker.terminate()
        worker.communicate(timeout=30)


def test_the_runbook_documents_every_registered_metric() -> None:
    """The runbook's table and the code's registries hold the same names with the same types."""
    from prometheus_client import CollectorRegistry

    from standby.gateway.metrics import Metrics
    from standby.gateway.workers import restart_counter
    from standby.pipeline.controller import PipelineMetrics

    supervisor = CollectorRegistry()  # standby serve --workers N's own series
    restart_counter(supervisor)
    registered = {}
    for registry in (Metrics().registry, PipelineMetrics().registry, supervisor):
        for family in registry.collect():
            suffix = "_total" if family.type == "counter" else ""
            registered[family.name + suffix] = family.type
    assert registered == DOCUMENTED_METRICS


def test_rules_and_dashboard_metrics_are_exported(
    sim: RunningSim, start_gateway: StartGateway, tmp_path: Path
) -> None:
    """Every metric the rules and the dashboard read exists with the documented type on a real
    gateway's /metrics or a real pipeline worker's."""
    gw: GatewayServer = start_gateway(base_config(sim.url, None))
    gateway = scrape(f"{gw.url}/metrics")
    worker = pipeline_worker_metrics(tmp_path)
    assert "standby_pipeline_runs_total" in worker and "standby_requests_total" in gateway
    exported = {**gateway, **worker}
    for name, kind in DOCUMENTED_METRICS.items():
        if name in exported:
            assert exported[name] == kind, (
                f"{name} is a {exported[name]}, docs/runbook.md says {kind}"
            )
    missing = metrics_read() - set(exported)
    assert not missing, f"used by rules/dashboard but not on /metrics: {sorted(missing)}"


# ------------------------------------------------------------------------------- dashboard


def test_dashboard_shape_and_thresholds_match_the_alerts() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert 36 <= dash["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"

    panels: list[dict[str, Any]] = []
    for panel in dash["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    kinds = {p["type"] for p in panels}
    assert {"timeseries", "state-timeline", "stat"} <= kinds
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]

    all_exprs = "\n".join(dashboard_exprs(dash))
    for needed in (
        "histogram_quantile(0.95",
        "standby_time_to_first_token_seconds_bucket",
        "standby_request_duration_seconds_bucket",
        "standby_fallback_model_info",
        "standby_fallback_model_score",
        "standby_capture_queue_depth",
        'standby_capture_events_total{job=~"$job"}',
        "sum by (reason)",
    ):
        assert needed in all_exprs, needed

    by_title = {p["title"]: p for p in panels}
    breaker = next(p for p in panels if p["type"] == "state-timeline" and "breaker" in p["title"])
    assert "standby_breaker_state" in breaker["targets"][0]["expr"]
    rate_panel = next(p for t, p in by_title.items() if t.startswith("Fallback rate ("))
    steps = [s["value"] for s in rate_panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    rules = {r["alert"]: r["expr"] for r in alert_rules()}
    for name in ("StandbyFallbackRateHigh", "StandbyFallbackRateCritical"):
        match = re.search(r"ratio_rate5m > ([0-9.]+)", rules[name])
        assert match is not None
        assert float(match.group(1)) in steps, f"dashboard threshold lines miss {name}'s"
    score = next(p for t, p in by_title.items() if "model score" in t)
    score_steps = [s["value"] for s in score["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert 90 in score_steps


@pytest.mark.parametrize("path", [RULES, RULE_TESTS, PROMETHEUS_CONFIG, ALERTMANAGER_CONFIG])
def test_deploy_yaml_parses(path: Path) -> None:
    assert yaml.safe_load(path.read_text())
