"""Provision the MagFlow API's observability stack on the platform that the stack config names."""

import pulumi

from components.config import load_stack
from components.stack import MonitoringStack, MonitoringStackArgs

# Validation runs first: invalid config raises ConfigError before any resource is declared.
settings, secrets = load_stack()

stack = MonitoringStack("magflow-monitoring", MonitoringStackArgs(settings=settings, secrets=secrets))

pulumi.export("platform", settings.platform)
pulumi.export("grafanaUrl", stack.urls["grafana"])
pulumi.export("prometheusUrl", stack.urls["prometheus"])
pulumi.export("alertmanagerUrl", stack.urls["alertmanager"])
pulumi.export("jaegerUrl", stack.urls["jaeger"])
pulumi.export("otlpGrpcEndpoint", stack.urls["otlpGrpc"])
pulumi.export("otlpHttpEndpoint", stack.urls["otlpHttp"])
# Shown only with `pulumi stack output --show-secrets grafanaAdminPassword`.
pulumi.export("grafanaAdminPassword", stack.grafana_admin_password)
