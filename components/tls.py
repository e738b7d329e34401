"""TLS for every endpoint of the stack: a private CA per stack and one server certificate per service.

Certificates and keys travel to the services like every other secret value: as entries of the
`secrets` mapping that `render(settings, secrets)` receives, under the keys below (such as
`tls.prometheus.key`). Each service lists the keys it uses in `SECRETS`, and the private key file
is in its `SECRET_FILES`, so it becomes a Kubernetes Secret. The CA and server certificates are
public and stay in ConfigMaps.

`issue_certificates` creates the pulumi-tls resources. A certificate is replaced by `pulumi up`
once less than `tlsEarlyRenewal` of its validity is left, so it renews before it expires.
"""

from typing import Any, Mapping

import pulumi
import pulumi_tls as tls

from components.services import endpoints as ep
from components.settings import StackSettings
from components.units import parse_duration

# Services that serve HTTPS with a certificate of the stack's CA.
SERVED = (ep.PROMETHEUS, ep.ALERTMANAGER, ep.GRAFANA, ep.JAEGER, ep.JAEGER_PROXY, ep.OTEL_COLLECTOR, ep.BLACKBOX_EXPORTER)

CA_CERT_KEY = "tls.ca.crt"

# Paths relative to each service's config directory.
CA_FILE = "tls/ca.crt"
CERT_FILE = "tls/server.crt"
KEY_FILE = "tls/server.key"
SECRET_FILES = frozenset({KEY_FILE})

# Oldest protocol version the servers accept; TLS 1.0 and 1.1 are deprecated (RFC 8996).
MIN_VERSION = "TLS12"

LOOPBACK_IP = "127.0.0.1"


def cert_key(service: str) -> str:
    return f"tls.{service}.crt"


def key_key(service: str) -> str:
    return f"tls.{service}.key"


def secret_keys(service: str) -> tuple[str, ...]:
    """Return the keys of the CA certificate and of the service's certificate and private key."""
    return (CA_CERT_KEY, cert_key(service), key_key(service))


def generated_keys() -> tuple[str, ...]:
    """Return every key that `issue_certificates` adds to the secrets mapping."""
    keys = [CA_CERT_KEY]
    for service in SERVED:
        keys.extend((cert_key(service), key_key(service)))
    return tuple(keys)


def files(service: str, secrets: Mapping[str, str]) -> dict[str, str]:
    """Return the CA, certificate and key files of a service, for the keys that `secrets` contains.

    A render without certificates (`secrets` empty) returns no file, so that configuration-only
    checks can render a service without any secret.
    """
    paths = {CA_FILE: CA_CERT_KEY, CERT_FILE: cert_key(service), KEY_FILE: key_key(service)}
    return {path: secrets[key] for path, key in paths.items() if key in secrets}


def dns_names(service: str, settings: StackSettings) -> list[str]:
    """Return the host names in a service's certificate: its short name, its cluster names and localhost.

    The short name is the Docker network alias and the in-namespace Service name, which the
    services use to reach each other.
    """
    names = [service, "localhost"]
    if settings.platform == "kubernetes":
        names[1:1] = [
            f"{service}.{settings.namespace}",
            f"{service}.{settings.namespace}.svc",
            f"{service}.{settings.namespace}.svc.cluster.local",
        ]
    return names


def ip_addresses(settings: StackSettings) -> list[str]:
    """Return the IP addresses in each certificate: 127.0.0.1 on Docker, where ports publish on loopback."""
    return [LOOPBACK_IP] if settings.platform == "docker" else []


def web_config(config_dir: str, users: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return an exporter-toolkit web configuration (`--web.config.file`): TLS and optional basic auth.

    `users` maps each user name to its bcrypt hash. Prometheus, Alertmanager and the blackbox
    exporter read the same format.
    """
    config: dict[str, Any] = {
        "tls_server_config": {
            "cert_file": f"{config_dir}/{CERT_FILE}",
            "key_file": f"{config_dir}/{KEY_FILE}",
            "min_version": MIN_VERSION,
        }
    }
    if users:
        config["basic_auth_users"] = dict(users)
    return config


def client_tls(config_dir: str, server_name: str | None = None) -> dict[str, str]:
    """Return a Prometheus `tls_config` that trusts the stack's CA."""
    config = {"ca_file": f"{config_dir}/{CA_FILE}"}
    if server_name:
        config["server_name"] = server_name
    return config


def _hours(duration: str) -> int:
    return int(parse_duration(duration) // 3600)


def issue_certificates(settings: StackSettings, stack: str, parent: pulumi.Resource) -> dict[str, pulumi.Output[str]]:
    """Create the stack's CA and one server certificate per served service; return them by secret key.

    Private keys are secret outputs of pulumi-tls, and the certificates are plain outputs.
    """
    opts = pulumi.ResourceOptions(parent=parent)
    ca_key = tls.PrivateKey("tls-ca-key", algorithm="ECDSA", ecdsa_curve="P256", opts=opts)
    ca_cert = tls.SelfSignedCert(
        "tls-ca",
        private_key_pem=ca_key.private_key_pem,
        is_ca_certificate=True,
        subject=tls.SelfSignedCertSubjectArgs(common_name=f"magflow-monitoring {stack} CA", organization="MagFlow"),
        validity_period_hours=_hours(settings.tls_ca_validity),
        early_renewal_hours=_hours(settings.tls_early_renewal),
        allowed_uses=["cert_signing", "crl_signing", "digital_signature"],
        opts=opts,
    )

    outputs: dict[str, pulumi.Output[str]] = {CA_CERT_KEY: ca_cert.cert_pem}
    for service in SERVED:
        key = tls.PrivateKey(f"tls-{service}-key", algorithm="ECDSA", ecdsa_curve="P256", opts=opts)
        request = tls.CertRequest(
            f"tls-{service}",
            private_key_pem=key.private_key_pem,
            subject=tls.CertRequestSubjectArgs(common_name=service, organization="MagFlow"),
            dns_names=dns_names(service, settings),
            ip_addresses=ip_addresses(settings),
            opts=opts,
        )
        cert = tls.LocallySignedCert(
            f"tls-{service}",
            cert_request_pem=request.cert_request_pem,
            ca_private_key_pem=ca_key.private_key_pem,
            ca_cert_pem=ca_cert.cert_pem,
            validity_period_hours=_hours(settings.tls_certificate_validity),
            early_renewal_hours=_hours(settings.tls_early_renewal),
            allowed_uses=["digital_signature", "key_encipherment", "server_auth"],
            opts=opts,
        )
        outputs[cert_key(service)] = cert.cert_pem
        outputs[key_key(service)] = pulumi.Output.secret(key.private_key_pem)
    return outputs
