"""Network flows of the stack on Kubernetes: which peer may open a connection to which port.

`KubernetesPlatform` turns these flows into NetworkPolicies. The namespace denies all ingress,
and all egress except DNS, and each pod's own policy allows exactly the flows that start or end
at it. Ports come from `components.services.endpoints` and from the settings.
"""

from dataclasses import dataclass

from components.services import endpoints as ep
from components.settings import StackSettings

# Peers outside the stack's namespace. Stack pods are named by their service name.
INGRESS_CONTROLLER = "ingress-controller"
"""The Ingress controller's pods, in the namespace that ingressControllerNamespace names."""
OTLP_CLIENTS = "otlp-clients"
"""Pods that send OTLP: the API and any other instrumented service, selected by otlpClientNamespace."""
API = "magflow-api"
"""The API instances of apiTargets, at any address, on the targets' ports."""
ALERT_RECEIVERS = "alert-receivers"
"""Webhook, Slack and SMTP servers that Alertmanager notifies, at any address."""

EXTERNAL_PEERS = frozenset({API, ALERT_RECEIVERS})
"""Peers addressed by port only, because their addresses are not known to the program."""

DNS_PORT = 53
HTTPS_PORT = 443
SMTP_SUBMISSION_PORT = 587


@dataclass(frozen=True)
class Flow:
    """Connections from `source` to `destination` on `ports`, all TCP."""

    source: str
    destination: str
    ports: tuple[int, ...]


def api_ports(settings: StackSettings) -> tuple[int, ...]:
    """Return the ports of the API targets, which Prometheus scrapes and the blackbox exporter probes."""
    # NOTE: NetworkPolicies match the pod's port after a Service forwards the connection, so a
    # target given as a Service whose targetPort differs from its port is blocked.
    return tuple(sorted({int(target.rsplit(":", 1)[1]) for target in settings.api_targets}))


def receiver_ports(settings: StackSettings) -> tuple[int, ...]:
    """Return the ports Alertmanager sends notifications to: HTTPS, SMTP submission and the smarthost's port."""
    # NOTE: a webhook receiver on another port, such as an in-cluster service on 8080, is blocked.
    ports = {HTTPS_PORT, SMTP_SUBMISSION_PORT}
    smarthost_port = settings.alert_email_smarthost.rpartition(":")[2]
    if smarthost_port.isdigit():
        ports.add(int(smarthost_port))
    return tuple(sorted(ports))


def stack_flows(settings: StackSettings) -> list[Flow]:
    """Return every flow the stack needs, and nothing else."""
    return [
        # Users reach the web UIs through the Ingress controller only.
        Flow(INGRESS_CONTROLLER, ep.GRAFANA, (ep.GRAFANA_PORT,)),
        Flow(INGRESS_CONTROLLER, ep.PROMETHEUS, (ep.PROMETHEUS_PORT,)),
        Flow(INGRESS_CONTROLLER, ep.ALERTMANAGER, (ep.ALERTMANAGER_PORT,)),
        Flow(INGRESS_CONTROLLER, ep.JAEGER_PROXY, (ep.JAEGER_PROXY_PORT,)),
        # Jaeger checks no credentials, so users reach it through the proxy, which requires them.
        Flow(ep.JAEGER_PROXY, ep.JAEGER, (ep.JAEGER_UI_PORT,)),
        # Telemetry into the collector, and traces on to Jaeger.
        Flow(OTLP_CLIENTS, ep.OTEL_COLLECTOR, (ep.OTLP_GRPC_PORT, ep.OTLP_HTTP_PORT)),
        Flow(ep.OTEL_COLLECTOR, ep.JAEGER, (ep.OTLP_GRPC_PORT,)),
        # Prometheus scrapes every component and the API, and sends alerts to Alertmanager.
        Flow(ep.PROMETHEUS, ep.OTEL_COLLECTOR, (ep.COLLECTOR_TELEMETRY_PORT, ep.COLLECTOR_PROMETHEUS_EXPORTER_PORT)),
        Flow(ep.PROMETHEUS, ep.ALERTMANAGER, (ep.ALERTMANAGER_PORT,)),
        Flow(ep.PROMETHEUS, ep.GRAFANA, (ep.GRAFANA_PORT,)),
        Flow(ep.PROMETHEUS, ep.JAEGER, (ep.JAEGER_TELEMETRY_PORT,)),
        Flow(ep.PROMETHEUS, ep.BLACKBOX_EXPORTER, (ep.BLACKBOX_EXPORTER_PORT,)),
        Flow(ep.PROMETHEUS, API, api_ports(settings)),
        # Grafana's datasources, queried by Grafana's server (proxy access).
        # NOTE: recent Grafana releases also download the plugins of [plugins] preinstall from
        # grafana.com at start (pkg/setting/setting_plugins.go). No flow allows that, so the
        # downloads fail and Grafana logs the errors; not checked against Grafana 12.0.2.
        Flow(ep.GRAFANA, ep.PROMETHEUS, (ep.PROMETHEUS_PORT,)),
        Flow(ep.GRAFANA, ep.ALERTMANAGER, (ep.ALERTMANAGER_PORT,)),
        Flow(ep.GRAFANA, ep.JAEGER, (ep.JAEGER_UI_PORT,)),
        # The blackbox exporter probes the API's health endpoint.
        Flow(ep.BLACKBOX_EXPORTER, API, api_ports(settings)),
        # It also opens a TLS connection to every HTTPS endpoint to read certificate expiry dates.
        Flow(ep.BLACKBOX_EXPORTER, ep.PROMETHEUS, (ep.PROMETHEUS_PORT,)),
        Flow(ep.BLACKBOX_EXPORTER, ep.ALERTMANAGER, (ep.ALERTMANAGER_PORT,)),
        Flow(ep.BLACKBOX_EXPORTER, ep.GRAFANA, (ep.GRAFANA_PORT,)),
        Flow(ep.BLACKBOX_EXPORTER, ep.JAEGER, (ep.JAEGER_UI_PORT, ep.OTLP_GRPC_PORT)),
        Flow(ep.BLACKBOX_EXPORTER, ep.JAEGER_PROXY, (ep.JAEGER_PROXY_PORT,)),
        Flow(ep.BLACKBOX_EXPORTER, ep.OTEL_COLLECTOR, (ep.OTLP_GRPC_PORT, ep.OTLP_HTTP_PORT)),
        Flow(ep.ALERTMANAGER, ALERT_RECEIVERS, receiver_ports(settings)),
    ]


def ingress_flows(settings: StackSettings, workload: str) -> list[Flow]:
    """Return the flows that end at a pod of the stack."""
    return [flow for flow in stack_flows(settings) if flow.destination == workload]


def egress_flows(settings: StackSettings, workload: str) -> list[Flow]:
    """Return the flows that start at a pod of the stack."""
    return [flow for flow in stack_flows(settings) if flow.source == workload]
