"""Alertmanager: routing to the receivers chosen in stack config."""

from typing import Any, Mapping

from components import credentials, tls
from components.rendering import to_yaml
from components.services import endpoints as ep
from components.settings import StackSettings
from components.units import format_go_duration, parse_duration
from components.workload import DataVolume, HttpCheck, Port, Resources, Workload

NAME = ep.ALERTMANAGER
IMAGE = "prom/alertmanager:v0.28.1"
PORT = ep.ALERTMANAGER_PORT
CONFIG_DIR = "/etc/alertmanager"
DATA_DIR = "/alertmanager"

# Receiver URLs and passwords are written into alertmanager.yml, so the whole file is a secret.
# NOTE: webhook `url_file` would keep the URL out of the file, but Alertmanager only reads it
# from 0.26 on, and the tests check the file with Debian's amtool 0.25.
WEB_CONFIG_FILE = "web.yml"
# Client settings of amtool in the container's health check: the CA and Alertmanager's own password.
HTTP_CLIENT_FILE = "http-client.yml"
PASSWORD_FILE = "secrets/alertmanager-password"
SECRETS = (
    "alertWebhookUrl",
    "alertSlackWebhookUrl",
    "alertEmailPassword",
    *tls.secret_keys(NAME),
    credentials.password_key(NAME),
    credentials.hash_key(NAME),
)
SECRET_FILES = frozenset({"alertmanager.yml", WEB_CONFIG_FILE, PASSWORD_FILE, *tls.SECRET_FILES})


def _receiver(kind: str, settings: StackSettings, secrets: Mapping[str, str]) -> dict[str, Any]:
    if kind == "webhook":
        return {"name": kind, "webhook_configs": [{"url": secrets["alertWebhookUrl"], "send_resolved": True}]}

    if kind == "slack":
        return {
            "name": kind,
            "slack_configs": [
                {
                    "api_url": secrets["alertSlackWebhookUrl"],
                    "channel": settings.alert_slack_channel,
                    "send_resolved": True,
                    "title": '[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }} ({{ .CommonLabels.environment }})',
                    "text": "{{ range .Alerts }}{{ .Annotations.summary }}\n{{ .Annotations.description }}\n"
                    "Runbook: {{ .Annotations.runbook_url }}\n{{ end }}",
                }
            ],
        }

    if kind == "email":
        email = {
            "to": settings.alert_email_to,
            "from": settings.alert_email_from,
            "smarthost": settings.alert_email_smarthost,
            "send_resolved": True,
        }
        if settings.alert_email_username:
            email["auth_username"] = settings.alert_email_username
            email["auth_password"] = secrets.get("alertEmailPassword", "")
        return {"name": kind, "email_configs": [email]}

    # "none" keeps alerts visible in Alertmanager's UI and API without notifying anyone.
    return {"name": "none"}


def render_config(settings: StackSettings, secrets: Mapping[str, str]) -> dict[str, Any]:
    """Return alertmanager.yml as data. `secrets` contains the receiver secrets that are set."""
    routes: list[dict[str, Any]] = [
        # The Watchdog fires all the time to prove the alert path works, so it must notify no receiver.
        {"receiver": "none", "matchers": ['alertname="Watchdog"'], "repeat_interval": "1h"},
    ]
    if settings.alert_critical_receiver != "none":
        routes.append({"receiver": settings.alert_critical_receiver, "matchers": ['severity="critical"']})

    kinds = sorted({"none", settings.alert_default_receiver, settings.alert_critical_receiver})

    return {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": settings.alert_default_receiver,
            "group_by": ["alertname", "job"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": routes,
        },
        "inhibit_rules": [
            {
                # A critical alert already covers the warning of the same problem.
                "source_matchers": ['severity="critical"'],
                "target_matchers": ['severity="warning"'],
                "equal": ["alertname", "job"],
            }
        ],
        "receivers": [_receiver(kind, settings, secrets) for kind in kinds],
    }


def render(settings: StackSettings, secrets: Mapping[str, str]) -> dict[str, str]:
    """Return every file Alertmanager reads, by path relative to its config directory."""
    files = {"alertmanager.yml": to_yaml(render_config(settings, secrets)), **tls.files(NAME, secrets)}
    if credentials.hash_key(NAME) in secrets:
        user = credentials.BASIC_AUTH_USER
        files[WEB_CONFIG_FILE] = to_yaml(tls.web_config(CONFIG_DIR, {user: secrets[credentials.hash_key(NAME)]}))
        files[PASSWORD_FILE] = secrets[credentials.password_key(NAME)]
        files[HTTP_CLIENT_FILE] = to_yaml(
            {
                "basic_auth": {"username": user, "password_file": f"{CONFIG_DIR}/{PASSWORD_FILE}"},
                "tls_config": tls.client_tls(CONFIG_DIR),
            }
        )
    return files


def workload(settings: StackSettings, files: Mapping[str, Any]) -> Workload:
    return Workload(
        name=NAME,
        image=IMAGE,
        args=[
            f"--config.file={CONFIG_DIR}/alertmanager.yml",
            f"--storage.path={DATA_DIR}",
            # Expired silences and notification log entries older than this are deleted; Go duration syntax.
            f"--data.retention={format_go_duration(parse_duration(settings.alertmanager_data_retention))}",
            f"--web.listen-address=0.0.0.0:{PORT}",
            # TLS and basic auth on every path, the health endpoints included.
            f"--web.config.file={CONFIG_DIR}/{WEB_CONFIG_FILE}",
            # A single replica: no gossip peers to find.
            "--cluster.listen-address=",
        ],
        ports=[Port("http", PORT, host_port=settings.alertmanager_port, ingress=True)],
        config_dir=CONFIG_DIR,
        files=dict(files),
        secret_files=SECRET_FILES,
        # The image's busybox wget has no TLS support, so Docker runs amtool, which requests GET /api/v2/status.
        check=HttpCheck(
            "/-/ready",
            PORT,
            (
                "amtool", "config", "show",
                f"--alertmanager.url=https://localhost:{PORT}",
                f"--http.config.file={CONFIG_DIR}/{HTTP_CLIENT_FILE}",
            ),
            scheme="HTTPS",
            authenticated=True,
        ),
        data=DataVolume(DATA_DIR, settings.alertmanager_volume_size),
        resources=Resources("50m", "64Mi", "500m", "256Mi"),
    )
