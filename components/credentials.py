"""Generated credentials: basic-auth passwords of Prometheus, Alertmanager and Jaeger, and the OTLP bearer token.

Like certificates, they join the `secrets` mapping that services render from, under the keys below.

Basic-auth passwords come from pulumi-random `RandomPassword`. Its `bcrypt_hash` output is
computed once, when the password is created, and kept in the stack's state, so a preview never
gets a new hash and never restarts Prometheus or Alertmanager. A config-supplied password would
need a hash computed in the program, which changes at every run because bcrypt salts are random.
"""

import pulumi
import pulumi_random as random

from components.services import endpoints as ep
from components.settings import StackSettings

# User name of the basic-auth protected APIs, sent by Grafana's datasources and Prometheus itself.
BASIC_AUTH_USER = "monitoring"

# Services whose web configuration requires basic auth.
PROTECTED = (ep.PROMETHEUS, ep.ALERTMANAGER)
# Services that check no credentials themselves (Jaeger 2.7), so that an authenticating proxy
# (components.services.jaeger_proxy) requires them, on both platforms.
PROXY_PROTECTED = (ep.JAEGER,)

# Stack config key of the OTLP bearer token; when unset, production generates one.
OTLP_TOKEN_KEY = "otlpBearerToken"


def password_key(service: str) -> str:
    return f"auth.{service}.password"


def hash_key(service: str) -> str:
    return f"auth.{service}.hash"


def generated_keys() -> tuple[str, ...]:
    """Return the generated keys that services render from, apart from the OTLP token.

    A proxy-protected service's password is left out: only its hash is rendered, and the
    password is a stack output.
    """
    keys = [key for service in PROTECTED for key in (password_key(service), hash_key(service))]
    return (*keys, *(hash_key(service) for service in PROXY_PROTECTED))


def generate(settings: StackSettings, secrets: dict[str, pulumi.Input[str]], parent: pulumi.Resource) -> None:
    """Add the basic-auth passwords and hashes, and a production OTLP token when none is set, to `secrets`."""
    opts = pulumi.ResourceOptions(parent=parent)
    for service in (*PROTECTED, *PROXY_PROTECTED):
        # Letters and digits only, so no file, header or URL needs escaping.
        password = random.RandomPassword(f"{service}-basic-auth-password", length=32, special=False, opts=opts)
        secrets[password_key(service)] = pulumi.Output.secret(password.result)
        secrets[hash_key(service)] = pulumi.Output.secret(password.bcrypt_hash)

    if settings.is_production and OTLP_TOKEN_KEY not in secrets:
        token = random.RandomPassword("otlp-bearer-token", length=48, special=False, opts=opts)
        secrets[OTLP_TOKEN_KEY] = pulumi.Output.secret(token.result)
