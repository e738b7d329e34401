"""Run `__main__.py` under Pulumi mocks and record every resource and stack output it declares.

The program runs the way the Python language host runs it: `runpy` inside
`pulumi.runtime.run_in_stack`. Its config is built the way the Pulumi CLI builds it. The
defaults declared in Pulumi.yaml come first, then the stack file, then the test secrets, all
as strings in the `magflow-monitoring:` namespace, with lists and numbers JSON-encoded.

Pulumi's `MockMonitor` hands `Mocks.new_resource` inputs with the secret markers folded into
the top-level keys, and it ignores `additionalSecretOutputs`. `RecordingMonitor` therefore
reads each raw `RegisterResourceRequest` itself: it keeps the exact path of every secret
input, the resource options (`protect`, `retainOnDelete`, parent, dependencies) and marks the
outputs listed in `additionalSecretOutputs` secret, as the Pulumi engine does.

Mocked outputs are the inputs plus a few realistic computed values (`MagflowMocks`). Numbers
come back as floats, and outputs that no mock sets are None.
"""

import base64
import hashlib
import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import pulumi
import yaml
from google.protobuf import struct_pb2
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.stack import run_in_stack
from pulumi.runtime.sync_await import _sync_await

from components import credentials, tls
from components.settings import StackSettings, load_settings

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
PROGRAM = REPOSITORY_ROOT / "__main__.py"
PROJECT = "magflow-monitoring"

# Test values of the secret keys. Each is distinctive, so a plain-text leak is easy to find.
TEST_API_METRICS_TOKEN = "test-api-metrics-token-7c1e9b"
TEST_GRAFANA_ADMIN_PASSWORD = "test-grafana-admin-password-51d0"
GENERATED_PASSWORD = "mock-random-password-0a4f2e8d"

STACK_TYPE = "pulumi:pulumi:Stack"

# Keys and list indexes from the top of a resource's inputs down to one value.
InputPath = tuple[str | int, ...]


def stack_config(stack: str, project_defaults: bool = True) -> dict[str, str]:
    """Return the config the Pulumi CLI passes to the program for a committed stack file.

    Values are strings as on the CLI's wire: lists and numbers JSON-encoded. Encrypted
    (`secure:`) values are left out because tests pass secrets themselves.
    """
    config: dict[str, str] = {}

    if project_defaults:
        project = yaml.safe_load((REPOSITORY_ROOT / "Pulumi.yaml").read_text())
        for key, declaration in (project.get("config") or {}).items():
            if "default" in declaration:
                config[f"{PROJECT}:{key}"] = _config_text(declaration["default"])

    document = yaml.safe_load((REPOSITORY_ROOT / f"Pulumi.{stack}.yaml").read_text()) or {}
    for key, value in (document.get("config") or {}).items():
        if isinstance(value, dict) and "secure" in value:
            continue
        config[key] = _config_text(value)
    return config


def _config_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def namespaced(values: Mapping[str, Any]) -> dict[str, str]:
    """Return config values keyed `magflow-monitoring:<key>`, as CLI strings."""
    return {f"{PROJECT}:{key}": _config_text(value) for key, value in values.items()}


def stack_settings(stack: str) -> StackSettings:
    """Return the settings that the program validates for a committed stack file with the test token."""
    values = {key.removeprefix(f"{PROJECT}:"): value for key, value in stack_config(stack).items()}
    return load_settings({**values, "apiMetricsToken": TEST_API_METRICS_TOKEN})


@dataclass(frozen=True)
class RecordedResource:
    """One resource registration, with its inputs as plain values and the paths of its secret inputs."""

    type: str
    name: str
    urn: str
    parent: str
    custom: bool
    inputs: dict[str, Any]
    secret_paths: frozenset[InputPath]
    """Paths (keys and list indexes) of the inputs that were Pulumi secrets."""
    protect: bool
    retain_on_delete: bool
    dependencies: tuple[str, ...]
    provider: str

    def value(self, *path: str | int) -> Any:
        """Return the input at `path`; raise KeyError or IndexError naming the resource when it is missing."""
        value: Any = self.inputs
        for step in path:
            try:
                value = value[step]
            except (KeyError, IndexError, TypeError):
                raise KeyError(f"{self.type} {self.name!r} has no input at {path!r}") from None
        return value

    def is_secret(self, *path: str | int) -> bool:
        """Return whether the input at `path`, or a value that contains it, was a secret."""
        return any(path[: len(secret)] == secret for secret in self.secret_paths)


@dataclass
class ProgramRun:
    """Everything one run of the program declared."""

    stack: str
    resources: list[RecordedResource]
    outputs: dict[str, Any]
    secret_outputs: frozenset[str]
    """Names of the stack outputs that are secret, wholly or in part."""
    registered_outputs: dict[str, tuple[dict[str, Any], frozenset[InputPath]]] = field(default_factory=dict)
    """Outputs that the stack and each component registered, with their secret paths, by URN."""
    error: BaseException | None = None

    def of_type(self, resource_type: str) -> list[RecordedResource]:
        return [resource for resource in self.resources if resource.type == resource_type]

    def named(self, resource_type: str, name: str) -> RecordedResource:
        """Return the one resource of this type and name; fail with the names that do exist."""
        matches = [resource for resource in self.of_type(resource_type) if resource.name == name]
        if len(matches) != 1:
            existing = sorted(resource.name for resource in self.of_type(resource_type))
            raise AssertionError(f"expected one {resource_type} named {name!r}, found {len(matches)}; names: {existing}")
        return matches[0]

    def names(self, resource_type: str) -> set[str]:
        return {resource.name for resource in self.of_type(resource_type)}


def _plain(value: struct_pb2.Value, path: InputPath, secret_paths: set[InputPath]) -> Any:
    """Convert a protobuf value to Python, recording the path of each secret marker."""
    kind = value.WhichOneof("kind")

    if kind == "struct_value":
        fields = value.struct_value.fields
        signature = fields[rpc._special_sig_key].string_value if rpc._special_sig_key in fields else None
        if signature == rpc._special_secret_sig:
            secret_paths.add(path)
            return _plain(fields["value"], path, secret_paths)
        if signature is not None:
            # Assets, archives and resource references: Pulumi's own deserializer handles them.
            return rpc.deserialize_properties(value.struct_value)
        return _plain_struct(value.struct_value, path, secret_paths)

    if kind == "list_value":
        return [_plain(item, (*path, index), secret_paths) for index, item in enumerate(value.list_value.values)]
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        return value.number_value
    if kind == "bool_value":
        return value.bool_value
    return None


def _plain_struct(struct: struct_pb2.Struct, path: InputPath, secret_paths: set[InputPath]) -> dict[str, Any]:
    plain = {}
    for key, item in struct.fields.items():
        converted = _plain(item, (*path, key), secret_paths)
        # Pulumi drops None inputs as well, so a missing key and a None input read the same.
        if converted is not None:
            plain[key] = converted
    return plain


def _mark_secret(struct: struct_pb2.Struct, key: str) -> None:
    original = struct_pb2.Value()
    original.CopyFrom(struct.fields[key])
    wrapper = struct_pb2.Struct()
    wrapper.fields[rpc._special_sig_key].string_value = rpc._special_secret_sig
    wrapper.fields["value"].CopyFrom(original)
    struct.fields[key].struct_value.CopyFrom(wrapper)


def mocked_image_id(resource_name: str) -> str:
    """Return the `imageId` that the mocks give the RemoteImage of this resource name."""
    return "sha256:" + hashlib.sha256(f"docker:index/remoteImage:RemoteImage/{resource_name}".encode()).hexdigest()


def mocked_pem(label: str, resource_name: str) -> str:
    """Return the PEM block that the mocks give a pulumi-tls resource: distinct per resource and label."""
    body = base64.b64encode(hashlib.sha256(f"{label}/{resource_name}".encode()).digest() * 2).decode()
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n"


def mocked_bcrypt_hash(resource_name: str) -> str:
    """Return the `bcryptHash` that the mocks give the RandomPassword of this resource name."""
    digest = hashlib.sha256(f"random:index/randomPassword:RandomPassword/{resource_name}".encode()).hexdigest()
    return f"$2a$10${digest[:53]}"


def mocked_generated_secrets(stack: str) -> dict[str, str]:
    """Return the mocked certificates, keys and generated credentials, by their key in the services' secrets."""
    values = {tls.CA_CERT_KEY: mocked_pem("CERTIFICATE", "tls-ca")}
    for service in tls.SERVED:
        values[tls.cert_key(service)] = mocked_pem("CERTIFICATE", f"tls-{service}")
        values[tls.key_key(service)] = mocked_pem("PRIVATE KEY", f"tls-{service}-key")
    for service in credentials.PROTECTED:
        values[credentials.password_key(service)] = GENERATED_PASSWORD
        values[credentials.hash_key(service)] = mocked_bcrypt_hash(f"{service}-basic-auth-password")
    for service in credentials.PROXY_PROTECTED:
        values[credentials.password_key(service)] = GENERATED_PASSWORD
        values[credentials.hash_key(service)] = mocked_bcrypt_hash(f"{service}-basic-auth-password")
    if stack == "prod":
        values[credentials.OTLP_TOKEN_KEY] = GENERATED_PASSWORD
    return values


class MagflowMocks(pulumi.runtime.Mocks):
    """Return each resource's inputs as its outputs, plus the computed outputs the program reads."""

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str, dict]:
        outputs = dict(args.inputs)
        digest = hashlib.sha256(f"{args.typ}/{args.name}".encode()).hexdigest()

        if args.typ == "docker:index/remoteImage:RemoteImage":
            outputs["imageId"] = mocked_image_id(args.name)
            outputs["repoDigest"] = f"{args.inputs.get('name', args.name)}@sha256:{digest}"
        elif args.typ == "random:index/randomPassword:RandomPassword":
            outputs["result"] = GENERATED_PASSWORD
            outputs["bcryptHash"] = mocked_bcrypt_hash(args.name)
        elif args.typ == "tls:index/privateKey:PrivateKey":
            outputs["privateKeyPem"] = mocked_pem("PRIVATE KEY", args.name)
            outputs["publicKeyPem"] = mocked_pem("PUBLIC KEY", args.name)
        elif args.typ == "tls:index/certRequest:CertRequest":
            outputs["certRequestPem"] = mocked_pem("CERTIFICATE REQUEST", args.name)
        elif args.typ in ("tls:index/selfSignedCert:SelfSignedCert", "tls:index/locallySignedCert:LocallySignedCert"):
            outputs["certPem"] = mocked_pem("CERTIFICATE", args.name)
        elif args.typ.startswith("kubernetes:"):
            # Kubernetes fills in metadata.name from the resource name when the program sets none.
            metadata = dict(outputs.get("metadata") or {})
            metadata.setdefault("name", args.name)
            outputs["metadata"] = metadata

        return f"{args.name}-id", outputs

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict, list | None]:
        return {}, None


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """A mock resource monitor that records each registration as the engine receives it."""

    def __init__(self, mocks: pulumi.runtime.Mocks):
        super().__init__(mocks)
        self.records: list[RecordedResource] = []
        self.registered_outputs: dict[str, tuple[dict[str, Any], frozenset[InputPath]]] = {}

    def RegisterResource(self, request):  # noqa: N802 - gRPC method name
        response = super().RegisterResource(request)
        if request.type == STACK_TYPE:
            return response

        secret_paths: set[InputPath] = set()
        inputs = _plain_struct(request.object, (), secret_paths)
        self.records.append(
            RecordedResource(
                type=request.type,
                name=request.name,
                urn=response.urn,
                parent=request.parent,
                custom=request.custom,
                inputs=inputs,
                secret_paths=frozenset(secret_paths),
                protect=bool(request.protect),
                retain_on_delete=bool(request.retainOnDelete),
                dependencies=tuple(request.dependencies),
                provider=request.provider,
            )
        )

        # The engine marks these outputs secret, such as RandomPassword's result; MockMonitor does not.
        for key in request.additionalSecretOutputs:
            if key in response.object.fields:
                _mark_secret(response.object, key)
        return response

    def RegisterResourceOutputs(self, request):  # noqa: N802 - gRPC method name
        secret_paths: set[InputPath] = set()
        outputs = _plain_struct(request.outputs, (), secret_paths)
        self.registered_outputs[request.urn] = (outputs, frozenset(secret_paths))
        return super().RegisterResourceOutputs(request)


def _configure_mocks(monitor: RecordingMonitor, stack: str) -> None:
    """Install fresh runtime settings, as `set_mocks` does, without its extra root stack.

    `set_mocks` registers and finishes a root stack of its own. The program must get the one
    that `run_in_stack` creates, because otherwise its exports would never be registered.
    """
    features = set(monitor.GetDeploymentInfo(None).supportedFeatures)
    runtime_settings.configure(
        pulumi_mocks.MockSettings(
            monitor=monitor,
            monitor_features=features,
            engine=pulumi_mocks.MockEngine(None),
            project=PROJECT,
            stack=stack,
            dry_run=False,
            organization=None,
            callbacks=None,
        )
    )
    runtime_settings.ROOT.set(None)
    runtime_settings.SETTINGS.outputs.clear()


def run_program(
    stack: str,
    config: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
    plain: Mapping[str, str] | None = None,
    remove: tuple[str, ...] = (),
) -> ProgramRun:
    """Run `__main__.py` for a committed stack file under mocks and return what it declared.

    `config` and `plain` add or replace plain config values, `secrets` adds secret ones, all
    keyed without the namespace; `remove` drops keys. By default `apiMetricsToken` is set to
    `TEST_API_METRICS_TOKEN` as a secret. An exception from the program is stored in `error`
    instead of raised, so a test can check that a failed run declared nothing.
    """
    plain = dict(plain or {})
    # A key given in `plain` is plain text even when it is a secret key, such as apiMetricsToken.
    secrets = {key: value for key, value in {"apiMetricsToken": TEST_API_METRICS_TOKEN, **(secrets or {})}.items() if key not in plain}
    values = stack_config(stack)
    values.update(namespaced({**(config or {}), **plain, **secrets}))
    for key in remove:
        values.pop(f"{PROJECT}:{key}", None)
    secret_keys = [f"{PROJECT}:{key}" for key in secrets if f"{PROJECT}:{key}" in values]

    monitor = RecordingMonitor(MagflowMocks())
    _configure_mocks(monitor, stack)
    set_all_config(values, secret_keys)

    error: BaseException | None = None
    try:
        # run_in_stack waits for every outstanding RPC and output (wait_for_rpcs) before it returns.
        _sync_await(run_in_stack(lambda: runpy.run_path(str(PROGRAM), run_name="__main__")))
    except Exception as exception:  # noqa: BLE001 - stored for the test to inspect
        error = exception

    stack_urn = f"urn:pulumi:{stack}::{PROJECT}::{STACK_TYPE}::{PROJECT}-{stack}"
    outputs, secret_paths = monitor.registered_outputs.get(stack_urn, ({}, frozenset()))
    return ProgramRun(
        stack=stack,
        resources=list(monitor.records),
        outputs=outputs,
        secret_outputs=frozenset(str(path[0]) for path in secret_paths if path),
        registered_outputs=dict(monitor.registered_outputs),
        error=error,
    )


def string_paths(value: Any, path: InputPath = ()) -> Iterator[tuple[InputPath, str]]:
    """Yield the path and text of every string inside nested dicts and lists."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from string_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from string_paths(item, (*path, index))
