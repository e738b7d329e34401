"""Tests of the generated MagFlow API dashboard: freshness of the committed JSON, structure, queries, trace links."""

import json
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import dashboard
from components.config import stack_file_settings
from components.services import grafana
from components.signals import panel_queries
from live import LOOPBACK, free_port, get_json, start_process, stop_process, wait_until_ready

# Values that stand in for Grafana's macros and variables, so that Prometheus can read an expression.
GRAFANA_MACROS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
GRAFANA_VARIABLE = re.compile(r"\$\{?(\w+)\}?")
# A recorded series has a colon in its name (level:metric:operations).
RECORDED_SERIES = re.compile(r"\b[a-zA-Z_]\w*:[\w:]+")
LATENCY_PANELS = ("p95 latency by endpoint", "p99 latency by endpoint")
EXEMPLAR_PANELS = ("p95 latency by endpoint, raw with exemplars", "p99 latency by endpoint, raw with exemplars")
# Raw queries that may stay in the default rows: `up` and `probe_success` have one series per instance.
CHEAP_RAW_SERIES = ("up{", "probe_success{")


def committed() -> dict[str, Any]:
    return json.loads(dashboard.OUTPUT.read_text())


def all_panels(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Return every panel, rows included, with the panels that a collapsed row contains."""
    panels = []
    for panel in document["panels"]:
        panels.append(panel)
        panels += panel.get("panels") or []
    return panels


def content_panels(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Return every panel except the rows, which hold no query."""
    panels = [panel for panel in all_panels(document) if panel["type"] != "row"]
    assert panels, "the dashboard has no panels"
    return panels


def default_panels(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the panels outside collapsed rows: those that Grafana queries when the dashboard opens."""
    panels = [panel for panel in document["panels"] if panel["type"] != "row"]
    assert panels, "the dashboard has no panel outside collapsed rows"
    return panels


def drill_down_row(document: dict[str, Any]) -> dict[str, Any]:
    (row,) = [panel for panel in document["panels"] if panel["title"] == dashboard.DRILL_DOWN_ROW]
    return row


def panel_by_title(document: dict[str, Any], title: str) -> dict[str, Any]:
    matches = [panel for panel in all_panels(document) if panel["title"] == title]
    assert len(matches) == 1, f"expected one panel titled {title!r}, found {len(matches)}"
    return matches[0]


def expressions(document: dict[str, Any]) -> list[str]:
    exprs = [target["expr"] for panel in content_panels(document) for target in panel["targets"]]
    assert exprs, "the dashboard has no queries"
    return exprs


def to_prometheus(expr: str) -> str:
    """Replace Grafana's macros and variables so that Prometheus can parse and run the expression."""
    for macro, value in GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)
    return GRAFANA_VARIABLE.sub(".*", expr)


def decode_panes(url: str) -> dict[str, Any]:
    """Return the Explore panes of a data link URL, with Grafana's placeholders left as text."""
    parsed = urllib.parse.urlsplit(url)
    assert parsed.path == "/explore", f"link {url!r} does not open Explore"
    query = urllib.parse.parse_qs(parsed.query)
    assert "panes" in query, f"link {url!r} has no panes parameter"
    return json.loads(query["panes"][0])


def test_dashboard_file_current():
    expected = dashboard.render_dashboard(stack_file_settings(dashboard.SOURCE_STACK))
    assert dashboard.OUTPUT.read_text() == expected, (
        f"{dashboard.OUTPUT} is stale: run `.venv/bin/python -m components.dashboard` and commit the result"
    )


def test_dashboard_render_deterministic():
    settings = stack_file_settings(dashboard.SOURCE_STACK)
    assert dashboard.render_dashboard(settings) == dashboard.render_dashboard(settings)


def test_dashboard_text_format():
    text = dashboard.OUTPUT.read_text()
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_dashboard_uid_stable():
    assert committed()["uid"] == "magflow-api"


def test_dashboard_uid_is_home():
    assert grafana.home_dashboard_uid() == committed()["uid"]


def test_dashboard_read_only():
    assert committed()["editable"] is False


def test_panel_ids_unique():
    ids = [panel["id"] for panel in all_panels(committed())]
    assert ids
    assert len(ids) == len(set(ids))


def test_panels_have_prometheus_datasource():
    for panel in content_panels(committed()):
        assert panel.get("datasource") == {"type": "prometheus", "uid": grafana.PROMETHEUS_UID}, panel["title"]


def test_panels_have_expression():
    for panel in content_panels(committed()):
        targets = panel.get("targets") or []
        assert targets, f"panel {panel['title']!r} has no target"
        for target in targets:
            assert target.get("expr", "").strip(), f"panel {panel['title']!r} has a target without expr"


def test_targets_have_datasource():
    for panel in content_panels(committed()):
        for target in panel["targets"]:
            assert target.get("datasource", {}).get("uid") == grafana.PROMETHEUS_UID, panel["title"]


def test_target_ref_ids_unique():
    for panel in content_panels(committed()):
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_panels_within_grid():
    for panel in all_panels(committed()):
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]


def test_variables_present():
    variables = {variable["name"]: variable for variable in committed()["templating"]["list"]}
    assert set(variables) == {"environment", "instance"}


def test_environment_variable_query():
    variables = {variable["name"]: variable for variable in committed()["templating"]["list"]}
    assert variables["environment"]["query"] == 'label_values(up{job="magflow-api"}, environment)'


def test_instance_variable_filters_environment():
    variables = {variable["name"]: variable for variable in committed()["templating"]["list"]}
    assert 'environment=~"$environment"' in variables["instance"]["query"]


def test_variables_all_matches_missing_label():
    # The SLO series have no instance label: "All" must expand to a regex that matches the empty string.
    for variable in committed()["templating"]["list"]:
        assert variable["includeAll"] is True, variable["name"]
        assert variable["allValue"] == ".*", variable["name"]


def test_variables_use_prometheus():
    for variable in committed()["templating"]["list"]:
        assert variable["datasource"]["uid"] == grafana.PROMETHEUS_UID, variable["name"]


def test_queries_filter_variables():
    for panel in content_panels(committed()):
        for target in panel["targets"]:
            expr = target["expr"]
            assert 'environment=~"$environment"' in expr, expr
            # Service-level panels read per-job series and say that they ignore the instance variable.
            if 'instance=~"$instance"' not in expr:
                assert "instance" not in expr, expr
                assert "ignore" in panel["description"], panel["title"]
                assert "instance variable" in panel["description"], panel["title"]


def test_required_panels_present():
    titles = {panel["title"] for panel in content_panels(committed())}
    required = {
        "Request rate by endpoint",
        "Request rate by endpoint and method",
        "Request rate by instance",
        "p95 latency by instance",
        *EXEMPLAR_PANELS,
        "p95 latency by endpoint",
        "p99 latency by endpoint",
        "5xx error rate",
        "Scrape status by instance",
        "Health probe by instance",
        "Uptime over the time range",
        "Availability error budget remaining",
        "Latency error budget remaining",
    }
    assert required <= titles, f"missing panels: {sorted(required - titles)}"


def test_panels_use_signal_queries():
    queries = panel_queries(stack_file_settings(dashboard.SOURCE_STACK))
    document = committed()
    assert panel_by_title(document, "Request rate by endpoint")["targets"][0]["expr"] == queries.request_rate_by_endpoint
    assert panel_by_title(document, "Request rate by endpoint and method")["targets"][0]["expr"] == (
        queries.request_rate_by_endpoint_method
    )
    assert panel_by_title(document, "p95 latency by endpoint")["targets"][0]["expr"] == queries.latency_p95_by_endpoint
    assert panel_by_title(document, "p99 latency by endpoint")["targets"][0]["expr"] == queries.latency_p99_by_endpoint
    assert panel_by_title(document, "5xx error rate")["targets"][0]["expr"] == queries.error_ratio
    assert panel_by_title(document, "Health probe by instance")["targets"][0]["expr"] == queries.probe_success
    assert panel_by_title(document, "Uptime over the time range")["targets"][0]["expr"] == queries.availability_ratio


def test_raw_query_panels_say_so():
    checked = 0
    for panel in content_panels(committed()):
        if any(RECORDED_SERIES.search(target["expr"]) for target in panel["targets"]):
            continue
        checked += 1
        assert "raw query" in panel.get("description", "").lower(), (
            f"panel {panel['title']!r} reads no recording rule but its description does not say so"
        )
    assert checked > 0


def test_drill_down_row_collapsed():
    row = drill_down_row(committed())
    assert row["collapsed"] is True
    assert row.get("panels"), "the drill-down row holds no panel"


def test_default_panels_read_no_raw_api_series():
    # Raw queries over the API's request series are slow over long ranges, so they stay in the drill-down row.
    for panel in default_panels(committed()):
        for target in panel["targets"]:
            expr = target["expr"]
            if RECORDED_SERIES.search(expr):
                continue
            assert expr.startswith(CHEAP_RAW_SERIES) or expr.startswith("sum(up{"), f"{panel['title']}: {expr}"


def test_default_panels_avoid_quantiles():
    # histogram_quantile() over every endpoint's buckets took seconds per 24-hour panel at production size.
    for panel in default_panels(committed()):
        for target in panel["targets"]:
            assert "histogram_quantile" not in target["expr"], panel["title"]


def test_exemplar_panels_in_drill_down():
    titles = {panel["title"] for panel in drill_down_row(committed())["panels"]}
    assert set(EXEMPLAR_PANELS) <= titles


def test_latency_panels_link_jaeger():
    for title in LATENCY_PANELS + EXEMPLAR_PANELS:
        links = panel_by_title(committed(), title)["fieldConfig"]["defaults"].get("links") or []
        assert links, f"panel {title!r} has no data link"
        panes = [decode_panes(link["url"]) for link in links]
        datasources = {pane["datasource"] for document in panes for pane in document.values()}
        assert grafana.JAEGER_UID in datasources, f"panel {title!r} has no link to the Jaeger datasource"


def test_trace_link_query():
    panes = decode_panes(dashboard.trace_search_url("endpoint"))
    (pane,) = panes.values()
    (query,) = pane["queries"]
    assert query["datasource"] == {"type": "jaeger", "uid": grafana.JAEGER_UID}
    assert query["queryType"] == "search"
    assert query["service"] == dashboard.API_SERVICE_NAME
    assert query["tags"] == 'http.route="${__field.labels.endpoint}"'
    assert pane["range"] == {"from": "${__from}", "to": "${__to}"}


def test_trace_link_placeholders_unencoded():
    # Grafana fills in only literal ${...} placeholders, so they must survive the percent-encoding.
    url = dashboard.trace_search_url("endpoint")
    for placeholder in ("${__field.labels.endpoint}", "${__from}", "${__to}"):
        assert placeholder in url


def test_exemplar_targets_request_exemplars():
    for title in EXEMPLAR_PANELS:
        for target in panel_by_title(committed(), title)["targets"]:
            assert target.get("exemplar") is True, title
            assert not RECORDED_SERIES.search(target["expr"]), f"{title}: recorded series carry no exemplars"


def test_prometheus_datasource_exemplars_jaeger():
    (prometheus,) = [
        source
        for source in grafana.render_datasources(stack_file_settings(dashboard.SOURCE_STACK))["datasources"]
        if source["uid"] == grafana.PROMETHEUS_UID
    ]
    destinations = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    assert {"name": "trace_id", "datasourceUid": grafana.JAEGER_UID} in [
        {key: destination[key] for key in ("name", "datasourceUid")} for destination in destinations
    ]


def test_expression_substitution_complete():
    for expr in expressions(committed()):
        assert "$" not in to_prometheus(expr), expr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) is not installed")
def test_expressions_parse_promtool(tmp_path: Path):
    # promtool 2.42 has no command that only parses PromQL; `check rules` parses every rule's expr.
    exprs = expressions(committed())
    rules = [{"record": f"dashboard:check_{index}:expr", "expr": to_prometheus(expr)} for index, expr in enumerate(exprs)]
    rule_file = tmp_path / "dashboard.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    result = subprocess.run(["promtool", "check", "rules", str(rule_file)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"promtool rejected a dashboard query:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory):
    """Start Debian's Prometheus on a free loopback port with no scrape targets, and return its URL."""
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus (Debian package prometheus) is not installed")
    directory = tmp_path_factory.mktemp("prometheus")
    config = directory / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\n")
    port = free_port()
    process = start_process(
        "prometheus",
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address={LOOPBACK}:{port}",
        ],
        directory / "prometheus.log",
    )
    try:
        url = f"http://{LOOPBACK}:{port}"
        wait_until_ready(f"{url}/-/ready", process)
        yield url
    finally:
        stop_process(process)


@pytest.mark.live
def test_expressions_run_prometheus(prometheus_url: str):
    for expr in expressions(committed()):
        query = urllib.parse.urlencode({"query": to_prometheus(expr)})
        response = get_json(f"{prometheus_url}/api/v1/query?{query}")
        assert response["status"] == "success", f"Prometheus rejected {expr!r}: {response}"
