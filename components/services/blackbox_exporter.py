"""Blackbox exporter: probes each API instance's health endpoint from outside, for Prometheus.

Prometheus' `magflow-api-health` job requests a probe of every API target with the `http_2xx`
module, so a probe fails when `GET /health` stops returning 200, even while the API's `/metrics`
endpoint still responds.
"""

from typing import Any, Mapping

from components import tls
from components.rendering import to_yaml
from components.services import endpoints as ep
from components.settings import StackSettings
from components.workload import HttpCheck, Port, Resources, Workload

NAME = ep.BLACKBOX_EXPORTER
IMAGE = "prom/blackbox-exporter:v0.27.0"
PORT = ep.BLACKBOX_EXPORTER_PORT
CONFIG_DIR = "/etc/blackbox_exporter"

HTTP_MODULE = "http_2xx"
TLS_MODULE = "tls_connect"
# Prometheus job that probes every HTTPS endpoint of the stack with TLS_MODULE.
TLS_PROBE_JOB = "tls-certificates"
API_HEALTH_PATH = "/health"
WEB_CONFIG_FILE = "web.yml"

SECRETS: tuple[str, ...] = tls.secret_keys(NAME)
SECRET_FILES: frozenset[str] = tls.SECRET_FILES


def render_config() -> dict[str, Any]:
    """Return the exporter's config.yml as data."""
    return {
        "modules": {
            HTTP_MODULE: {
                "prober": "http",
                # The exporter also caps each probe at the scrape timeout that Prometheus sends.
                "timeout": "5s",
                "http": {
                    "method": "GET",
                    # Only 200 counts as healthy, so a redirect to a login page or a 204 fails the probe.
                    "valid_status_codes": [200],
                    "preferred_ip_protocol": "ip4",
                },
            },
            # A TLS handshake that verifies the endpoint's certificate against the stack's CA;
            # the server name is the target's host name.
            TLS_MODULE: {
                "prober": "tcp",
                "timeout": "5s",
                "tcp": {"tls": True, "tls_config": {"ca_file": f"{CONFIG_DIR}/{tls.CA_FILE}"}, "preferred_ip_protocol": "ip4"},
            },
        }
    }


def render(settings: StackSettings, secrets: Mapping[str, str]) -> dict[str, str]:
    """Return every file the exporter reads, by path relative to its config directory."""
    return {
        "config.yml": to_yaml(render_config()),
        WEB_CONFIG_FILE: to_yaml(tls.web_config(CONFIG_DIR)),
        **tls.files(NAME, secrets),
    }


def workload(settings: StackSettings, files: Mapping[str, Any]) -> Workload:
    return Workload(
        name=NAME,
        image=IMAGE,
        args=[
            f"--config.file={CONFIG_DIR}/config.yml",
            f"--web.listen-address=0.0.0.0:{PORT}",
            f"--web.config.file={CONFIG_DIR}/{WEB_CONFIG_FILE}",
        ],
        # Only Prometheus calls the exporter, from inside the Docker network or the cluster.
        ports=[Port("http", PORT)],
        config_dir=CONFIG_DIR,
        files=dict(files),
        secret_files=SECRET_FILES,
        # NOTE: no Docker health check: the image's busybox wget has no TLS and the image has no
        # other HTTP client. Kubernetes probes the endpoint over HTTPS.
        check=HttpCheck("/-/healthy", PORT, None, scheme="HTTPS"),
        resources=Resources("25m", "32Mi", "250m", "128Mi"),
        # The API runs on the developer's machine in the dev stack, and the exporter probes it there.
        extra_hosts={"host.docker.internal": "host-gateway"},
    )
