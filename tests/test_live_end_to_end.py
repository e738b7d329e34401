"""End to end on 127.0.0.1: reference app -> Prometheus (+ blackbox exporter) -> rules -> Alertmanager.

Each test starts its own reference app, Prometheus, Alertmanager and blackbox exporter from the
rendered dev configuration, drives traffic with hey, and stops every process it started.
Alert `for` durations come from stack config values passed to `load_settings`, so the rules
under test are the ones the stack deploys, with shorter waits. The seven tests take about two
minutes, most of it spent on traffic and on waiting for alerts.
"""

import re
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from components.services import blackbox_exporter, prometheus
from components.settings import CONFIG_KEYS
from live import http_get
from live_stack import (
    LiveStack,
    alertmanager_alerts,
    http_status,
    prometheus_alerts,
    query,
    run_hey,
    running_stack,
    wait_for,
    wait_for_targets,
)

pytestmark = pytest.mark.live

DASHBOARD = "magflow-api.json"
# Every alert's `for` duration key that the stack config has, shortened so alerts fire within seconds.
FOR_DURATION = "5s"
OVERRIDES = {key: FOR_DURATION for key in CONFIG_KEYS if key.startswith("alert") and key.endswith("For")}
OVERRIDES["apiScrapeInterval"] = "1s"
# The test's traffic lasts seconds, so its rate over a 5m window is low. A lower floor keeps the
# error-rate alerts from staying silent only because of the short test.
if "alertMinRequestRate" in CONFIG_KEYS:
    OVERRIDES["alertMinRequestRate"] = "0.01"

# How long a rule with FOR_DURATION needs, with 1s scrapes and evaluations, plus margin for the
# rate windows to see two samples and for Prometheus to send the alert.
ALERT_TIMEOUT = 45.0

# Grafana's built-in variables, as Grafana would set them for a dashboard open over the last 5
# minutes. Grafana's $__rate_interval is at least four scrape intervals, and 1m also covers
# traffic that ended a few seconds before the query.
GRAFANA_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LiveStack]:
    with running_stack(tmp_path, OVERRIDES) as running:
        wait_for_targets(running, {prometheus.API_JOB, prometheus.API_HEALTH_JOB})
        yield running


def find_rule(stack: LiveStack, alert: str) -> dict[str, Any] | None:
    for group in stack.rule_groups():
        for rule in group.get("rules") or []:
            if rule.get("alert") == alert:
                return rule
    return None


def alert_names(alerts: list[dict[str, Any]]) -> set[str]:
    """Return the alertname of each alert, from Alertmanager's or Prometheus' API."""
    return {alert["labels"]["alertname"] for alert in alerts}


# Traffic is spread over several scrapes with -z and -q: Prometheus' rate() ignores the first
# sample of a new series, so a burst between two scrapes would show as no traffic at all.
def drive_healthy_traffic(stack: LiveStack) -> None:
    for path in ("/orders", "/products", "/orders/1"):
        run_hey(f"{stack.app_url}{path}", "-z", "3s", "-c", "2", "-q", "20")
    body = '{"product_id": 10, "quantity": 1}'
    run_hey(f"{stack.app_url}/orders", "-z", "3s", "-c", "1", "-q", "5", "-m", "POST", "-T", "application/json", "-d", body)


def drive_errors(stack: LiveStack) -> None:
    run_hey(f"{stack.app_url}/orders/fail", "-z", "5s", "-c", "2", "-q", "20")


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (panel title, PromQL expression) of every panel target, rows included."""
    queries = []
    pending = list(dashboard.get("panels") or [])
    while pending:
        panel = pending.pop(0)
        pending.extend(panel.get("panels") or [])
        for target in panel.get("targets") or []:
            if target.get("expr"):
                queries.append((panel.get("title", "?"), target["expr"]))
    return queries


def default_variable_values(dashboard: dict[str, Any], known: dict[str, str]) -> dict[str, str]:
    """Return each dashboard variable's value in the default selection of the dashboard.

    A variable whose default is All takes its `allValue`. Any other variable takes its value from
    `known`, which is the single value that the variable's query lists in this test.
    """
    values = {}
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        name = variable["name"]
        current = (variable.get("current") or {}).get("value")
        if current in ("$__all", ["$__all"]) and variable.get("allValue"):
            values[name] = variable["allValue"]
        elif name in known:
            values[name] = known[name]
        elif isinstance(current, str):
            values[name] = current
    return values


def substitute_variables(expr: str, values: dict[str, str]) -> str:
    """Replace $name, ${name} and ${name:format} as Grafana does for a single selected value."""

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"dashboard variable ${name} has no test value: add it to the test's variable table")
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


def test_blackbox_probe_health(stack: LiveStack) -> None:
    # The probe job reports the app's /health through the exporter, under the app's instance label.
    assert http_status(f"{stack.app_url}/health") == 200
    result = query(stack, f'probe_success{{job="{prometheus.API_HEALTH_JOB}"}}')
    assert result, "no probe_success series from the health probe job"
    assert result[0]["metric"]["instance"] == stack.app_address
    assert result[0]["value"][1] == "1"


def test_blackbox_probe_rejects_metrics(stack: LiveStack) -> None:
    # /metrics returns 401 without the token, so the http_2xx module must report a failed probe.
    exporter = stack.addresses[blackbox_exporter.NAME]
    url = f"https://{exporter}/probe?module={blackbox_exporter.HTTP_MODULE}&target={stack.app_url}/metrics"
    status, body = http_get(url)
    assert status == 200
    assert re.search(r"^probe_success 0$", body.decode(), re.MULTILINE), body.decode()[-500:]


def test_metrics_require_token(stack: LiveStack) -> None:
    assert http_status(f"{stack.app_url}/metrics") == 401


def test_dashboard_variables_list_app(stack: LiveStack) -> None:
    dashboard = stack.dashboard(DASHBOARD)
    if dashboard is None:
        pytest.skip(f"the stack renders no Grafana dashboard {DASHBOARD}")

    variables = [variable for variable in dashboard["templating"]["list"] if variable.get("type") == "query"]
    assert variables, f"dashboard {DASHBOARD} has no query variable"

    known = {"instance": stack.app_address, "environment": stack.settings.environment}
    values = {**GRAFANA_VARIABLES, **default_variable_values(dashboard, known)}
    for variable in variables:
        definition = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\s*\)\s*", definition, re.DOTALL)
        assert match, f"variable {variable['name']} is not a label_values(<selector>, <label>) query: {definition}"

        selector, label = substitute_variables(match.group(1), values), match.group(2)
        listed = {series["metric"].get(label) for series in query(stack, f"count by ({label}) ({selector})")}
        assert known.get(variable["name"], next(iter(listed), None)) in listed, f"{variable['name']} lists {listed}"


def test_dashboard_queries_return_data(stack: LiveStack) -> None:
    dashboard = stack.dashboard(DASHBOARD)
    if dashboard is None:
        pytest.skip(f"the stack renders no Grafana dashboard {DASHBOARD}")

    queries = dashboard_queries(dashboard)
    assert queries, f"dashboard {DASHBOARD} has no panel with a PromQL expression"

    drive_healthy_traffic(stack)
    drive_errors(stack)
    run_hey(f"{stack.app_url}/orders/slow?seconds=0.2", "-z", "3s", "-c", "2")

    known = {"instance": stack.app_address, "environment": stack.settings.environment}
    variables = {**GRAFANA_VARIABLES, **default_variable_values(dashboard, known)}

    def empty_panels() -> list[str]:
        return [
            f"{title}: {substitute_variables(expr, variables)}"
            for title, expr in queries
            if not query(stack, substitute_variables(expr, variables))
        ]

    # Recording rules and rate windows need a few scrapes and evaluations after the traffic.
    deadline = time.monotonic() + 30.0
    empty = empty_panels()
    while empty and time.monotonic() < deadline:
        time.sleep(1.0)
        empty = empty_panels()
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_errors_raise_high_error_rate(stack: LiveStack) -> None:
    rule = find_rule(stack, "HighErrorRate")
    if rule is None:
        pytest.skip("the rendered rules have no HighErrorRate alert")
    assert rule.get("for") == FOR_DURATION, f"HighErrorRate's for is {rule.get('for')!r}, not the alertErrorRateFor value"

    drive_healthy_traffic(stack)
    drive_errors(stack)

    firing = wait_for(
        lambda: [alert for alert in alertmanager_alerts(stack) if alert["labels"]["alertname"] == "HighErrorRate"],
        timeout=ALERT_TIMEOUT,
    )
    assert firing, f"HighErrorRate did not reach Alertmanager; Prometheus alerts: {prometheus_alerts(stack)}"
    assert firing[0]["labels"]["job"] == prometheus.API_JOB
    assert firing[0]["labels"]["severity"] == "critical"
    assert firing[0]["status"]["state"] == "active"


def test_healthy_traffic_raises_only_watchdog(stack: LiveStack) -> None:
    drive_healthy_traffic(stack)

    # The Watchdog proves that rules are evaluated and alerts reach Alertmanager, so an empty
    # set of other alerts is not just a broken alert path.
    watchdog = wait_for(lambda: "Watchdog" in alert_names(alertmanager_alerts(stack)), timeout=ALERT_TIMEOUT)
    assert watchdog, f"Watchdog did not reach Alertmanager; Prometheus alerts: {prometheus_alerts(stack)}"

    # Longer than FOR_DURATION plus a few evaluations, so a rule that misfires on healthy traffic fires.
    run_hey(f"{stack.app_url}/orders", "-z", "10s", "-c", "2", "-q", "20")

    assert alert_names(prometheus_alerts(stack)) == {"Watchdog"}
    assert alert_names(alertmanager_alerts(stack)) == {"Watchdog"}
