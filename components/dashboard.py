"""Build the MagFlow API dashboard with grafana-foundation-sdk and write `dashboards/magflow-api.json`.

    python -m components.dashboard

Grafana loads the committed JSON file through file provisioning (see `components/services/grafana.py`),
so the SDK (requirements-dev.txt) is needed only to regenerate the file, never at deploy time.
The queries come from `components.signals`, computed from the settings of the dev stack file.
"""

import json
import re
import sys
from typing import Any
from urllib.parse import quote

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from components.config import stack_file_settings
from components.rendering import REPOSITORY_ROOT
from components.services import grafana
from components.services.prometheus import API_JOB
from components.settings import StackSettings
from components.signals import PanelQueries, panel_queries

UID = "magflow-api"
TITLE = "MagFlow API"
DRILL_DOWN_ROW = "Drill-down (per instance, raw queries)"
OUTPUT = grafana.DASHBOARDS_DIR / grafana.HOME_DASHBOARD
SOURCE_STACK = "dev"

# NOTE: assumes the API reports its traces with service.name equal to its scrape job name, and that
# the endpoint label of its metrics contains the same value as the http.route attribute of its server spans.
API_SERVICE_NAME = API_JOB
TRACE_ROUTE_ATTRIBUTE = "http.route"

PROMETHEUS = model.DataSourceRef(type_val="prometheus", uid=grafana.PROMETHEUS_UID)

_STATUS_MAPPINGS = [
    model.ValueMap(
        options={
            "0": model.ValueMappingResult(text="DOWN", color="red", index=0),
            "1": model.ValueMappingResult(text="UP", color="green", index=1),
        }
    )
]
_BUDGET_THRESHOLDS = [
    model.Threshold(value=None, color="red"),
    model.Threshold(value=0, color="orange"),
    model.Threshold(value=0.25, color="green"),
]

_PLACEHOLDER = re.compile(r"(\$\{[^}]+\})")


def _percent_encode_keeping_placeholders(text: str) -> str:
    """Percent-encode text for a URL, leaving `${...}` placeholders for Grafana to fill in.

    Grafana percent-encodes the value of each placeholder in a data link URL itself.
    """
    parts = _PLACEHOLDER.split(text)
    return "".join(part if _PLACEHOLDER.fullmatch(part) else quote(part, safe="") for part in parts)


def trace_search_url(endpoint_label: str) -> str:
    """Return a Grafana Explore URL that searches Jaeger for the API's traces of one endpoint.

    The endpoint comes from the series under the cursor, the time range from the dashboard.
    """
    query = {
        "refId": "A",
        "datasource": {"type": "jaeger", "uid": grafana.JAEGER_UID},
        "queryType": "search",
        "service": API_SERVICE_NAME,
        # Jaeger's search form takes tags in logfmt.
        "tags": f'{TRACE_ROUTE_ATTRIBUTE}="${{__field.labels.{endpoint_label}}}"',
    }
    pane = {
        "datasource": grafana.JAEGER_UID,
        "queries": [query],
        "range": {"from": "${__from}", "to": "${__to}"},
    }
    panes = json.dumps({"traces": pane}, separators=(",", ":"), sort_keys=True)
    return f"/explore?schemaVersion=1&orgId=1&panes={_percent_encode_keeping_placeholders(panes)}"


def _target(expr: str, legend: str, exemplar: bool = False) -> prometheus.Dataquery:
    target = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id("A").datasource(PROMETHEUS)
    if exemplar:
        target = target.exemplar(True)
    return target


def _traces_link(endpoint_label: str) -> dashboard_builder.DashboardLink:
    return (
        dashboard_builder.DashboardLink("Traces of ${__field.labels." + endpoint_label + "} in Jaeger")
        .url(trace_search_url(endpoint_label))
        .target_blank(True)
    )


def _time_series(title: str, description: str, unit: str) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit(unit)
        .span(12)
        .height(8)
        .legend(
            common_builder.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
        )
        .tooltip(common_builder.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING))
    )


def _stat(title: str, description: str, span: int) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .span(span)
        .height(5)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )


def _status_stat(title: str, description: str, expr: str) -> stat.Panel:
    return (
        _stat(title, description, 6)
        .with_target(_target(expr, "{{instance}}"))
        .mappings(_STATUS_MAPPINGS)
        .no_value("No data")
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
    )


def _budget_stat(title: str, description: str, expr: str) -> stat.Panel:
    return (
        _stat(title, description, 6)
        .with_target(_target(expr, title))
        .unit("percentunit")
        .decimals(1)
        .thresholds(dashboard_builder.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(_BUDGET_THRESHOLDS))
        .color_mode(common.BigValueColorMode.BACKGROUND)
    )


def _status_panels(queries: PanelQueries) -> list[Any]:
    """Return the panels of the status row: scrape and probe status, uptime, status history."""
    uptime = (
        _stat(
            "Uptime over the time range",
            "Availability ratio of the API over the dashboard's time range, from 0 to 100 %, "
            "from the recorded per-instance request rates.",
            6,
        )
        # The stat shows one value over the whole range, so an instant query reads each sample once.
        # A range query would evaluate the sum_over_time() at every step of the range.
        .with_target(_target(queries.availability_ratio, "uptime").instant())
        .unit("percentunit")
        .decimals(3)
        .min(0)
        .max(1)
    )
    history = (
        statetimeline.Panel()
        .title("Scrape status history")
        .description(
            "Result of each Prometheus scrape of each API instance over time. "
            "Raw query of the up series, which needs no recording rule."
        )
        .datasource(PROMETHEUS)
        .span(24)
        .height(5)
        .with_target(_target(queries.instance_up, "{{instance}}"))
        .mappings(_STATUS_MAPPINGS)
        .show_value(common.VisibilityMode.NEVER)
    )
    return [
        _status_stat(
            "Scrape status by instance",
            "Whether Prometheus' last scrape of each API instance's metrics endpoint succeeded. "
            "Raw query of the up series, which needs no recording rule.",
            queries.instance_up,
        ),
        _status_stat(
            "Health probe by instance",
            "Whether the blackbox exporter's last HTTP probe of each API instance's health endpoint succeeded. "
            "Raw query of the probe_success series, which needs no recording rule.",
            queries.probe_success,
        ),
        uptime,
        _stat(
            "Instances up",
            "Number of API instances whose last scrape succeeded. Raw query of the up series.",
            6,
        ).with_target(_target(f"sum({queries.instance_up})", "instances up")),
        history,
    ]


SERVICE_LEVEL_HELP = (
    " Reads one recorded series per line for the whole service, so it stays fast over long ranges and"
    " ignores the instance variable. The drill-down row has the per-instance views."
)


def _traffic_panels(queries: PanelQueries) -> list[Any]:
    endpoint = queries.endpoint_label
    return [
        _time_series(
            "Request rate by endpoint",
            "Requests per second that the API served, per endpoint." + SERVICE_LEVEL_HELP,
            "reqps",
        ).with_target(_target(queries.request_rate_by_endpoint, f"{{{{{endpoint}}}}}")),
        _time_series(
            "5xx error rate",
            "Share of requests answered with an HTTP 5xx status, from 0 to 100 %, on the selected instances.",
            "percentunit",
        )
        .with_target(_target(queries.error_ratio, "5xx share"))
        .min(0),
    ]


def _latency_panels(queries: PanelQueries) -> list[Any]:
    endpoint = queries.endpoint_label
    legend = f"{{{{{endpoint}}}}}"
    link_help = " Clicking a series offers a search for the endpoint's traces over the dashboard's time range."
    return [
        _time_series(
            "p95 latency by endpoint",
            "95th percentile of request duration per endpoint." + SERVICE_LEVEL_HELP + link_help,
            "s",
        )
        .with_target(_target(queries.latency_p95_by_endpoint, legend))
        .data_links([_traces_link(endpoint)]),
        _time_series(
            "p99 latency by endpoint",
            "99th percentile of request duration per endpoint." + SERVICE_LEVEL_HELP + link_help,
            "s",
        )
        .with_target(_target(queries.latency_p99_by_endpoint, legend))
        .data_links([_traces_link(endpoint)]),
    ]


def _drill_down_panels(queries: PanelQueries) -> list[Any]:
    """Return the panels of the collapsed drill-down row: per-instance views and raw queries with exemplars.

    Grafana runs a collapsed row's queries only when a user opens the row.
    """
    endpoint, method = queries.endpoint_label, queries.method_label
    legend = f"{{{{{endpoint}}}}}"
    # Recorded series carry no exemplars, so these panels read the scraped histogram directly.
    # NOTE: exemplars appear only when Prometheus runs with --enable-feature=exemplar-storage (still a
    # feature flag in Prometheus 3.x) and the API attaches a trace_id exemplar to its histogram buckets.
    raw_help = (
        " Raw query over the scraped histogram of the selected instances, not a recording rule, because only"
        " scraped series carry exemplars. It is slow over long ranges: at production size Prometheus"
        " rejects it over 24 hours, so narrow the time range or select one instance."
        " Exemplar points link to their trace in Jaeger; clicking a series offers a search for the"
        " endpoint's traces over the dashboard's time range."
    )
    return [
        _time_series(
            "Request rate by instance",
            "Requests per second that each selected API instance served, from the recorded per-instance rates.",
            "reqps",
        ).with_target(_target(queries.request_rate_by_instance, "{{instance}}")),
        _time_series(
            "p95 latency by instance",
            "95th percentile of request duration of each selected API instance, over all its endpoints, "
            "from the recorded per-instance quantiles.",
            "s",
        ).with_target(_target(queries.latency_p95_by_instance, "{{instance}}")),
        _time_series(
            "Request rate by endpoint and method",
            "Requests per second that the API served, per endpoint and HTTP method. Reads one recorded series "
            "per line for the whole service and ignores the instance variable. It draws one line per endpoint "
            "and method, so it asks for at most 500 points per line to stay fast over long ranges.",
            "reqps",
        )
        .max_data_points(500)
        .with_target(_target(queries.request_rate_by_endpoint_method, f"{{{{{method}}}}} {{{{{endpoint}}}}}")),
        _time_series("p95 latency by endpoint, raw with exemplars", "95th percentile of request duration per endpoint." + raw_help, "s")
        .with_target(_target(queries.raw_latency_p95_by_endpoint, legend, exemplar=True))
        .data_links([_traces_link(endpoint)]),
        _time_series("p99 latency by endpoint, raw with exemplars", "99th percentile of request duration per endpoint." + raw_help, "s")
        .with_target(_target(queries.raw_latency_p99_by_endpoint, legend, exemplar=True))
        .data_links([_traces_link(endpoint)]),
    ]


def _slo_panels(queries: PanelQueries) -> list[Any]:
    budget_help = (
        " 100 % is an untouched budget, 0 % or less an exhausted one."
        " An SLO covers the whole service, so these panels ignore the instance variable."
    )
    history = (
        _time_series(
            "Error budget remaining over time",
            "Share of each SLO's error budget that is left, over time." + budget_help,
            "percentunit",
        )
        .span(12)
        .with_target(_target(queries.slo_availability_budget_remaining, "availability"))
        .with_target(_target(queries.slo_latency_budget_remaining, "latency").ref_id("B"))
        .thresholds(dashboard_builder.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(_BUDGET_THRESHOLDS))
        # "Tresholds" is the SDK's own spelling of the enum name.
        .thresholds_style(common_builder.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.LINE))
    )
    return [
        _budget_stat(
            "Availability error budget remaining",
            "Share of the availability SLO's error budget that is left." + budget_help,
            queries.slo_availability_budget_remaining,
        ),
        _budget_stat(
            "Latency error budget remaining",
            "Share of the latency SLO's error budget that is left." + budget_help,
            queries.slo_latency_budget_remaining,
        ),
        history,
    ]


class _QueryVariable(dashboard_builder.QueryVariable):
    """A query variable builder that can also set allValue, which the SDK's builder lacks in this release."""

    def all_value(self, all_value: str) -> "_QueryVariable":
        self._internal.all_value = all_value
        return self


def _query_variable(name: str, label: str, query: str) -> _QueryVariable:
    return (
        _QueryVariable(name)
        .label(label)
        .datasource(PROMETHEUS)
        .query(query)
        .multi(True)
        .include_all(True)
        # ".*" also matches series without the label, so "All" keeps working where it is not set.
        .all_value(".*")
        .current(model.VariableOption(selected=True, text=["All"], value=["$__all"]))
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
    )


def build_dashboard(settings: StackSettings) -> dashboard_builder.Dashboard:
    """Assemble the dashboard: status, traffic, latency and SLO rows, with environment and instance variables."""
    queries = panel_queries(settings)
    builder = (
        dashboard_builder.Dashboard(TITLE)
        .uid(UID)
        .description("Health, traffic, latency and SLOs of the MagFlow API, generated by components/dashboard.py.")
        .tags(["magflow", "api"])
        .timezone("utc")
        .time("now-6h", "now")
        .refresh("30s")
        # Provisioned from the repository, so edits in the UI could not be saved anyway.
        .readonly()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .with_variable(
            _query_variable("environment", "Environment", f'label_values(up{{job="{API_JOB}"}}, environment)')
        )
        .with_variable(
            _query_variable(
                "instance", "Instance", f'label_values(up{{job="{API_JOB}", environment=~"$environment"}}, instance)'
            )
        )
    )

    rows = [
        ("Service status", _status_panels(queries)),
        ("Traffic and errors", _traffic_panels(queries)),
        ("Latency", _latency_panels(queries)),
        ("SLOs and error budgets", _slo_panels(queries)),
    ]
    panel_id = 0
    for title, panels in rows:
        panel_id += 1
        builder = builder.with_row(dashboard_builder.Row(title).id(panel_id).collapsed(False))
        for panel in panels:
            panel_id += 1
            builder = builder.with_panel(panel.id(panel_id))

    # A collapsed row contains its panels, and Grafana queries them only once a user opens the row.
    panel_id += 1
    drill_down = dashboard_builder.Row(DRILL_DOWN_ROW).id(panel_id).collapsed(True)
    for panel in _drill_down_panels(queries):
        panel_id += 1
        drill_down = drill_down.with_panel(panel.id(panel_id))
    builder = builder.with_row(drill_down)
    return builder


def render_dashboard(settings: StackSettings) -> str:
    """Return the dashboard as JSON text: sorted keys, two-space indent, trailing newline."""
    document = json.loads(json.dumps(build_dashboard(settings).build(), cls=JSONEncoder))
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    if argv:
        print(f"error: unexpected arguments {argv}: run `python -m components.dashboard` alone", file=sys.stderr)
        return 2
    OUTPUT.write_text(render_dashboard(stack_file_settings(SOURCE_STACK)))
    print(OUTPUT.relative_to(REPOSITORY_ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
