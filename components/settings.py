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
from typing import Annotated, Any, Literal, Mapping, get_origin

import pulumi
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from components.units import format_kubernetes_quantity, parse_byte_size, parse_duration

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
    "otlpBearerToken": False,
}

SECRET_DESCRIPTIONS = {
    "apiMetricsToken": "Bearer token that Prometheus sends when it scrapes the API's /metrics.",
    "grafanaAdminPassword": "Grafana admin password. When unset, a random 32-character password is generated.",
    "alertWebhookUrl": "URL of the webhook receiver; may contain a token.",
    "alertSlackWebhookUrl": "Slack incoming-webhook URL of the Slack receiver.",
    "alertEmailPassword": "SMTP password of the email receiver.",
    "otlpBearerToken": "Production only: bearer token that OTLP senders must present to the collector. "
    "When unset, a random 48-character token is generated.",
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


def _parse_positive_number(value: Any) -> float:
    try:
        number = float(str(value))
    except ValueError:
        raise ValueError(f"invalid number {value!r}: use a number such as 0.5") from None
    if not number > 0:
        raise ValueError(f"number {number} is not above 0: use a positive number such as 0.5")
    return number


def _parse_objective(value: Any) -> float:
    ratio = _parse_ratio(value)
    if ratio >= 1:
        raise ValueError(f"objective {ratio} leaves no error budget: use a ratio below 1, such as 0.995")
    return ratio


_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _check_metric_name(name: str) -> str:
    if name and not _METRIC_NAME.match(name):
        raise ValueError(f"invalid metric name {name!r}: use letters, digits, _ and :, such as http_server_requests_total")
    return name


def _check_label_name(name: str) -> str:
    if name and not _LABEL_NAME.match(name):
        raise ValueError(f"invalid label name {name!r}: use letters, digits and _, such as status_code")
    return name


def _check_url(url: str) -> str:
    if not re.match(r"^https?://[^\s]+$", url):
        raise ValueError(f"invalid URL {url!r}: use an http(s) URL such as https://github.com/org/repo/blob/main")
    return url


def _check_attribute_key(key: str) -> str:
    if not re.match(r"^[^\s]+$", key):
        raise ValueError(f"invalid attribute key {key!r}: use a key without spaces, such as user.email")
    return key


_HOST_PORT = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?:\d{1,5}$")


def _check_target(target: str) -> str:
    if not _HOST_PORT.match(target):
        raise ValueError(f"invalid scrape target {target!r}: use host:port, such as magflow-api:8000")
    _parse_port(target.rsplit(":", 1)[1])
    return target


def _check_dropped_label(name: str) -> str:
    # job, instance and le are part of a series' identity, so dropping one would merge distinct series.
    if not re.match(r"^[a-zA-Z_][a-zA-Z0-9_]*$", name):
        raise ValueError(f"invalid label name {name!r}: use letters, digits and _, such as user_id")
    if name in ("job", "instance", "le", "__name__"):
        raise ValueError(f"label {name!r} identifies series and cannot be dropped: remove it from the list")
    return name


def _check_path(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"invalid path {path!r}: it must start with /, such as /metrics")
    return path


Duration = Annotated[str, AfterValidator(_check_duration)]
ByteSize = Annotated[int, BeforeValidator(parse_byte_size)]
Port = Annotated[int, BeforeValidator(_parse_port)]
Ratio = Annotated[float, BeforeValidator(_parse_ratio)]
Target = Annotated[str, AfterValidator(_check_target)]
AttributeKey = Annotated[str, AfterValidator(_check_attribute_key)]
UrlPath = Annotated[str, AfterValidator(_check_path)]
PositiveInt = Annotated[int, Field(gt=0)]
DroppedLabel = Annotated[str, AfterValidator(_check_dropped_label)]
PositiveNumber = Annotated[float, BeforeValidator(_parse_positive_number)]
Objective = Annotated[float, BeforeValidator(_parse_objective)]
MetricName = Annotated[str, AfterValidator(_check_metric_name)]
LabelName = Annotated[str, AfterValidator(_check_label_name)]
Url = Annotated[str, AfterValidator(_check_url)]
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
    jaeger_span_ttl: Duration = Field(description="How long Jaeger's Badger storage keeps spans, such as 14d.")
    alertmanager_data_retention: Duration = Field(
        description="How long Alertmanager keeps expired silences and notification log entries, such as 14d."
    )
    grafana_dashboard_versions_to_keep: PositiveInt = Field(
        description="Number of saved versions Grafana keeps per dashboard ([dashboards] versions_to_keep)."
    )
    grafana_annotation_max_age: Duration = Field(
        description="Age after which Grafana deletes dashboard and API annotations, such as 90d."
    )

    scrape_sample_limit: PositiveInt = Field(
        description="Maximum samples per scrape of each target (sample_limit of every job). A scrape above it fails."
    )
    scrape_label_limit: PositiveInt = Field(
        description="Maximum labels per series of each target (label_limit of every job). A scrape above it fails."
    )
    dropped_metric_labels: Annotated[list[DroppedLabel], BeforeValidator(_parse_list)] = Field(
        min_length=1,
        description="High-cardinality labels that Prometheus removes from every scraped series before storage.",
    )
    trace_slow_threshold: Duration = Field(
        description="Production only: traces longer than this, such as 2s, are always kept by the collector's tail sampling."
    )
    sensitive_span_attributes: Annotated[list[AttributeKey], BeforeValidator(_parse_list)] = Field(
        min_length=1,
        description="Span attribute keys that the collector deletes before export, in addition to the "
        "authorization, cookie and set-cookie headers, which it always deletes.",
    )

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

    # The metric contract: names that the API emits and that every rule and dashboard query reads.
    metric_convention: Literal["magflow", "otel-legacy", "otel-stable"] = Field(
        description="Preset of metric and label names: magflow (http_server_duration_seconds, method, endpoint, "
        "status_code), otel-legacy (OpenTelemetry HTTP semantic conventions before v1.20: "
        "http_server_duration_milliseconds, http_method, http_route, http_status_code) or otel-stable "
        "(http_server_request_duration_seconds, http_request_method, http_route, http_response_status_code)."
    )
    metric_request_duration: MetricName = Field(
        description="Request duration histogram, without the _bucket suffix. Empty uses the metricConvention name."
    )
    metric_request_duration_unit: Literal["", "seconds", "milliseconds"] = Field(
        description="Unit of the request duration histogram: seconds or milliseconds. Empty uses the metricConvention unit."
    )
    metric_requests: MetricName = Field(
        description="Request counter, such as http_server_requests_total. Empty uses the metricConvention name, "
        "which is the duration histogram's _count series for the OpenTelemetry presets."
    )
    metric_request_size: MetricName = Field(description="Request size histogram. Empty uses the metricConvention name.")
    metric_response_size: MetricName = Field(description="Response size histogram. Empty uses the metricConvention name.")
    metric_active_requests: MetricName = Field(description="In-flight requests gauge. Empty uses the metricConvention name.")
    label_method: LabelName = Field(description="Label of the HTTP method. Empty uses the metricConvention name.")
    label_endpoint: LabelName = Field(description="Label of the route template. Empty uses the metricConvention name.")
    label_status_code: LabelName = Field(description="Label of the HTTP status code. Empty uses the metricConvention name.")

    alert_error_rate_threshold: Ratio = Field(
        description="HighErrorRate fires when the 5xx share of all API requests is above this ratio, such as 0.05."
    )
    alert_error_rate_for: Duration = Field(description="How long the 5xx share must stay above the threshold, such as 5m.")
    alert_latency_p95_threshold: Duration = Field(
        description="HighLatency fires when the API's 95th percentile latency is above this duration, such as 1s."
    )
    alert_latency_for: Duration = Field(description="How long the p95 latency must stay above the threshold, such as 5m.")
    alert_min_request_rate: PositiveNumber = Field(
        description="Requests per second below which the error-rate and traffic alerts stay silent, such as 0.1."
    )
    alert_traffic_drop_ratio: Ratio = Field(
        description="MagflowApiTrafficDrop fires when traffic is below this share of the same time one week earlier, such as 0.3."
    )
    alert_traffic_surge_factor: PositiveNumber = Field(
        description="MagflowApiTrafficSurge fires when traffic is above this multiple of the same time one week earlier, such as 3."
    )
    runbook_base_url: Url = Field(
        description="URL that the runbook file names docs/runbooks/<alert>.md are appended to in each alert's runbook_url."
    )

    slo_availability_objective: Objective = Field(
        description="Share of API requests that must not fail with a 5xx status over sloWindow, such as 0.995."
    )
    slo_latency_objective: Objective = Field(
        description="Share of API requests that must finish within sloLatencyThreshold over sloWindow, such as 0.99."
    )
    slo_latency_threshold: Duration = Field(
        description="Latency SLO threshold, such as 500ms; it must equal a bucket boundary of the duration histogram."
    )
    slo_window: Duration = Field(description="SLO compliance window, such as 30d.")

    grafana_port: Port = Field(description="Docker only: loopback port that publishes Grafana.")
    prometheus_port: Port = Field(description="Docker only: loopback port that publishes Prometheus.")
    alertmanager_port: Port = Field(description="Docker only: loopback port that publishes Alertmanager.")
    jaeger_port: Port = Field(description="Docker only: loopback port that publishes the Jaeger UI, through its basic-auth proxy.")
    otlp_grpc_port: Port = Field(description="Docker only: loopback port that publishes the collector's OTLP/gRPC receiver.")
    otlp_http_port: Port = Field(description="Docker only: loopback port that publishes the collector's OTLP/HTTP receiver.")

    namespace: str = Field(description="Kubernetes only: namespace of every resource.")
    storage_class: str = Field(description="Kubernetes only: StorageClass of the PersistentVolumeClaims; empty uses the cluster default.")
    ingress_class: str = Field(description="Kubernetes only: IngressClass of the web UIs' Ingress.")
    ingress_domain: str = Field(
        description="Kubernetes only: DNS suffix of the web UIs, such as monitoring.example.com (Grafana at grafana.<suffix>)."
    )
    ingress_controller_namespace: str = Field(
        description="Kubernetes only: namespace of the Ingress controller pods, the only ones the NetworkPolicies let reach the web UIs."
    )
    otlp_client_namespace: str = Field(
        description="Kubernetes only: namespace whose pods may send OTLP to the collector; empty allows every namespace."
    )

    tls_ca_validity: Duration = Field(description="Validity of the stack's private CA certificate, such as 1825d.")
    tls_certificate_validity: Duration = Field(description="Validity of each service's server certificate, such as 90d.")
    tls_early_renewal: Duration = Field(
        description="`pulumi up` replaces a certificate once less than this much of its validity is left, such as 30d."
    )
    alert_certificate_expiry: Duration = Field(
        description="CertificateExpiringSoon fires when a served certificate expires within this duration, such as 14d."
    )
    cors_allowed_origins: Annotated[list[Url], BeforeValidator(_parse_list)] = Field(
        description="Origins, such as https://grafana.example.com, that Grafana accepts in CSRF checks besides its own URL."
    )
    ingress_tls_issuer: str = Field(
        description="Kubernetes only: cert-manager ClusterIssuer that signs the Ingress certificates (cert-manager.io/cluster-issuer)."
    )
    ingress_tls_secret: str = Field(
        description="Kubernetes only: existing TLS Secret of every Ingress; when set, ingressTlsIssuer is not used."
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
    "prometheusRetentionTime": "30d",
    "prometheusRetentionSize": "4GiB",
    "prometheusVolumeSize": "5Gi",
    "alertmanagerVolumeSize": "256Mi",
    "grafanaVolumeSize": "1Gi",
    "jaegerVolumeSize": "2Gi",
    "jaegerSpanTtl": "2d",
    "alertmanagerDataRetention": "2d",
    "grafanaDashboardVersionsToKeep": 10,
    "grafanaAnnotationMaxAge": "7d",
    "scrapeSampleLimit": 50000,
    "scrapeLabelLimit": 64,
    "droppedMetricLabels": ["url", "http_url", "http_target", "user_id", "request_id", "trace_id", "session_id"],
    "traceSlowThreshold": "2s",
    "sensitiveSpanAttributes": ["user.email", "user.full_name", "user.name", "enduser.id"],
    "alertDefaultReceiver": "none",
    "alertCriticalReceiver": "none",
    "alertSlackChannel": "",
    "alertEmailTo": "",
    "alertEmailFrom": "",
    "alertEmailSmarthost": "",
    "alertEmailUsername": "",
    "metricConvention": "magflow",
    "metricRequestDuration": "",
    "metricRequestDurationUnit": "",
    "metricRequests": "",
    "metricRequestSize": "",
    "metricResponseSize": "",
    "metricActiveRequests": "",
    "labelMethod": "",
    "labelEndpoint": "",
    "labelStatusCode": "",
    "alertErrorRateThreshold": "0.05",
    "alertErrorRateFor": "5m",
    "alertLatencyP95Threshold": "1s",
    "alertLatencyFor": "5m",
    "alertMinRequestRate": "0.1",
    "alertTrafficDropRatio": "0.3",
    "alertTrafficSurgeFactor": "3",
    "runbookBaseUrl": "https://github.com/magflow/magflow-monitoring/blob/main",
    "sloAvailabilityObjective": "0.995",
    "sloLatencyObjective": "0.99",
    "sloLatencyThreshold": "500ms",
    "sloWindow": "30d",
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
    "ingressControllerNamespace": "ingress-nginx",
    "otlpClientNamespace": "",
    "tlsCaValidity": "1825d",
    "tlsCertificateValidity": "90d",
    "tlsEarlyRenewal": "30d",
    "alertCertificateExpiry": "14d",
    "corsAllowedOrigins": [],
    "ingressTlsIssuer": "",
    "ingressTlsSecret": "",
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
    "jaegerSpanTtl": "14d",
    "alertmanagerDataRetention": "14d",
    "grafanaDashboardVersionsToKeep": 50,
    "grafanaAnnotationMaxAge": "8w",
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
    # An unknown environment is reported on its own key. The other keys are validated against the
    # development defaults, so that error is not buried under a "missing" line for every other key.
    defaults = ENVIRONMENT_DEFAULTS.get(environment, _DEVELOPMENT_DEFAULTS) if isinstance(environment, str) else _DEVELOPMENT_DEFAULTS
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

    bad_value = values.get(key, issue.get("input"))
    field = StackSettings.model_fields.get(_field_name(key))
    accepted = f" ({field.description})" if field is not None and issue["type"] == "literal_error" else ""
    fix = f"pulumi config set {key} <value>"
    if field is not None and get_origin(field.annotation) is list:
        # Without --path the CLI stores one string, which is not a list.
        fix = f"pulumi config set --path '{key}[0]' <value>"
    return f"{PROJECT}:{key}={bad_value!r} is invalid: {message}.{accepted} Fix it with: {fix}"


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
            f"{PROJECT}:prometheusRetentionSize={format_kubernetes_quantity(settings.prometheus_retention_size)!r} "
            f"is above 90% of prometheusVolumeSize={format_kubernetes_quantity(settings.prometheus_volume_size)!r}, "
            "which leaves no room for the WAL "
            "and compaction. Lower prometheusRetentionSize or raise prometheusVolumeSize."
        )

    errors.extend(_check_retention_time(settings))
    errors.extend(_check_certificates(settings))

    return errors


# The traffic alerts compare the request rate with the rate one week earlier (`[5m] offset 1w`,
# components/rules.py). Retention must reach past that, with 1h of margin for longer ranges.
TRAFFIC_ALERT_LOOKBACK = "1w1h"


def _check_retention_time(settings: StackSettings) -> list[str]:
    """Return an error for each query window that reaches further back than prometheusRetentionTime."""
    retention = parse_duration(settings.prometheus_retention_time)
    errors = []

    if retention <= parse_duration(TRAFFIC_ALERT_LOOKBACK):
        errors.append(
            f"{PROJECT}:prometheusRetentionTime={settings.prometheus_retention_time!r} is too short: the traffic "
            f"alerts compare with one week earlier and read samples up to {TRAFFIC_ALERT_LOOKBACK} old. "
            "Set it above that with: pulumi config set prometheusRetentionTime 15d"
        )

    if retention < parse_duration(settings.slo_window):
        errors.append(
            f"{PROJECT}:prometheusRetentionTime={settings.prometheus_retention_time!r} is shorter than "
            f"sloWindow={settings.slo_window!r}, so the SLO queries would read a partial window. Raise it with: "
            f"pulumi config set prometheusRetentionTime {settings.slo_window}, or shorten sloWindow."
        )

    return errors


def _check_certificates(settings: StackSettings) -> list[str]:
    """Return errors for certificate durations that would let a certificate expire unrenewed or unalerted."""
    errors = []
    validity = parse_duration(settings.tls_certificate_validity)
    renewal = parse_duration(settings.tls_early_renewal)
    alert = parse_duration(settings.alert_certificate_expiry)

    if renewal >= validity or validity > parse_duration(settings.tls_ca_validity):
        errors.append(
            f"{PROJECT}:tlsEarlyRenewal={settings.tls_early_renewal!r}, tlsCertificateValidity="
            f"{settings.tls_certificate_validity!r} and tlsCaValidity={settings.tls_ca_validity!r} must grow in "
            "that order, or certificates renew at every run or outlive their CA. Fix them with: "
            "pulumi config set tlsEarlyRenewal 30d (and tlsCertificateValidity 90d, tlsCaValidity 1825d)"
        )
    if alert >= renewal:
        errors.append(
            f"{PROJECT}:alertCertificateExpiry={settings.alert_certificate_expiry!r} is not below "
            f"tlsEarlyRenewal={settings.tls_early_renewal!r}, so the alert fires before `pulumi up` can renew "
            "the certificate. Lower it with: pulumi config set alertCertificateExpiry 14d"
        )
    if settings.platform == "kubernetes" and not (settings.ingress_tls_issuer or settings.ingress_tls_secret):
        errors.append(
            f"{PROJECT}:ingressTlsIssuer and ingressTlsSecret are both empty, but platform is kubernetes and the "
            "Ingress serves HTTPS only. Set one with: pulumi config set ingressTlsIssuer letsencrypt "
            "(a cert-manager ClusterIssuer) or pulumi config set ingressTlsSecret <TLS Secret name>"
        )
    return errors
