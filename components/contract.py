"""Metric contract: the metric and label names that the MagFlow API emits.

Rules, alerts and dashboard queries are all built from one `MetricContract`, so a name that the
API changes is changed in the stack config once and cannot drift between a rule and a panel.
A preset (`metricConvention`) fills every name, and the `metric*`/`label*` keys override single
names. Empty override keys mean "use the preset".
"""

from dataclasses import dataclass, replace

from components.settings import StackSettings

# Duration units that a histogram may use, with the factor that turns one unit into seconds.
UNIT_SECONDS = {"seconds": 1.0, "milliseconds": 0.001}


@dataclass(frozen=True)
class MetricContract:
    """Names of the API's HTTP server metrics and of their labels."""

    request_duration: str
    """Request duration histogram, without the `_bucket`/`_count`/`_sum` suffix."""
    request_duration_unit: str
    """Unit of the histogram's observations and `le` bounds: seconds or milliseconds."""
    requests: str
    """Request counter. For the OpenTelemetry presets it is the histogram's `_count` series."""
    request_size: str
    response_size: str
    active_requests: str
    method_label: str
    endpoint_label: str
    status_code_label: str

    @property
    def seconds_per_unit(self) -> float:
        """Factor that converts a histogram value into seconds (0.001 for milliseconds)."""
        return UNIT_SECONDS[self.request_duration_unit]

    @property
    def bucket(self) -> str:
        return f"{self.request_duration}_bucket"

    @property
    def count(self) -> str:
        return f"{self.request_duration}_count"


# The OpenTelemetry names are those of the semantic conventions as the Prometheus exporters write
# them: dots become underscores and the unit becomes a suffix (`http.server.duration` in ms is
# `http_server_duration_milliseconds`). OpenTelemetry has no request counter, so the histogram's
# `_count` series counts requests.
PRESETS: dict[str, MetricContract] = {
    "magflow": MetricContract(
        request_duration="http_server_duration_seconds",
        request_duration_unit="seconds",
        requests="http_server_requests_total",
        request_size="http_server_request_size_bytes",
        response_size="http_server_response_size_bytes",
        active_requests="http_server_active_requests",
        method_label="method",
        endpoint_label="endpoint",
        status_code_label="status_code",
    ),
    # HTTP semantic conventions before v1.20. The route label is `http_route`. Instrumentations that
    # only know the raw path send `http_target` instead, which `labelEndpoint` selects.
    "otel-legacy": MetricContract(
        request_duration="http_server_duration_milliseconds",
        request_duration_unit="milliseconds",
        requests="http_server_duration_milliseconds_count",
        request_size="http_server_request_size_bytes",
        response_size="http_server_response_size_bytes",
        active_requests="http_server_active_requests",
        method_label="http_method",
        endpoint_label="http_route",
        status_code_label="http_status_code",
    ),
    # Stable HTTP semantic conventions (OTEL_SEMCONV_STABILITY_OPT_IN=http).
    "otel-stable": MetricContract(
        request_duration="http_server_request_duration_seconds",
        request_duration_unit="seconds",
        requests="http_server_request_duration_seconds_count",
        request_size="http_server_request_body_size_bytes",
        response_size="http_server_response_body_size_bytes",
        active_requests="http_server_active_requests",
        method_label="http_request_method",
        endpoint_label="http_route",
        status_code_label="http_response_status_code",
    ),
}


def contract_from_settings(settings: StackSettings) -> MetricContract:
    """Return the stack's contract: the preset of `metricConvention` with the non-empty overrides applied."""
    preset = PRESETS[settings.metric_convention]
    overrides = {
        "request_duration": settings.metric_request_duration,
        "request_duration_unit": settings.metric_request_duration_unit,
        "requests": settings.metric_requests,
        "request_size": settings.metric_request_size,
        "response_size": settings.metric_response_size,
        "active_requests": settings.metric_active_requests,
        "method_label": settings.label_method,
        "endpoint_label": settings.label_endpoint,
        "status_code_label": settings.label_status_code,
    }
    contract = replace(preset, **{field: value for field, value in overrides.items() if value})

    # A renamed histogram on an OpenTelemetry preset still counts requests with its own _count.
    if settings.metric_request_duration and not settings.metric_requests and preset.requests == preset.count:
        contract = replace(contract, requests=contract.count)
    return contract
