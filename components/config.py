"""Reading stack config from the Pulumi runtime or from a stack file."""

from pathlib import Path
from typing import Any

import pulumi
import pulumi.runtime.config as runtime_config
import yaml

from components.settings import PROJECT, SECRET_KEYS, ConfigError, StackSettings, load_settings

_PREFIX = f"{PROJECT}:"


def read_runtime_config() -> dict[str, Any]:
    """Return the project's config keys, without the namespace, as the Pulumi engine passed them."""
    values = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    return {key.removeprefix(_PREFIX): value for key, value in values.items() if key.startswith(_PREFIX)}


def load_stack() -> tuple[StackSettings, dict[str, pulumi.Output[str]]]:
    """Validate the running stack's config and return its settings and secret outputs.

    Raises ConfigError before any resource exists when the config is invalid.
    """
    settings = load_settings(read_runtime_config())

    plain = [key for key in sorted(settings.secrets_set) if not runtime_config.is_config_secret(f"{_PREFIX}{key}")]
    if plain:
        fixes = "; ".join(f"pulumi config set --secret {key} <value>" for key in plain)
        raise ConfigError(
            f"invalid stack config: {', '.join(plain)} must be encrypted in the stack file, "
            f"not stored as plain text. Set each again with: {fixes}"
        )

    config = pulumi.Config(PROJECT)
    secrets = {key: config.require_secret(key) for key in sorted(settings.secrets_set)}
    return settings, secrets


def read_stack_file(path: Path) -> dict[str, Any]:
    """Return the project's config keys from a `Pulumi.<stack>.yaml` file, without the namespace.

    Encrypted values (`secure:`) are kept as they are: without the stack's passphrase they stay unread.
    """
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"invalid stack file {path.name}: it is not valid YAML ({error}). Fix the file's syntax.") from None
    if not isinstance(document, dict):
        raise ConfigError(f"invalid stack file {path.name}: expected a mapping with a `config:` key")
    values = document.get("config") or {}
    return {key.removeprefix(_PREFIX): value for key, value in values.items() if key.startswith(_PREFIX)}


def stack_file_settings(stack: str) -> StackSettings:
    """Validate `Pulumi.<stack>.yaml` with placeholder secrets and return its settings.

    Raises FileNotFoundError when the stack has no stack file, and ConfigError when it is invalid.
    """
    from components.rendering import REPOSITORY_ROOT

    stack_file = REPOSITORY_ROOT / f"Pulumi.{stack}.yaml"
    if not stack_file.exists():
        raise FileNotFoundError(f"stack file {stack_file} not found: use a stack that has a Pulumi.<stack>.yaml file")
    return load_settings({**read_stack_file(stack_file), **placeholder_secrets()})


def secret_placeholder(key: str) -> str:
    """Return the stand-in for a secret value in rendered files: clearly marked and still well-formed."""
    if key.endswith("Url"):
        return f"https://secret-placeholder.invalid/{key}"
    return f"SECRET-PLACEHOLDER-{key}"


def placeholder_secrets() -> dict[str, str]:
    return {key: secret_placeholder(key) for key in SECRET_KEYS}


def render_placeholders() -> dict[str, str]:
    """Return placeholders for every key a service may render from: config secrets, certificates and credentials.

    Unlike `placeholder_secrets`, the result is no stack config: the generated keys are not config keys.
    """
    from components import credentials, tls

    generated = {key: secret_placeholder(key) for key in (*tls.generated_keys(), *credentials.generated_keys())}
    return {**placeholder_secrets(), **generated}
