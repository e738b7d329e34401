"""OpenTelemetry Collector: receives OTLP from the API, sends traces to Jaeger and metrics to Prometheus."""

from typing import Any, Mapping

from components import credentials, tls
from components.rendering import to_yaml
from components.services import endpoints as ep
from components.settings import StackSettings
from components.units import format_duration, parse_duration
from components.workload import HttpCheck, Port, Resources, Workload

NAME = ep.OTEL_COLLECTOR
IMAGE = "otel/opentelemetry-collector-contrib:0.128.0"
CONFIG_DIR = "/etc/otelcol-contrib"
TOKEN_FILE = "secrets/otlp-bearer-token"
BEARER_AUTH = "bearertokenauth"
SECRETS: tuple[str, ...] = (*tls.secret_keys(NAME), credentials.OTLP_TOKEN_KEY)
SECRET_FILES: frozenset[str] = frozenset({TOKEN_FILE, *tls.SECRET_FILES})

SCRUB_PROCESSOR = "attributes/scrub"
# Credentials that HTTP instrumentations record when they capture headers, under the current
# semantic-convention names (http.request.header.<name>, lower case).
CREDENTIAL_HEADER_ATTRIBUTES = (
    "http.request.header.authorization",
    "http.request.header.proxy-authorization",
    "http.request.header.cookie",
    "http.response.header.set-cookie",
)
# The same headers under older or non-standard names: any case, "headers" for "header", and "_"
# for "-", such as http.request.headers.Authorization or http.response.header.set_cookie. The
# attributes processor matches it with Go's regexp package.
CREDENTIAL_HEADER_PATTERN = r"(?i)^http\.(request|response)\.headers?\.((proxy[-_])?authorization|cookie|set[-_]cookie)$"


def trace_sampler(settings: StackSettings) -> tuple[str, dict[str, Any]]:
    """Return the name and config of the processor that samples traces.

    Development keeps a random share of traces as they arrive (head sampling). Production
    waits for each trace to complete (tail sampling) and keeps every trace with an error
    status, every trace longer than traceSlowThreshold and a random share of the rest.
    """
    percentage = round(settings.trace_sampling_ratio * 100, 4)
    if not settings.is_production:
        return "probabilistic_sampler", {"sampling_percentage": percentage}

    threshold_seconds = parse_duration(settings.trace_slow_threshold)
    # A trace is judged this long after its first span arrives, so a slow trace must finish
    # within it. Spans of a trace must all reach this single collector replica.
    decision_wait_seconds = max(10, 2 * threshold_seconds)
    return "tail_sampling", {
        "decision_wait": format_duration(decision_wait_seconds),
        # Traces held in memory while they wait for the decision; memory_limiter still caps the total.
        "num_traces": 50000,
        "policies": [
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {"name": "slow", "type": "latency", "latency": {"threshold_ms": round(threshold_seconds * 1000)}},
            {"name": "sampled", "type": "probabilistic", "probabilistic": {"sampling_percentage": percentage}},
        ],
    }


def scrub_processor(settings: StackSettings) -> dict[str, Any]:
    """Return the attributes processor config that deletes credentials and sensitiveSpanAttributes from spans."""
    keys = list(dict.fromkeys([*CREDENTIAL_HEADER_ATTRIBUTES, *settings.sensitive_span_attributes]))
    actions = [{"key": key, "action": "delete"} for key in keys]
    actions.append({"pattern": CREDENTIAL_HEADER_PATTERN, "action": "delete"})
    return {"actions": actions}


def receiver_security(settings: StackSettings) -> dict[str, Any]:
    """Return the TLS settings of an OTLP receiver and, in production, its bearer-token authenticator."""
    security: dict[str, Any] = {
        "tls": {"cert_file": f"{CONFIG_DIR}/{tls.CERT_FILE}", "key_file": f"{CONFIG_DIR}/{tls.KEY_FILE}", "min_version": "1.2"}
    }
    if settings.is_production:
        security["auth"] = {"authenticator": BEARER_AUTH}
    return security


def render_config(settings: StackSettings) -> dict[str, Any]:
    """Return the collector's config.yaml as data."""
    sampler, sampler_config = trace_sampler(settings)
    trace_exporters = ["otlp/jaeger"]
    metric_exporters = ["prometheus"]
    exporters: dict[str, Any] = {
        "otlp/jaeger": {"endpoint": ep.address(ep.JAEGER, ep.OTLP_GRPC_PORT), "tls": {"ca_file": f"{CONFIG_DIR}/{tls.CA_FILE}"}},
        "prometheus": {
            "endpoint": f"0.0.0.0:{ep.COLLECTOR_PROMETHEUS_EXPORTER_PORT}",
            # Keeps service.name and deployment.environment as labels on every series.
            "resource_to_telemetry_conversion": {"enabled": True},
        },
    }

    # Printing every span and metric helps on a laptop and floods logs anywhere else.
    if not settings.is_production:
        exporters["debug"] = {"verbosity": "basic"}
        trace_exporters.append("debug")
        metric_exporters.append("debug")

    extensions: dict[str, Any] = {"health_check": {"endpoint": f"0.0.0.0:{ep.COLLECTOR_HEALTH_PORT}"}}
    if settings.is_production:
        extensions[BEARER_AUTH] = {"filename": f"{CONFIG_DIR}/{TOKEN_FILE}"}

    return {
        "extensions": extensions,
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"0.0.0.0:{ep.OTLP_GRPC_PORT}", **receiver_security(settings)},
                    "http": {"endpoint": f"0.0.0.0:{ep.OTLP_HTTP_PORT}", **receiver_security(settings)},
                }
            }
        },
        "processors": {
            # First in every pipeline, so the collector refuses data before it runs out of memory.
            "memory_limiter": {"check_interval": "1s", "limit_percentage": 80, "spike_limit_percentage": 20},
            SCRUB_PROCESSOR: scrub_processor(settings),
            sampler: sampler_config,
            "batch": {},
        },
        "exporters": exporters,
        "service": {
            "extensions": list(extensions),
            "telemetry": {
                "metrics": {
                    "level": "detailed",
                    "readers": [
                        {"pull": {"exporter": {"prometheus": {"host": "0.0.0.0", "port": ep.COLLECTOR_TELEMETRY_PORT}}}}
                    ],
                }
            },
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    # Credentials go before sampling, so tail sampling never keeps them in memory, and
                    # sampling before batch, so that batches contain only the traces that are kept.
                    "processors": ["memory_limiter", SCRUB_PROCESSOR, sampler, "batch"],
                    "exporters": trace_exporters,
                },
                "metrics": {
                    "receivers": ["otlp"],
                    "processors": ["memory_limiter", "batch"],
                    "exporters": metric_exporters,
                },
            },
        },
    }


def render(settings: StackSettings, secrets: Mapping[str, str]) -> dict[str, str]:
    """Return every file the collector reads, by path relative to its config directory."""
    files = {"config.yaml": to_yaml(render_config(settings)), **tls.files(NAME, secrets)}
    # Only production generates a token; the receivers require it there.
    if credentials.OTLP_TOKEN_KEY in secrets:
        files[TOKEN_FILE] = secrets[credentials.OTLP_TOKEN_KEY]
    return files


def workload(settings: StackSettings, files: Mapping[str, Any]) -> Workload:
    return Workload(
        name=NAME,
        image=IMAGE,
        args=[f"--config={CONFIG_DIR}/config.yaml"],
        ports=[
            Port("otlp-grpc", ep.OTLP_GRPC_PORT, host_port=settings.otlp_grpc_port),
            Port("otlp-http", ep.OTLP_HTTP_PORT, host_port=settings.otlp_http_port),
            Port("health", ep.COLLECTOR_HEALTH_PORT),
            Port("telemetry", ep.COLLECTOR_TELEMETRY_PORT),
            Port("metrics", ep.COLLECTOR_PROMETHEUS_EXPORTER_PORT),
        ],
        config_dir=CONFIG_DIR,
        files=dict(files),
        secret_files=SECRET_FILES,
        # NOTE: the image holds only the collector binary, so Docker cannot run a health check
        # inside it; Kubernetes probes the same endpoint over HTTP.
        check=HttpCheck("/", ep.COLLECTOR_HEALTH_PORT, None),
        resources=Resources("100m", "256Mi", "1", "1Gi") if settings.is_production else Resources("50m", "128Mi", "500m", "512Mi"),
        user=10001,
    )
