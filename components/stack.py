"""The monitoring stack as one component: every service, on the platform the settings name."""

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Mapping

import pulumi
import pulumi_random as random
import pulumiverse_grafana as grafana_provider

from components import credentials, tls
from components.config import render_placeholders
from components.platform.docker import DockerPlatform
from components.platform.kubernetes import KubernetesPlatform
from components.services import alertmanager, blackbox_exporter, grafana, jaeger, jaeger_proxy, otel_collector, prometheus
from components.settings import StackSettings

# Deployment order: each service starts after the ones it sends data to.
SERVICES: list[ModuleType] = [jaeger, jaeger_proxy, alertmanager, otel_collector, blackbox_exporter, prometheus, grafana]


@dataclass
class MonitoringStackArgs:
    settings: StackSettings
    secrets: Mapping[str, pulumi.Output[str]]
    """Secret config values by key; a missing grafanaAdminPassword is generated."""


def render_outputs(
    service: ModuleType, settings: StackSettings, secrets: Mapping[str, pulumi.Input[str]]
) -> dict[str, pulumi.Input[str]]:
    """Render a service's files with real secret values, as outputs that are secret only where needed."""
    used = {key: secrets[key] for key in service.SECRETS if key in secrets}
    if not used:
        return dict(service.render(settings, {}))

    # The same keys as the real render, so that both return the same paths.
    placeholders = render_placeholders()
    paths = service.render(settings, {key: placeholders[key] for key in used}).keys()
    rendered = pulumi.Output.all(**used).apply(lambda values: service.render(settings, values))

    files: dict[str, pulumi.Input[str]] = {}
    for path in paths:
        content = rendered.apply(lambda texts, path=path: texts[path])
        # Output.all marks everything rendered from a secret as secret; only secret files stay so.
        files[path] = content if path in service.SECRET_FILES else pulumi.Output.unsecret(content)
    return files


class MonitoringStack(pulumi.ComponentResource):
    """OpenTelemetry Collector, Prometheus, Alertmanager, Jaeger, Grafana and the blackbox exporter, wired together."""

    urls: dict[str, pulumi.Output[str]]
    grafana_admin_password: pulumi.Output[str]
    ca_certificate: pulumi.Output[str]
    basic_auth_passwords: dict[str, pulumi.Output[str]]
    otlp_bearer_token: pulumi.Output[str] | None

    def __init__(self, name: str, args: MonitoringStackArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("magflow:monitoring:MonitoringStack", name, None, opts)
        settings = args.settings
        secrets = dict(args.secrets)

        # No default password: an unset admin password is a random one, kept in the stack's state.
        if "grafanaAdminPassword" not in secrets:
            password = random.RandomPassword(
                "grafana-admin-password", length=32, special=False, opts=pulumi.ResourceOptions(parent=self)
            )
            secrets["grafanaAdminPassword"] = password.result
        self.grafana_admin_password = pulumi.Output.secret(secrets["grafanaAdminPassword"])

        # Certificates, keys and generated credentials join the secrets that services render from.
        secrets.update(tls.issue_certificates(settings, pulumi.get_stack(), parent=self))
        credentials.generate(settings, secrets, parent=self)
        self.ca_certificate = pulumi.Output.from_input(secrets[tls.CA_CERT_KEY])
        self.basic_auth_passwords = {
            service: pulumi.Output.secret(secrets[credentials.password_key(service)])
            for service in (*credentials.PROTECTED, *credentials.PROXY_PROTECTED)
            if credentials.password_key(service) in secrets
        }
        token = secrets.get(credentials.OTLP_TOKEN_KEY)
        self.otlp_bearer_token = None if token is None else pulumi.Output.secret(token)

        stack = pulumi.get_stack()
        platform: DockerPlatform | KubernetesPlatform
        if settings.platform == "docker":
            platform = DockerPlatform(settings, stack, parent=self)
        else:
            platform = KubernetesPlatform(settings, stack, parent=self)

        deployed: dict[str, pulumi.Resource] = {}
        workloads = {}
        for service in SERVICES:
            workload = service.workload(settings, render_outputs(service, settings, secrets))
            workloads[service.NAME] = workload
            deployed[service.NAME] = platform.deploy(workload, depends_on=list(deployed.values()))

        self.urls = {
            "grafana": pulumi.Output.from_input(platform.url(workloads[grafana.NAME], "http")),
            "prometheus": pulumi.Output.from_input(platform.url(workloads[prometheus.NAME], "http")),
            "alertmanager": pulumi.Output.from_input(platform.url(workloads[alertmanager.NAME], "http")),
            # Users reach Jaeger through the authenticating proxy only.
            "jaeger": pulumi.Output.from_input(platform.url(workloads[jaeger_proxy.NAME], "https")),
            "otlpGrpc": pulumi.Output.from_input(self._otlp_endpoint(settings, "grpc")),
            "otlpHttp": pulumi.Output.from_input(self._otlp_endpoint(settings, "http")),
        }

        self._configure_grafana(settings, deployed[grafana.NAME])

        self.register_outputs(
            {
                "urls": self.urls,
                "grafanaAdminPassword": self.grafana_admin_password,
                "caCertificate": self.ca_certificate,
                "basicAuthPasswords": self.basic_auth_passwords,
            }
        )

    @staticmethod
    def _otlp_endpoint(settings: StackSettings, protocol: str) -> str:
        if settings.platform == "docker":
            port = settings.otlp_grpc_port if protocol == "grpc" else settings.otlp_http_port
            return f"https://127.0.0.1:{port}"
        port = otel_collector.ep.OTLP_GRPC_PORT if protocol == "grpc" else otel_collector.ep.OTLP_HTTP_PORT
        return f"https://{otel_collector.NAME}.{settings.namespace}.svc:{port}"

    def _configure_grafana(self, settings: StackSettings, grafana_resource: pulumi.Resource) -> None:
        """Set organization preferences through Grafana's API, stored in Grafana's database volume.

        Datasources and dashboards come from provisioning files instead, because Grafana must have
        them at every start, before any API call, even with an empty database.
        """
        provider = grafana_provider.Provider(
            "grafana",
            url=self.urls["grafana"],
            auth=pulumi.Output.concat("admin:", self.grafana_admin_password),
            # Docker serves the stack CA's certificate on 127.0.0.1; the Ingress serves one of ingressTlsIssuer.
            ca_cert=self.ca_certificate if settings.platform == "docker" else None,
            opts=pulumi.ResourceOptions(parent=self),
        )
        grafana_provider.oss.OrganizationPreferences(
            "grafana-preferences",
            home_dashboard_uid=grafana.home_dashboard_uid(),
            timezone="utc",
            week_start="monday",
            opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[grafana_resource]),
        )


def describe(settings: StackSettings) -> dict[str, Any]:
    """Return every service's rendered files with placeholder secrets, by service name."""
    return {service.NAME: service.render(settings, render_placeholders()) for service in SERVICES}
