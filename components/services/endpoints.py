"""Service names and ports, in one place because every service refers to the others by them.

The service name is the container's host name on the Docker network and the Service name on
Kubernetes, so `host:port` below is valid on both platforms.
"""

OTEL_COLLECTOR = "otel-collector"
OTLP_GRPC_PORT = 4317
OTLP_HTTP_PORT = 4318
COLLECTOR_HEALTH_PORT = 13133
COLLECTOR_TELEMETRY_PORT = 8888
COLLECTOR_PROMETHEUS_EXPORTER_PORT = 8889

PROMETHEUS = "prometheus"
PROMETHEUS_PORT = 9090

ALERTMANAGER = "alertmanager"
ALERTMANAGER_PORT = 9093

JAEGER = "jaeger"
JAEGER_UI_PORT = 16686
JAEGER_HEALTH_PORT = 13133
JAEGER_TELEMETRY_PORT = 8888

# Caddy in front of Jaeger's UI and API, because Jaeger 2.7 checks no credentials.
JAEGER_PROXY = "jaeger-proxy"
JAEGER_PROXY_PORT = 16686
JAEGER_PROXY_HEALTH_PORT = 8080

GRAFANA = "grafana"
GRAFANA_PORT = 3000

BLACKBOX_EXPORTER = "blackbox-exporter"
BLACKBOX_EXPORTER_PORT = 9115


def address(host: str, port: int) -> str:
    return f"{host}:{port}"
