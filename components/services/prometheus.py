"""Prometheus: scrape jobs for the API and every stack component, rule files, Alertmanager."""

from typing import Any, Mapping

from components import credentials, rules, tls
from components.rendering import REPOSITORY_ROOT, to_yaml
from components.services import blackbox_exporter
from components.services import endpoints as ep
from components.settings import StackSettings
from components.units import format_prometheus_size
from components.workload import DataVolume, HttpCheck, Port, Resources, Workload

NAME = ep.PROMETHEUS
IMAGE = "prom/prometheus:v3.4.1"
PORT = ep.PROMETHEUS_PORT
CONFIG_DIR = "/etc/prometheus"
DATA_DIR = "/prometheus"
RULES_DIR = REPOSITORY_ROOT / "rules"

API_JOB = "magflow-api"
API_HEALTH_JOB = "magflow-api-health"
API_TOKEN_FILE = "secrets/api-metrics-token"
WEB_CONFIG_FILE = "web.yml"
# Settings for clients of Prometheus' own API: the container's health check.
HTTP_CLIENT_FILE = "http-client.yml"
# Basic-auth passwords that Prometheus sends to itself and to Alertmanager.
PASSWORD_FILES = {service: f"secrets/{service}-password" for service in credentials.PROTECTED}
TLS_PROBE_JOB = blackbox_exporter.TLS_PROBE_JOB
SECRETS = (
    "apiMetricsToken",
    *tls.secret_keys(NAME),
    *(credentials.password_key(service) for service in credentials.PROTECTED),
    credentials.hash_key(NAME),
)
# The web configuration contains a bcrypt hash, which is kept as secret as the password.
SECRET_FILES = frozenset({API_TOKEN_FILE, WEB_CONFIG_FILE, *PASSWORD_FILES.values(), *tls.SECRET_FILES})


def render_config(settings: StackSettings) -> dict[str, Any]:
    """Return prometheus.yml as data."""
    api_job = {
        "job_name": API_JOB,
        "scrape_interval": settings.api_scrape_interval,
        "scheme": settings.api_scheme,
        "metrics_path": settings.api_metrics_path,
        # The API rejects unauthenticated scrapes of /metrics; the token is a mounted secret file.
        "authorization": {"type": "Bearer", "credentials_file": f"{CONFIG_DIR}/{API_TOKEN_FILE}"},
        # A target label, unlike the external label, is in every stored series, so dashboards and
        # recording rules can filter and group by environment.
        "static_configs": [{"targets": list(settings.api_targets), "labels": {"environment": settings.environment}}],
    }

    # Standard blackbox pattern: each API target becomes the exporter's `target` parameter, and
    # the exporter's address replaces it. `instance` stays host:port, as in the magflow-api job.
    health_job = {
        "job_name": API_HEALTH_JOB,
        "scrape_interval": settings.api_scrape_interval,
        "metrics_path": "/probe",
        "params": {"module": [blackbox_exporter.HTTP_MODULE]},
        **_https(ep.BLACKBOX_EXPORTER),
        "static_configs": [{"targets": list(settings.api_targets), "labels": {"environment": settings.environment}}],
        "relabel_configs": [
            {
                "source_labels": ["__address__"],
                "target_label": "__param_target",
                "replacement": f"{settings.api_scheme}://${{1}}{blackbox_exporter.API_HEALTH_PATH}",
            },
            {"source_labels": ["__address__"], "target_label": "instance"},
            {"target_label": "__address__", "replacement": ep.address(ep.BLACKBOX_EXPORTER, ep.BLACKBOX_EXPORTER_PORT)},
        ],
    }

    # The exporter opens a TLS connection to each HTTPS endpoint and reports the earliest expiry
    # of the chain it is served (probe_ssl_earliest_cert_expiry), for CertificateExpiringSoon.
    tls_probe_job = {
        "job_name": TLS_PROBE_JOB,
        "metrics_path": "/probe",
        "params": {"module": [blackbox_exporter.TLS_MODULE]},
        **_https(ep.BLACKBOX_EXPORTER),
        "static_configs": [{"targets": [ep.address(host, port) for host, port in tls_endpoints()]}],
        "relabel_configs": [
            {"source_labels": ["__address__"], "target_label": "__param_target"},
            {"source_labels": ["__address__"], "target_label": "instance"},
            {"target_label": "__address__", "replacement": ep.address(ep.BLACKBOX_EXPORTER, ep.BLACKBOX_EXPORTER_PORT)},
        ],
    }

    component_jobs = [
        _job(ep.OTEL_COLLECTOR, ep.address(ep.OTEL_COLLECTOR, ep.COLLECTOR_TELEMETRY_PORT)),
        # Metrics that applications push over OTLP, re-exposed by the collector. honor_labels keeps
        # the job and instance that the collector derives from each sender's resource attributes.
        {**_job("otlp-metrics", ep.address(ep.OTEL_COLLECTOR, ep.COLLECTOR_PROMETHEUS_EXPORTER_PORT)), "honor_labels": True},
        {**_job(NAME, f"localhost:{PORT}"), **_https("localhost"), **_basic_auth(NAME)},
        {**_job(ep.ALERTMANAGER, ep.address(ep.ALERTMANAGER, ep.ALERTMANAGER_PORT)), **_https(ep.ALERTMANAGER), **_basic_auth(ep.ALERTMANAGER)},
        {**_job(ep.GRAFANA, ep.address(ep.GRAFANA, ep.GRAFANA_PORT)), **_https(ep.GRAFANA)},
        _job(ep.JAEGER, ep.address(ep.JAEGER, ep.JAEGER_TELEMETRY_PORT)),
        {**_job(ep.BLACKBOX_EXPORTER, ep.address(ep.BLACKBOX_EXPORTER, ep.BLACKBOX_EXPORTER_PORT)), **_https(ep.BLACKBOX_EXPORTER)},
    ]

    return {
        "global": {
            "scrape_interval": "15s",
            "evaluation_interval": "15s",
            "external_labels": {"environment": settings.environment},
        },
        "rule_files": [f"{CONFIG_DIR}/rules/*.yml"],
        "alerting": {
            "alertmanagers": [
                {
                    **_https(ep.ALERTMANAGER),
                    **_basic_auth(ep.ALERTMANAGER),
                    "static_configs": [{"targets": [ep.address(ep.ALERTMANAGER, ep.ALERTMANAGER_PORT)]}],
                }
            ],
        },
        "scrape_configs": limit_cardinality([api_job, health_job, tls_probe_job, *component_jobs], settings),
    }


def tls_endpoints() -> list[tuple[str, int]]:
    """Return the host and port of every endpoint whose certificate the blackbox exporter checks.

    The exporter's own certificate is left out, because it would have to connect to itself. It is
    issued with the others and has the same validity, so their alerts cover it.
    """
    return [
        (ep.PROMETHEUS, ep.PROMETHEUS_PORT),
        (ep.ALERTMANAGER, ep.ALERTMANAGER_PORT),
        (ep.GRAFANA, ep.GRAFANA_PORT),
        (ep.JAEGER, ep.JAEGER_UI_PORT),
        (ep.JAEGER, ep.OTLP_GRPC_PORT),
        (ep.JAEGER_PROXY, ep.JAEGER_PROXY_PORT),
        (ep.OTEL_COLLECTOR, ep.OTLP_GRPC_PORT),
        (ep.OTEL_COLLECTOR, ep.OTLP_HTTP_PORT),
    ]


def _job(name: str, target: str) -> dict[str, Any]:
    return {"job_name": name, "static_configs": [{"targets": [target]}]}


def _https(host: str) -> dict[str, Any]:
    """Return the scheme and TLS settings of a connection to a service that serves the stack's CA."""
    return {"scheme": "https", "tls_config": tls.client_tls(CONFIG_DIR, host)}


def _basic_auth(service: str) -> dict[str, Any]:
    return {"basic_auth": {"username": credentials.BASIC_AUTH_USER, "password_file": f"{CONFIG_DIR}/{PASSWORD_FILES[service]}"}}


def limit_cardinality(jobs: list[dict[str, Any]], settings: StackSettings) -> list[dict[str, Any]]:
    """Add the cardinality guards to every scrape job.

    A scrape with more samples than `sample_limit`, or a series with more labels than
    `label_limit`, fails as a whole: the target reports `up == 0` and nothing of it is stored,
    so a runaway target cannot fill the disk. `labeldrop` removes per-request labels (URLs, user
    and request ids) after the scrape and before storage. It runs after honor_labels, so it also
    covers the labels that OTLP senders set.
    """
    dropped = "|".join(settings.dropped_metric_labels)
    # A fresh list per job, so that the YAML output has no anchors and aliases.
    return [
        {
            **job,
            "sample_limit": settings.scrape_sample_limit,
            "label_limit": settings.scrape_label_limit,
            "metric_relabel_configs": [{"action": "labeldrop", "regex": dropped}],
        }
        for job in jobs
    ]


def rule_files(settings: StackSettings) -> dict[str, str]:
    """Return the rule files generated for the stack's metric contract, by file name."""
    return rules.render_rule_files(settings)


def render(settings: StackSettings, secrets: Mapping[str, str]) -> dict[str, str]:
    """Return every file Prometheus reads, by path relative to its config directory."""
    files = {"prometheus.yml": to_yaml(render_config(settings))}
    files.update({f"rules/{name}": text for name, text in rule_files(settings).items()})
    files[API_TOKEN_FILE] = secrets["apiMetricsToken"]
    files.update(tls.files(NAME, secrets))
    files[WEB_CONFIG_FILE] = to_yaml(
        tls.web_config(CONFIG_DIR, {credentials.BASIC_AUTH_USER: secrets[credentials.hash_key(NAME)]})
    )
    files[HTTP_CLIENT_FILE] = to_yaml({**_basic_auth(NAME), "tls_config": tls.client_tls(CONFIG_DIR)})
    for service, path in PASSWORD_FILES.items():
        files[path] = secrets[credentials.password_key(service)]
    return files


def args(settings: StackSettings) -> list[str]:
    """Return the command-line flags, which carry the retention settings."""
    return [
        f"--config.file={CONFIG_DIR}/prometheus.yml",
        f"--storage.tsdb.path={DATA_DIR}",
        f"--storage.tsdb.retention.time={settings.prometheus_retention_time}",
        f"--storage.tsdb.retention.size={format_prometheus_size(settings.prometheus_retention_size)}",
        f"--web.listen-address=0.0.0.0:{PORT}",
        # TLS and basic auth on every path, the health endpoints included.
        f"--web.config.file={CONFIG_DIR}/{WEB_CONFIG_FILE}",
        "--web.enable-lifecycle",
        # Stores the trace ids that the API attaches to histogram samples, for Grafana's links to Jaeger.
        "--enable-feature=exemplar-storage",
    ]


def workload(settings: StackSettings, files: Mapping[str, Any]) -> Workload:
    return Workload(
        name=NAME,
        image=IMAGE,
        args=args(settings),
        ports=[Port("http", PORT, host_port=settings.prometheus_port, ingress=True)],
        config_dir=CONFIG_DIR,
        files=dict(files),
        secret_files=SECRET_FILES,
        # The image's busybox wget has no TLS support, so Docker runs
        # promtool, which reads the CA and the password from the client settings file.
        # NOTE: `promtool check ready` is in the image's Prometheus 3; Debian's promtool 2.42 lacks it,
        # so no test here runs this command.
        check=HttpCheck(
            "/-/ready",
            PORT,
            ("promtool", "check", "ready", f"--url=https://localhost:{PORT}", f"--http.config.file={CONFIG_DIR}/{HTTP_CLIENT_FILE}"),
            scheme="HTTPS",
            authenticated=True,
        ),
        data=DataVolume(DATA_DIR, settings.prometheus_volume_size),
        resources=Resources("250m", "1Gi", "2", "4Gi") if settings.is_production else Resources("100m", "256Mi", "1", "1Gi"),
        # The API runs on the developer's machine in the dev stack.
        extra_hosts={"host.docker.internal": "host-gateway"},
    )
