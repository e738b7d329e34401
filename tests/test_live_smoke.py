"""Smoke test of the dev stack's alert path with Debian's Prometheus and Alertmanager on 127.0.0.1.

Both binaries read the rendered dev configuration, with only hosts, ports and paths moved by
`render_local_stack` of tests/live.py. The scrape targets of the other services point at free
loopback ports where nothing listens, so those scrapes fail without leaving the machine.
"""

import shutil
import time

import pytest
import yaml

from components.services import alertmanager as alertmanager_service
from components.services import endpoints as ep
from components.services import prometheus as prometheus_service
from live import (
    LocalStack,
    Process,
    get_json,
    http_get,
    render_local_stack,
    start_process,
    stop_process,
    wait_until_ready,
)

pytestmark = pytest.mark.live

READY_TIMEOUT = 30.0

# Prometheus 2.42's notifier learns the Alertmanager from service discovery, whose manager sends
# updates every 5s, so the first one comes about 5s after start. An evaluation before that drops
# the alert, and Prometheus resends a firing alert only every --rules.alert.resend-delay (1m by
# default): with defaults the Watchdog took 77s to arrive in one run. A 2s resend delay bounds the
# wait to about one evaluation interval (15s in the rendered config) plus those 5s. The flag is a
# command-line option, so the rendered configuration stays as rendered.
RESEND_DELAY = "2s"
WATCHDOG_TIMEOUT = 45.0


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH: install Debian's package with scripts/test.sh")
    return path


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> LocalStack:
    return render_local_stack("dev", tmp_path_factory.mktemp("dev-stack"))


@pytest.fixture(scope="module")
def alertmanager(local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Process:
    work = tmp_path_factory.mktemp("alertmanager")
    process = start_process(
        "alertmanager",
        [
            _binary("prometheus-alertmanager"),
            f"--config.file={local_stack.path(ep.ALERTMANAGER, 'alertmanager.yml')}",
            f"--storage.path={work / 'data'}",
            f"--web.listen-address={local_stack.address(ep.ALERTMANAGER, ep.ALERTMANAGER_PORT)}",
            # The rendered TLS and basic-auth settings, with the test CA's certificate.
            f"--web.config.file={local_stack.path(ep.ALERTMANAGER, alertmanager_service.WEB_CONFIG_FILE)}",
            # A single instance: an empty address turns gossip off, so no cluster port is opened.
            "--cluster.listen-address=",
        ],
        work / "alertmanager.log",
    )
    request.addfinalizer(lambda: stop_process(process))

    wait_until_ready(f"{_alertmanager_url(local_stack)}/-/ready", process, READY_TIMEOUT)
    return process


@pytest.fixture(scope="module")
def prometheus(
    local_stack: LocalStack, alertmanager: Process, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Process:
    work = tmp_path_factory.mktemp("prometheus")
    process = start_process(
        "prometheus",
        [
            _binary("prometheus"),
            f"--config.file={local_stack.path(ep.PROMETHEUS, 'prometheus.yml')}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address={local_stack.address(ep.PROMETHEUS, ep.PROMETHEUS_PORT)}",
            f"--web.config.file={local_stack.path(ep.PROMETHEUS, prometheus_service.WEB_CONFIG_FILE)}",
            f"--rules.alert.resend-delay={RESEND_DELAY}",
        ],
        work / "prometheus.log",
    )
    request.addfinalizer(lambda: stop_process(process))

    wait_until_ready(f"{_prometheus_url(local_stack)}/-/ready", process, READY_TIMEOUT)
    return process


def _prometheus_url(stack: LocalStack) -> str:
    return f"https://{stack.address(ep.PROMETHEUS, ep.PROMETHEUS_PORT)}"


def _alertmanager_url(stack: LocalStack) -> str:
    return f"https://{stack.address(ep.ALERTMANAGER, ep.ALERTMANAGER_PORT)}"


def test_alertmanager_ready(local_stack: LocalStack, alertmanager: Process) -> None:
    status, body = http_get(f"{_alertmanager_url(local_stack)}/-/ready")
    assert status == 200, f"Alertmanager /-/ready returned {status}: {body!r}. Log:\n{alertmanager.log()}"


def test_prometheus_ready(local_stack: LocalStack, prometheus: Process) -> None:
    status, body = http_get(f"{_prometheus_url(local_stack)}/-/ready")
    assert status == 200, f"Prometheus /-/ready returned {status}: {body!r}. Log:\n{prometheus.log()}"


def test_prometheus_rule_groups_loaded(local_stack: LocalStack, prometheus: Process) -> None:
    rule_files = sorted(local_stack.path(ep.PROMETHEUS, "rules").glob("*.yml"))
    assert rule_files, "the rendered dev stack has no rule files"
    expected = {group["name"] for path in rule_files for group in yaml.safe_load(path.read_text())["groups"]}

    groups = get_json(f"{_prometheus_url(local_stack)}/api/v1/rules")["data"]["groups"]
    loaded = {group["name"] for group in groups}

    assert expected, f"rule files {[path.name for path in rule_files]} declare no groups"
    assert loaded == expected, f"Prometheus loaded groups {sorted(loaded)}, rule files declare {sorted(expected)}"


def test_prometheus_watchdog_rule_loaded(local_stack: LocalStack, prometheus: Process) -> None:
    groups = get_json(f"{_prometheus_url(local_stack)}/api/v1/rules?type=alert")["data"]["groups"]
    alerts = [rule["name"] for group in groups for rule in group["rules"]]

    assert alerts, f"Prometheus loaded no alerting rules. Log:\n{prometheus.log()}"
    assert "Watchdog" in alerts, f"alerting rules {alerts} lack Watchdog"


def test_prometheus_alertmanager_active(local_stack: LocalStack, alertmanager: Process, prometheus: Process) -> None:
    # Discovery updates the notifier about every 5s, so the list can be empty right after start.
    expected = f"https://{local_stack.address(ep.ALERTMANAGER, ep.ALERTMANAGER_PORT)}/api/v2/alerts"
    deadline = time.monotonic() + 15.0
    active: list[str] = []
    while time.monotonic() < deadline:
        data = get_json(f"{_prometheus_url(local_stack)}/api/v1/alertmanagers")["data"]
        active = [entry["url"] for entry in data["activeAlertmanagers"]]
        if expected in active:
            break
        time.sleep(0.5)

    assert expected in active, f"active Alertmanagers {active} lack {expected}. Log:\n{prometheus.log()}"


def test_watchdog_reaches_alertmanager(local_stack: LocalStack, alertmanager: Process, prometheus: Process) -> None:
    deadline = time.monotonic() + WATCHDOG_TIMEOUT
    watchdogs: list[dict] = []
    names: list[str] = []
    while time.monotonic() < deadline:
        alerts = get_json(f"{_alertmanager_url(local_stack)}/api/v2/alerts")
        names = [alert["labels"].get("alertname", "") for alert in alerts]
        watchdogs = [alert for alert in alerts if alert["labels"].get("alertname") == "Watchdog"]
        if watchdogs:
            break
        time.sleep(0.5)

    assert watchdogs, (
        f"Watchdog did not reach Alertmanager within {WATCHDOG_TIMEOUT}s (alerts there: {names}). "
        f"Prometheus log:\n{prometheus.log()}\nAlertmanager log:\n{alertmanager.log()}"
    )

    labels = watchdogs[0]["labels"]
    # The external label shows the alert came through the rendered global config.
    assert labels.get("environment") == "development", f"Watchdog labels {labels} lack environment=development"
    receivers = [receiver["name"] for receiver in watchdogs[0]["receivers"]]
    assert receivers == ["none"], f"Watchdog was routed to {receivers}, expected only the 'none' receiver"


def test_prometheus_rules_evaluate_without_errors(local_stack: LocalStack, prometheus: Process) -> None:
    # Every group runs once per evaluation interval (15s), starting at an offset within it.
    deadline = time.monotonic() + 40.0
    rules: list[dict] = []
    while time.monotonic() < deadline:
        groups = get_json(f"{_prometheus_url(local_stack)}/api/v1/rules")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        if rules and all(rule["health"] != "unknown" for rule in rules):
            break
        time.sleep(1.0)

    assert rules, "Prometheus loaded no rules"
    unevaluated = [rule["name"] for rule in rules if rule["health"] == "unknown"]
    assert not unevaluated, f"rules not evaluated within 40s: {unevaluated}"
    failed = {rule["name"]: rule.get("lastError", "") for rule in rules if rule["health"] != "ok"}
    assert not failed, f"rules that failed to evaluate: {failed}"
