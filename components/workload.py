"""Workload descriptions: the contract between the services, which say what runs, and the platforms.

A service module describes its container as a `Workload`. `components.platform.docker` and
`components.platform.kubernetes` turn the same description into resources.
"""

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import pulumi


@dataclass(frozen=True)
class Port:
    """A container port, and how each platform exposes it."""

    name: str
    container_port: int
    host_port: int | None = None
    """Docker: publish on 127.0.0.1 at this port. None keeps the port inside the Docker network."""
    ingress: bool = False
    """Kubernetes: route `<service>.<ingressDomain>` to this port through the Ingress."""
    protocol: Literal["TCP", "UDP"] = "TCP"


@dataclass(frozen=True)
class HttpCheck:
    """An HTTP endpoint that returns 200 when the container is ready."""

    path: str
    port: int
    docker_command: tuple[str, ...] | None = None
    """Docker HEALTHCHECK command; None where the image has no HTTP client (the collector's)."""
    scheme: Literal["HTTP", "HTTPS"] = "HTTP"
    """Kubernetes probe scheme. The kubelet does not verify the server certificate of an HTTPS probe."""
    authenticated: bool = False
    """The path requires basic auth, so Kubernetes checks that the port accepts TCP connections instead."""


@dataclass(frozen=True)
class DataVolume:
    """Persistent storage that must survive restarts, config changes and replacement."""

    mount_path: str
    size_bytes: int


@dataclass(frozen=True)
class Resources:
    """Kubernetes requests and limits; Docker gets the memory limit only."""

    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str


@dataclass
class Workload:
    """One single-replica container of the stack."""

    name: str
    """Service name: the container name on Docker and the Deployment and Service name on Kubernetes."""
    image: str
    args: list[str]
    ports: list[Port]
    config_dir: str
    """Directory where every file in `files` is mounted, under its relative path."""
    files: dict[str, pulumi.Input[str]]
    """Relative path to content. Secret contents are Pulumi secret outputs."""
    secret_files: frozenset[str] = frozenset()
    """Paths in `files` that hold secrets: a Kubernetes Secret instead of a ConfigMap."""
    env: dict[str, str] = field(default_factory=dict)
    check: HttpCheck | None = None
    data: DataVolume | None = None
    resources: Resources | None = None
    user: int = 65534
    """Numeric user the container runs as; every image used here works as a non-root user."""
    read_only_root: bool = True
    """Mount the image's root filesystem read-only; the config files, data volume and `tmp_dirs` stay usable."""
    tmp_dirs: tuple[str, ...] = ()
    """Writable scratch directories, emptied at every start: a tmpfs on Docker, an emptyDir on Kubernetes."""
    ingress_name: str | None = None
    """Kubernetes: name of the Ingress and first label of its host `<name>.<ingressDomain>`; None uses `name`."""
    capabilities: tuple[str, ...] = ()
    """Linux capabilities added back after dropping all, for images whose binary carries file capabilities."""
    extra_hosts: dict[str, str] = field(default_factory=dict)
    """Docker: host name to address, such as host.docker.internal to host-gateway."""


def config_checksum(workload: Workload) -> pulumi.Output[str]:
    """Return a SHA-256 over every mounted file, so that a changed file rolls the container."""
    paths = sorted(workload.files)
    contents = [pulumi.Output.from_input(workload.files[path]) for path in paths]

    def digest(texts: list[str]) -> str:
        hasher = hashlib.sha256()
        for path, text in zip(paths, texts):
            hasher.update(path.encode() + b"\0" + (text or "").encode() + b"\0")
        return hasher.hexdigest()

    # A hash reveals nothing usable about a secret, and a secret label would hide the rollout reason.
    return pulumi.Output.unsecret(pulumi.Output.all(*contents).apply(digest))
