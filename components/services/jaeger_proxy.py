"""Caddy in front of Jaeger's UI and API: HTTPS with the stack CA's certificate and basic auth.

Jaeger 2.7 checks no credentials, and its distribution has no server authenticator extension.
So this proxy requires basic auth: user `monitoring` and the bcrypt hash of the generated
`jaeger-basic-auth-password`. It forwards to Jaeger's query port over HTTPS, verified with the
stack CA. It owns the published Docker port and the Jaeger Ingress. Grafana's Jaeger
datasource still connects to Jaeger directly inside the network.

The Caddyfile is valid for Caddy 2.6.2 (Debian 12, used by the live test) and for the image's
Caddy 2.10. Both accept `basicauth` and `tls_trusted_ca_certs`; 2.8 and later log them as
deprecated names of `basic_auth` and `tls_trust_pool`, which 2.6.2 lacks.
"""

from typing import Any, Mapping

from components import credentials, tls
from components.services import endpoints as ep
from components.settings import StackSettings
from components.workload import HttpCheck, Port, Resources, Workload

NAME = ep.JAEGER_PROXY
IMAGE = "caddy:2.10.0-alpine"
CONFIG_DIR = "/etc/caddy"
CADDYFILE = "Caddyfile"
UPSTREAM = ep.address(ep.JAEGER, ep.JAEGER_UI_PORT)
# Caddy's storage and config directories (XDG_DATA_HOME and XDG_CONFIG_HOME in the image): Caddy
# writes autosave.json to the config directory at every start. Caddy 2.6.2 has no `persist_config
# off` to stop that, so both are scratch directories.
STATE_DIRS = ("/data", "/config")
SECRETS: tuple[str, ...] = (*tls.secret_keys(NAME), credentials.hash_key(ep.JAEGER))
# The Caddyfile contains the bcrypt hash.
SECRET_FILES: frozenset[str] = frozenset({CADDYFILE, *tls.SECRET_FILES})


def render_caddyfile(
    password_hash: str,
    config_dir: str = CONFIG_DIR,
    upstream: str = UPSTREAM,
    port: int = ep.JAEGER_PROXY_PORT,
    health_port: int = ep.JAEGER_PROXY_HEALTH_PORT,
    bind: str | None = None,
) -> str:
    """Return the Caddyfile; `bind` limits both listeners to one address, as the live test needs.

    `password_hash` is a bcrypt hash (`$2a$...`) as pulumi-random's `bcrypt_hash` returns it.
    Caddy 2.6.2 and 2.10 read it without base64 encoding.
    """
    bind_line = f"\tbind {bind}\n" if bind else ""
    return (
        "{\n"
        # No admin API: the config never changes at run time, and nothing may reconfigure it.
        "\tadmin off\n"
        # Certificates come from the stack CA: no ACME, and no HTTP-to-HTTPS redirect listener on :80.
        "\tauto_https off\n"
        # HTTP/1.1 and HTTP/2 only: HTTP/3 would open a UDP listener that no port publishes.
        "\tservers {\n"
        "\t\tprotocols h1 h2\n"
        "\t}\n"
        "}\n"
        "\n"
        f"https://:{port} {{\n"
        f"{bind_line}"
        f"\ttls {config_dir}/{tls.CERT_FILE} {config_dir}/{tls.KEY_FILE} {{\n"
        "\t\tprotocols tls1.2\n"
        "\t}\n"
        "\tbasicauth {\n"
        f"\t\t{credentials.BASIC_AUTH_USER} {password_hash}\n"
        "\t}\n"
        f"\treverse_proxy https://{upstream} {{\n"
        "\t\ttransport http {\n"
        f"\t\t\ttls_trusted_ca_certs {config_dir}/{tls.CA_FILE}\n"
        # Jaeger's certificate names the service, whatever address reaches it.
        f"\t\t\ttls_server_name {ep.JAEGER}\n"
        "\t\t}\n"
        "\t}\n"
        "}\n"
        "\n"
        # Plain HTTP health endpoint for the Docker health check and Kubernetes probes, like the
        # health ports of Jaeger and the collector. It proxies nothing.
        f"http://:{health_port} {{\n"
        f"{bind_line}"
        '\trespond /healthz "OK" 200\n'
        "}\n"
    )


def render(settings: StackSettings, secrets: Mapping[str, str]) -> dict[str, str]:
    """Return the Caddyfile and TLS files, for the keys that `secrets` contains.

    Without the hash (a configuration-only render) the Caddyfile is left out, because a proxy
    without basic auth must not exist.
    """
    files = dict(tls.files(NAME, secrets))
    if credentials.hash_key(ep.JAEGER) in secrets:
        files[CADDYFILE] = render_caddyfile(secrets[credentials.hash_key(ep.JAEGER)])
    return files


def workload(settings: StackSettings, files: Mapping[str, Any]) -> Workload:
    return Workload(
        name=NAME,
        image=IMAGE,
        args=["caddy", "run", "--config", f"{CONFIG_DIR}/{CADDYFILE}", "--adapter", "caddyfile"],
        ports=[
            Port("https", ep.JAEGER_PROXY_PORT, host_port=settings.jaeger_port, ingress=True),
            Port("health", ep.JAEGER_PROXY_HEALTH_PORT),
        ],
        config_dir=CONFIG_DIR,
        files=dict(files),
        secret_files=SECRET_FILES,
        check=HttpCheck(
            "/healthz", ep.JAEGER_PROXY_HEALTH_PORT,
            ("wget", "-q", "-O", "/dev/null", f"http://localhost:{ep.JAEGER_PROXY_HEALTH_PORT}/healthz"),
        ),
        resources=Resources("50m", "32Mi", "500m", "128Mi"),
        # The Ingress keeps the host jaeger.<ingressDomain> that served Jaeger before the proxy.
        ingress_name=ep.JAEGER,
        # The image's /usr/bin/caddy carries the file capability cap_net_bind_service=+ep, and
        # the kernel rejects execve with EPERM when a file capability is outside the bounding set
        # (capabilities(7), "safety checking for capability-dumb binaries"). So the proxy keeps
        # NET_BIND_SERVICE in the bounding set. With no-new-privileges the process still gets no
        # capability, and it listens on ports above 1024 only.
        # NOTE: checked against the kernel's rules and Caddy's image issues, not by running the image.
        capabilities=("NET_BIND_SERVICE",),
        tmp_dirs=STATE_DIRS,
    )
