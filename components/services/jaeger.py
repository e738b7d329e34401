"""Jaeger v2: stores the traces the collector sends over OTLP and serves the trace UI."""

from typing import Any, Mapping

from components import tls
from components.rendering import to_yaml
from components.services import endpoints as ep
from components.settings import StackSettings
from components.units import format_go_duration, parse_duration
from components.workload import DataVolume, HttpCheck, Port, Resources, Workload

NAME = ep.JAEGER
IMAGE = "jaegertracing/jaeger:2.7.0"
CONFIG_DIR = "/etc/jaeger"
DATA_DIR = "/badger"
SECRETS: tuple[str, ...] = tls.secret_keys(NAME)
SECRET_FILES: frozenset[str] = tls.SECRET_FILES


def render_config(settings: StackSettings) -> dict[str, Any]:
    """Return Jaeger's config.yaml (an OpenTelemetry Collector configuration) as data."""
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            "telemetry": {
                "resource": {"service.name": "jaeger"},
                "metrics": {
                    "level": "detailed",
                    "readers": [
                        {"pull": {"exporter": {"prometheus": {"host": "0.0.0.0", "port": ep.JAEGER_TELEMETRY_PORT}}}}
                    ],
                },
            },
        },
        "extensions": {
            "healthcheckv2": {"use_v2": True, "http": {"endpoint": f"0.0.0.0:{ep.JAEGER_HEALTH_PORT}"}},
            "jaeger_query": {
                "storage": {"traces": "main_store"},
                # NOTE: TLS only, no authentication in Jaeger itself. Jaeger 2.7 has no server
                # authenticator extension (its distribution registers basicauth only in releases
                # after 2.7), so users reach this port through jaeger-proxy, which requires basic
                # auth. Inside the network only the proxy and Grafana may connect (NetworkPolicy).
                "http": {"endpoint": f"0.0.0.0:{ep.JAEGER_UI_PORT}", "tls": _server_tls()},
            },
            "jaeger_storage": {
                "backends": {
                    "main_store": {
                        "badger": {
                            "directories": {"keys": f"{DATA_DIR}/keys", "values": f"{DATA_DIR}/values"},
                            "ephemeral": False,
                            # Go duration syntax: Badger has no day unit, so 14d becomes 336h.
                            "ttl": {"spans": format_go_duration(parse_duration(settings.jaeger_span_ttl))},
                        }
                    }
                }
            },
        },
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"0.0.0.0:{ep.OTLP_GRPC_PORT}", "tls": _server_tls()},
                    "http": {"endpoint": f"0.0.0.0:{ep.OTLP_HTTP_PORT}", "tls": _server_tls()},
                }
            }
        },
        "processors": {"batch": {}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "main_store"}},
    }


def _server_tls() -> dict[str, str]:
    return {"cert_file": f"{CONFIG_DIR}/{tls.CERT_FILE}", "key_file": f"{CONFIG_DIR}/{tls.KEY_FILE}", "min_version": "1.2"}


def render(settings: StackSettings, secrets: Mapping[str, str]) -> dict[str, str]:
    """Return every file Jaeger reads, by path relative to its config directory."""
    return {"config.yaml": to_yaml(render_config(settings)), **tls.files(NAME, secrets)}


def workload(settings: StackSettings, files: Mapping[str, Any]) -> Workload:
    return Workload(
        name=NAME,
        image=IMAGE,
        args=[f"--config={CONFIG_DIR}/config.yaml"],
        ports=[
            # Neither published nor routed: jaeger-proxy owns jaegerPort and the Ingress.
            Port("ui", ep.JAEGER_UI_PORT),
            Port("otlp-grpc", ep.OTLP_GRPC_PORT),
            Port("otlp-http", ep.OTLP_HTTP_PORT),
            Port("health", ep.JAEGER_HEALTH_PORT),
            Port("telemetry", ep.JAEGER_TELEMETRY_PORT),
        ],
        config_dir=CONFIG_DIR,
        files=dict(files),
        secret_files=SECRET_FILES,
        check=HttpCheck(
            "/status", ep.JAEGER_HEALTH_PORT,
            ("wget", "-q", "-O", "/dev/null", f"http://localhost:{ep.JAEGER_HEALTH_PORT}/status"),
        ),
        data=DataVolume(DATA_DIR, settings.jaeger_volume_size),
        resources=Resources("100m", "256Mi", "1", "2Gi") if settings.is_production else Resources("50m", "128Mi", "500m", "512Mi"),
        user=10001,
        # Jaeger's v1 all-in-one image declared /tmp a volume because Badger needs it writable
        # (jaegertracing/jaeger pull request 1571); kept writable in case v2 still writes there.
        tmp_dirs=("/tmp",),
    )
