"""Tests of the generated Prometheus rules, the promtool unit tests in rules/tests and the panel queries.

promtool (Debian's prometheus package, 2.42) runs every rule file and unit test file as rendered
for the dev stack by `components.render`, so the tests check what Prometheus would load.
"""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import rules, signals
from components.config import stack_file_settings
from components.contract import PRESETS, contract_from_settings
from components.render import render_stack
from components.rendering import REPOSITORY_ROOT
from components.settings import ConfigError, load_settings

PROMTOOL = shutil.which("promtool")
UNIT_TEST_DIR = REPOSITORY_ROOT / "rules" / "tests"
UNIT_TEST_FILES = sorted(UNIT_TEST_DIR.glob("*.yml"))
REQUIRED_ANNOTATIONS = ("summary", "description", "runbook_url")

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not found: install Debian's prometheus package")


def _settings(stack: str = "dev", **overrides: Any):
    return load_settings({**stack_file_settings(stack).model_dump(by_alias=True), **overrides, "apiMetricsToken": "x"})


def _alerts(documents: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for document in documents.values() for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def _records(documents: dict[str, dict[str, Any]]) -> set[str]:
    return {rule["record"] for document in documents.values() for group in document["groups"] for rule in group["rules"] if "record" in rule}


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def rendered_rules(tmp_path_factory) -> Path:
    """Return the dev stack's rendered rule folder, with the unit tests copied beside it as in the repository."""
    out = tmp_path_factory.mktemp("dev")
    render_stack("dev", out)
    rules_dir = out / "prometheus" / "rules"
    shutil.copytree(UNIT_TEST_DIR, rules_dir / "tests")
    return rules_dir


# --- Generated files -----------------------------------------------------------------------------


def test_committed_rules_current():
    expected = rules.render_rule_files(stack_file_settings("dev"))
    committed = {path.name: path.read_text() for path in (REPOSITORY_ROOT / "rules").glob("*.yml")}
    assert sorted(committed) == sorted(expected), "rules/ holds other files than the generator writes"
    for name, text in expected.items():
        assert committed[name] == text, f"rules/{name} is stale: run .venv/bin/python -m components.rules"


def test_rendered_rules_equal_generator(rendered_rules):
    expected = rules.render_rule_files(stack_file_settings("dev"))
    rendered = {path.name: path.read_text() for path in rendered_rules.glob("*.yml")}
    assert rendered == expected


@needs_promtool
@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_promtool_check_rules(stack, tmp_path):
    render_stack(stack, tmp_path)
    files = sorted(str(path) for path in (tmp_path / "prometheus" / "rules").glob("*.yml"))
    assert files
    result = _promtool("check", "rules", *files, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
@pytest.mark.parametrize("convention", sorted(PRESETS))
def test_promtool_check_rules_per_convention(convention, tmp_path):
    written = rules.write_rule_files(_settings(metricConvention=convention), tmp_path)
    result = _promtool("check", "rules", *map(str, written), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- promtool unit tests -------------------------------------------------------------------------


@needs_promtool
@pytest.mark.parametrize("test_file", [path.name for path in UNIT_TEST_FILES])
def test_promtool_unit_tests(test_file, rendered_rules):
    result = _promtool("test", "rules", f"tests/{test_file}", cwd=rendered_rules)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_unit_tests_fail_on_other_threshold(tmp_path):
    # Proves the error-rate cases depend on the rendered threshold: at 50% the "fires" cases must fail.
    rules.write_rule_files(_settings(alertErrorRateThreshold="0.5"), tmp_path)
    shutil.copytree(UNIT_TEST_DIR, tmp_path / "tests")
    result = _promtool("test", "rules", "tests/api-errors.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "busy endpoint failing fires" in result.stdout + result.stderr


def test_every_alert_has_unit_cases():
    alert_names = {rule["alert"] for rule in _alerts(rules.rule_documents(stack_file_settings("dev")))}
    assert alert_names
    firing, silent = set(), set()
    for path in UNIT_TEST_FILES:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])

    assert alert_names - firing == set(), "alerts without a case where they fire"
    # Watchdog always fires, so it has no silent case.
    assert alert_names - silent - {"Watchdog"} == set(), "alerts without a case where they stay silent"


# --- Alert metadata ------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_alerts_have_metadata(stack):
    alerts = _alerts(rules.rule_documents(stack_file_settings(stack)))
    assert alerts
    for alert in alerts:
        assert alert["labels"].get("severity"), f"{alert['alert']} has no severity"
        for key in REQUIRED_ANNOTATIONS:
            assert alert["annotations"].get(key), f"{alert['alert']} has no {key}"


def test_runbook_urls_point_at_files():
    settings = stack_file_settings("dev")
    alerts = _alerts(rules.rule_documents(settings))
    assert alerts
    base = settings.runbook_base_url.rstrip("/") + "/"
    for alert in alerts:
        url = alert["annotations"]["runbook_url"]
        assert url.startswith(base)
        relative = url.removeprefix(base)
        assert relative == f"docs/runbooks/{alert['alert']}.md"
        assert (REPOSITORY_ROOT / relative).is_file(), f"runbook {relative} of {alert['alert']} is missing"


def test_runbooks_have_sections():
    runbooks = sorted((REPOSITORY_ROOT / "docs" / "runbooks").glob("*.md"))
    assert runbooks
    for path in runbooks:
        text = path.read_text()
        assert "## What to check" in text, path.name
        assert "## What to do" in text, path.name


def test_ratio_and_duration_values_humanized():
    alerts = _alerts(rules.rule_documents(stack_file_settings("dev")))
    by_name = {alert["alert"]: alert for alert in alerts}
    assert "humanizePercentage" in by_name["HighErrorRate"]["annotations"]["description"]
    assert "humanizeDuration" in by_name["HighLatency"]["annotations"]["description"]
    assert "humanizePercentage" in by_name["MagflowApiAvailabilityBudgetBurn"]["annotations"]["description"]


# --- Metric contract -----------------------------------------------------------------------------


def test_contract_default_names():
    contract = contract_from_settings(stack_file_settings("dev"))
    assert contract.request_duration == "http_server_duration_seconds"
    assert contract.requests == "http_server_requests_total"
    assert (contract.method_label, contract.endpoint_label, contract.status_code_label) == ("method", "endpoint", "status_code")


def test_contract_overrides_preset():
    contract = contract_from_settings(_settings(metricConvention="otel-legacy", labelEndpoint="http_target"))
    assert contract.endpoint_label == "http_target"
    assert contract.method_label == "http_method"
    assert contract.request_duration_unit == "milliseconds"


def test_contract_renamed_otel_histogram_counts_itself():
    contract = contract_from_settings(_settings(metricConvention="otel-stable", metricRequestDuration="api_duration_seconds"))
    assert contract.requests == "api_duration_seconds_count"


def test_rules_use_contract_names():
    text = "".join(rules.render_rule_files(_settings(metricConvention="otel-stable")).values())
    assert "http_server_request_duration_seconds_bucket" in text
    assert 'http_response_status_code=~"5.."' in text
    assert "http_server_duration_seconds" not in text
    assert "status_code=~" not in text.replace("http_response_status_code=~", "")


def test_millisecond_threshold_scaled():
    text = "".join(rules.render_rule_files(_settings(metricConvention="otel-legacy")).values())
    # 500ms is the bucket bound 500 of a millisecond histogram; quantiles are scaled back to seconds.
    assert 'le=~"500([.]0*)?"' in text
    assert "* 0.001" in text


@pytest.mark.parametrize("invalid", [{"labelMethod": "http-method"}, {"metricRequests": "9requests"}, {"sloAvailabilityObjective": "1"}])
def test_contract_invalid_values_rejected(invalid):
    with pytest.raises(ConfigError) as error:
        _settings(**invalid)
    assert next(iter(invalid)) in str(error.value)


@needs_promtool
def test_millisecond_histogram_promtool(tmp_path):
    # Old OpenTelemetry conventions: a histogram in ms with `le` bounds such as "500" and "1000".
    rules.write_rule_files(_settings(metricConvention="otel-legacy"), tmp_path)
    labels = 'job="magflow-api", instance="api-1:8000", environment="development", http_route="/orders", http_method="GET", http_status_code="200"'
    series = [
        {"series": f'http_server_duration_milliseconds_bucket{{{labels}, le="500"}}', "values": "0+480x60"},
        {"series": f'http_server_duration_milliseconds_bucket{{{labels}, le="1000"}}', "values": "0+600x60"},
        {"series": f'http_server_duration_milliseconds_bucket{{{labels}, le="+Inf"}}', "values": "0+600x60"},
        {"series": f"http_server_duration_milliseconds_count{{{labels}}}", "values": "0+600x60"},
    ]
    expected_labels = '{job="magflow-api", environment="development"}'
    test_file = {
        "rule_files": [rules.API_FILE, rules.SLO_FILE],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    # rank 0.95 * 10 = 9.5 lies in (500, 1000]: 500 + 500 * 1.5 / 2 = 875ms = 0.875s.
                    {
                        "expr": "round(job:http_request_duration_seconds:p95_rate5m, 0.0001)",
                        "eval_time": "30m",
                        "exp_samples": [{"labels": expected_labels, "value": 0.875}],
                    },
                    {
                        "expr": "round(job_endpoint:http_request_duration_seconds:p95_rate5m, 0.0001)",
                        "eval_time": "30m",
                        "exp_samples": [{"labels": expected_labels[:-1] + ', http_route="/orders"}', "value": 0.875}],
                    },
                    # 20% of the requests are slower than the 500ms latency SLO threshold.
                    {
                        "expr": 'round(job:slo_errors:ratio_rate1h{slo="latency"}, 0.0001)',
                        "eval_time": "30m",
                        "exp_samples": [{"labels": expected_labels[:-1] + ', slo="latency"}', "value": 0.2}],
                    },
                ],
            }
        ],
    }
    (tmp_path / "ms-test.yml").write_text(yaml.safe_dump(test_file))
    result = _promtool("test", "rules", "ms-test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- Panel queries -------------------------------------------------------------------------------


def _query_fields(queries: signals.PanelQueries) -> dict[str, str]:
    names = {"endpoint_label", "method_label", "status_code_label"}
    return {name: value for name, value in vars(queries).items() if name not in names}


@pytest.mark.parametrize("convention", sorted(PRESETS))
def test_panel_queries_filter_variables(convention):
    queries = _query_fields(signals.panel_queries(_settings(metricConvention=convention)))
    assert queries
    for name, query in queries.items():
        job = signals.HEALTH_JOB if name == "probe_success" else signals.API_JOB
        assert f'job="{job}"' in query, name
        assert 'environment=~"$environment"' in query, name
        # Service-level queries read per-job series, which have no instance label.
        if name in signals.SERVICE_LEVEL_QUERIES:
            assert "instance" not in query, name
        else:
            assert 'instance=~"$instance"' in query, name


def test_panel_queries_read_recorded_series():
    settings = stack_file_settings("dev")
    recorded = _records(rules.rule_documents(settings))
    queries = _query_fields(signals.panel_queries(settings))
    used = {name for query in queries.values() for name in re.findall(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b", query)}
    assert used
    assert used - recorded == set(), "panel queries read series that no recording rule writes"

    # Only raw_* variants may compute quantiles from the scraped buckets.
    for name, query in queries.items():
        if not name.startswith("raw_"):
            assert "http_server_duration_seconds_bucket" not in query, name


def test_panel_labels_follow_contract():
    queries = signals.panel_queries(_settings(metricConvention="otel-stable"))
    assert queries.endpoint_label == "http_route"
    assert queries.method_label == "http_request_method"
    assert "sum by (job, environment, http_route, http_request_method)" in queries.raw_request_rate_by_endpoint_method


def test_service_level_queries_exist():
    fields = set(vars(signals.panel_queries(stack_file_settings("dev"))))
    assert signals.SERVICE_LEVEL_QUERIES
    assert signals.SERVICE_LEVEL_QUERIES <= fields


def test_default_latency_queries_read_one_series_per_line():
    # histogram_quantile() at query time took seconds per 24-hour panel at production size.
    queries = signals.panel_queries(stack_file_settings("dev"))
    for query in (queries.latency_p95_by_endpoint, queries.latency_p99_by_endpoint, queries.request_rate_by_endpoint):
        assert "histogram_quantile" not in query, query
        assert "sum" not in query, query


def test_traffic_alerts_read_recorded_last_week():
    alerts = {alert["alert"]: alert for alert in _alerts(rules.rule_documents(stack_file_settings("dev")))}
    for name in ("MagflowApiTrafficDrop", "MagflowApiTrafficSurge"):
        expr = alerts[name]["expr"]
        assert f"{signals.REQUESTS_BY_JOB}{{job=\"magflow-api\"}} offset 1w" in expr, name
        assert "http_server_requests_total" not in expr, name


@needs_promtool
@pytest.mark.parametrize("convention", sorted(PRESETS))
def test_panel_queries_parse(convention, tmp_path):
    # promtool parses each query as a recording rule, with Grafana's variables replaced.
    queries = _query_fields(signals.panel_queries(_settings(metricConvention=convention)))
    assert queries
    expressions = {
        name: query.replace("$instance", ".*").replace("$environment", ".*").replace("$__range", "1h")
        for name, query in queries.items()
    }
    document = {"groups": [{"name": "panels", "rules": [{"record": f"panel:{name}", "expr": expr} for name, expr in expressions.items()]}]}
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump(document))
    result = _promtool("check", "rules", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
