"""Typed stack settings: the single source of every value the program deploys.

Stack config arrives as flat keys in the `magflow-monitoring:` namespace. `load_settings` merges
them over the defaults of the stack's environment, validates everything at once and raises one
`ConfigError` that lists each bad key with its value and the fix. It runs before any resource is
declared, so a bad stack file never touches infrastructure.

Secret values never enter `StackSettings`: the model records which secret keys are set, and the
values travel as Pulumi secret outputs (see `components.secrets`).
"""

import difflib
import json
import re
from typing import Annotated, Any, Literal, Mapping

import pulumi
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from components.units import parse_byte_size, parse_duration

PROJECT = "magflow-monitoring"


class ConfigError(pulumi.RunError):
    """Invalid stack config. The message names every bad key, its value and the fix."""


# Secret keys, with whether every stack must set them. Their values are Pulumi secrets.
SECRET_KEYS: dict[str, bool] = {
    "apiMetricsToken": True,
    "grafanaAdminPassword": False,
    "alertWebhookUrl": False,
    "alertSlackWebhookUrl": False,
    "alertEmailPassword": False,
}

SECRET_DESCRIPTIONS = {
    "apiMetricsToken": "Bearer token that Prometheus sends when it scrapes the API's /metrics.",
    "grafanaAdminPassword": "Grafana admin password. When unset, a random 32-character password is generated.",
    "alertWebhookUrl": "URL of the webhook receiver; may contain a token.",
    "alertSlackWebhookUrl": "Slack incoming-webhook URL of the Slack receiver.",
    "alertEmailPassword": "SMTP password of the email receiver.",
}


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


def _parse_port(value: Any) -> int:
    try:
        port = int(str(value))
    except ValueError:
        raise ValueError(f"invalid port {value!r}: use a whole number from 1 to 65535") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range: use a number from 1 to 65535")
    return port


def _parse_ratio(value: Any) -> float:
    try:
        ratio = float(str(value))
    except ValueError:
        raise ValueError(f"invalid ratio {value!r}: use a number such as 0.25") from None
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio {ratio} is outside (0, 1]: use a number above 0 and at most 1, such as 0.1")
    return ratio


def _parse_list(value: Any) -> Any:
    # The Pulumi CLI passes arrays to the program as JSON text; YAML stack files give lists.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"invalid list {value!r}: use a YAML list in the stack file") from None
    return value


_HOST_PORT = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?:\d{1,5}$")


def _check_target(target: str) -> str:
    if not _HOST_PORT.match(target):
        raise ValueError(f"invalid scrape target {target!r}: use host:port, such as magflow-api:8000")
    _parse_port(target.rsplit(":", 1)[1])
    return target


def _check_path(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"invalid path {path!r}: it must start with /, such as /metrics")
    return path


Duration = Annotated[str, AfterValidator(_check_duration)]
ByteSize = Annotated[int, BeforeValidator(parse_byte_size)]
Port = Annotated[int, BeforeValidator(_parse_port)]
Ratio = Annotated[float, BeforeValidator(_parse_ratio)]
Target = Annotated[str, AfterValidator(_check_target)]
UrlPath = Annotated[str, AfterValidator(_check_path)]
ReceiverKind = Literal["none", "webhook", "slack", "email"]


class StackSettings(BaseModel):
    """Validated settings of one stack. Field aliases are the stack config keys."""

    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", frozen=True)

    platform: Literal["docker", "kubernetes"] = Field(
        description="Where the stack runs: docker (the local Docker engine) or kubernetes (the current kubeconfig context)."
    )
    environment: Literal["development", "production"] = Field(
        description="Environment name, sent as the `environment` external label; selects the defaults."
    )

    api_targets: Annotated[list[Target], BeforeValidator(_parse_list)] = Field(
        min_length=1, description="host:port of each MagFlow API instance that Prometheus scrapes."
    )
    api_scheme: Literal["http", "https"] = Field(description="Scheme Prometheus uses to scrape the API.")
    api_metrics_path: UrlPath = Field(description="Path of the API's Prometheus metrics endpoint.")
    api_scrape_interval: Duration = Field(description="How often Prometheus scrapes the API, such as 5s.")

    trace_sampling_ratio: Ratio = Field(
        description="Share of traces the collector keeps, above 0 and at most 1 (1 keeps every trace)."
    )

    prometheus_retention_time: Duration = Field(description="How long Prometheus keeps samples, such as 15d.")
    prometheus_retention_size: ByteSize = Field(
        description="Maximum size of Prometheus' blocks on disk, such as 40GiB; oldest blocks go first."
    )
    prometheus_volume_size: ByteSize = Field(description="Size of Prometheus' data volume, such as 50Gi.")
    alertmanager_volume_size: ByteSize = Field(description="Size of Alertmanager's data volume.")
    grafana_volume_size: ByteSize = Field(description="Size of Grafana's data volume.")
    jaeger_volume_size: ByteSize = Field(description="Size of Jaeger's trace storage volume.")

    alert_default_receiver: ReceiverKind = Field(
        description="Receiver of every alert not routed elsewhere: none, webhook, slack or email."
    )
    alert_critical_receiver: ReceiverKind = Field(
        description="Receiver of alerts with severity=critical; none sends them to the default receiver."
    )
    alert_slack_channel: str = Field(description="Slack channel of the Slack receiver, such as #magflow-alerts.")
    alert_email_to: str = Field(description="Recipient address of the email receiver.")
    alert_email_from: str = Field(description="Sender address of the email receiver.")
    alert_email_smarthost: str = Field(description="SMTP server of the email receiver, as host:port.")
    alert_email_username: str = Field(description="SMTP user name of the email receiver.")

    grafana_port: Port = Field(description="Docker only: loopback port that publishes Grafana.")
    prometheus_port: Port = Field(description="Docker only: loopback port that publishes Prometheus.")
    alertmanager_port: Port = Field(description="Docker only: loopback port that publishes Alertmanager.")
    jaeger_port: Port = Field(description="Docker only: loopback port that publishes the Jaeger UI.")
    otlp_grpc_port: Port = Field(description="Docker only: loopback port that publishes the collector's OTLP/gRPC receiver.")
    otlp_http_port: Port = Field(description="Docker only: loopback port that publishes the collector's OTLP/HTTP receiver.")

    namespace: str = Field(description="Kubernetes only: namespace of every resource.")
    storage_class: str = Field(description="Kubernetes only: StorageClass of the PersistentVolumeClaims; empty uses the cluster default.")
    ingress_class: str = Field(description="Kubernetes only: IngressClass of the web UIs' Ingress.")
    ingress_domain: str = Field(
        description="Kubernetes only: DNS suffix of the web UIs, such as monitoring.example.com (Grafana at grafana.<suffix>)."
    )

    secrets_set: frozenset[str] = Field(default=frozenset(), exclude=True)
    """Secret keys that the stack sets. Their values never enter this model."""

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    def ui_host(self, service: str) -> str:
        """Return the Ingress host name of a web UI in the kubernetes platform."""
        return f"{service}.{self.ingress_domain}"


_DEVELOPMENT_DEFAULTS: dict[str, Any] = {
    "apiTargets": ["host.docker.internal:8000"],
    "apiScheme": "http",
    "apiMetricsPath": "/metrics",
    "apiScrapeInterval": "5s",
    "traceSamplingRatio": "1",
    "prometheusRetentionTime": "3d",
    "prometheusRetentionSize": "4GiB",
    "prometheusVolumeSize": "5Gi",
    "alertmanagerVolumeSize": "256Mi",
    "grafanaVolumeSize": "1Gi",
    "jaegerVolumeSize": "2Gi",
    "alertDefaultReceiver": "none",
    "alertCriticalReceiver": "none",
    "alertSlackChannel": "",
    "alertEmailTo": "",
    "alertEmailFrom": "",
    "alertEmailSmarthost": "",
    "alertEmailUsername": "",
    "grafanaPort": 3000,
    "prometheusPort": 9090,
    "alertmanagerPort": 9093,
    "jaegerPort": 16686,
    "otlpGrpcPort": 4317,
    "otlpHttpPort": 4318,
    "namespace": "magflow-monitoring",
    "storageClass": "",
    "ingressClass": "nginx",
    "ingressDomain": "",
}

# Production has no default API target: the stack file must name the real instances.
_PRODUCTION_DEFAULTS: dict[str, Any] = {
    **{key: value for key, value in _DEVELOPMENT_DEFAULTS.items() if key != "apiTargets"},
    "traceSamplingRatio": "0.1",
    "prometheusRetentionTime": "30d",
    "prometheusRetentionSize": "80GiB",
    "prometheusVolumeSize": "100Gi",
    "alertmanagerVolumeSize": "1Gi",
    "grafanaVolumeSize": "5Gi",
    "jaegerVolumeSize": "50Gi",
}

ENVIRONMENT_DEFAULTS = {"development": _DEVELOPMENT_DEFAULTS, "production": _PRODUCTION_DEFAULTS}

CONFIG_KEYS = [field.alias for field in StackSettings.model_fields.values() if field.alias] + list(SECRET_KEYS)


def load_settings(raw: Mapping[str, Any]) -> StackSettings:
    """Validate raw stack config (keys without the project prefix) and return the settings.

    Secret keys may map to any non-empty value (or a placeholder); only their presence is used.
    Raises ConfigError that lists every invalid, missing or unknown key.
    """
    # Pulumi.yaml declares "" (or an empty list) as the default of every key whose default depends
    # on the environment, so an empty value means "unset" here.
    raw = {key: value for key, value in raw.items() if value not in ("", [], "[]", None)}
    errors: list[str] = []

    secrets_set = frozenset(key for key in SECRET_KEYS if raw.pop(key, None) not in (None, ""))
    for key, required in SECRET_KEYS.items():
        if required and key not in secrets_set:
            errors.append(
                f"{PROJECT}:{key} is missing. {SECRET_DESCRIPTIONS[key]} "
                f"Set it with: pulumi config set --secret {key} <value>"
            )

    environment = raw.get("environment")
    defaults = ENVIRONMENT_DEFAULTS.get(environment, {}) if isinstance(environment, str) else {}
    values = {**defaults, **raw}

    settings = None
    try:
        settings = StackSettings.model_validate({**values, "secrets_set": secrets_set}, by_alias=True, by_name=True)
    except ValidationError as error:
        errors.extend(_describe(issue, values) for issue in error.errors())

    if settings is not None:
        errors.extend(_check_combinations(settings))

    if errors:
        raise ConfigError("invalid stack config:\n  - " + "\n  - ".join(errors))
    assert settings is not None
    return settings


def _describe(issue: Mapping[str, Any], values: Mapping[str, Any]) -> str:
    """Turn one pydantic error into a line that names the key, the value and the fix."""
    key = str(issue["loc"][0]) if issue["loc"] else "?"
    message = issue["msg"].removeprefix("Value error, ")

    if issue["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key, CONFIG_KEYS, n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        return f"{PROJECT}:{key} is not a known key.{hint} Remove it with: pulumi config rm {key}"

    if issue["type"] == "missing":
        description = StackSettings.model_fields[_field_name(key)].description
        return f"{PROJECT}:{key} is missing. {description} Set it with: pulumi config set {key} <value>"

    shown = values.get(key, issue.get("input"))
    field = StackSettings.model_fields.get(_field_name(key))
    accepted = f" Accepted: {field.description}" if field is not None and issue["type"] == "literal_error" else ""
    return f"{PROJECT}:{key}={shown!r} is invalid: {message}.{accepted} Fix it with: pulumi config set {key} <value>"


def _field_name(alias: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", alias).lower()


def _check_combinations(settings: StackSettings) -> list[str]:
    """Return the errors that involve more than one key."""
    errors = []

    receivers = {settings.alert_default_receiver, settings.alert_critical_receiver}
    needs = {
        "webhook": ["alertWebhookUrl"],
        "slack": ["alertSlackWebhookUrl", "alertSlackChannel"],
        "email": ["alertEmailTo", "alertEmailFrom", "alertEmailSmarthost"],
    }
    for receiver in sorted(receivers - {"none"}):
        for key in needs[receiver]:
            secret = key in SECRET_KEYS
            present = key in settings.secrets_set if secret else bool(getattr(settings, _field_name(key)))
            if not present:
                flag = "--secret " if secret else ""
                errors.append(
                    f"{PROJECT}:{key} is missing, but the {receiver} receiver is selected by "
                    f"alertDefaultReceiver or alertCriticalReceiver. Set it with: pulumi config set {flag}{key} <value>"
                )

    if settings.platform == "kubernetes" and not settings.ingress_domain:
        errors.append(
            f"{PROJECT}:ingressDomain is missing, but platform is kubernetes and the web UIs need Ingress hosts. "
            "Set it with: pulumi config set ingressDomain monitoring.example.com"
        )

    if settings.prometheus_retention_size > 0.9 * settings.prometheus_volume_size:
        errors.append(
            f"{PROJECT}:prometheusRetentionSize ({settings.prometheus_retention_size} bytes) is above 90% of "
            f"prometheusVolumeSize ({settings.prometheus_volume_size} bytes), which leaves no room for the WAL "
            "and compaction. Lower prometheusRetentionSize or raise prometheusVolumeSize."
        )

    return errors
