"""Provision the MagFlow API's observability stack on the platform that the stack config names."""

import pulumi

from components import credentials
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
# The stack's private CA, which signs every service's certificate: clients trust it to connect.
pulumi.export("caCertificate", stack.ca_certificate)
# Basic-auth user and passwords of Prometheus and Alertmanager; the passwords are secret outputs.
pulumi.export("basicAuthUser", credentials.BASIC_AUTH_USER)
pulumi.export("prometheusPassword", stack.basic_auth_passwords["prometheus"])
pulumi.export("alertmanagerPassword", stack.basic_auth_passwords["alertmanager"])
# jaeger-proxy requires it for the Jaeger UI and API, because Jaeger checks no credentials itself.
pulumi.export("jaegerPassword", stack.basic_auth_passwords["jaeger"])
if stack.otlp_bearer_token is not None:
    pulumi.export("otlpBearerToken", stack.otlp_bearer_token)
