"""Rules of the magflow-monitoring policy pack, as pure functions of one resource's inputs.

Each validator takes a resource's type token and inputs (the `props` that Pulumi passes to a
policy, with camelCase keys). It returns one message per violation, so an empty list means the
resource complies. `__main__.py` wraps them in `ResourceValidationPolicy` objects, and the tests
call them directly. This module imports nothing from the program, because the Pulumi CLI runs
the pack in its own virtualenv with `policy/` as the working directory.
"""

import ipaddress
from typing import Any, Iterable, Mapping

DOCKER_CONTAINER = "docker:index/container:Container"
DOCKER_VOLUME = "docker:index/volume:Volume"
SERVICE = "kubernetes:core/v1:Service"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
PERSISTENT_VOLUME_CLAIM = "kubernetes:core/v1:PersistentVolumeClaim"
POD = "kubernetes:core/v1:Pod"
CRON_JOB = "kubernetes:batch/v1:CronJob"
# Kinds whose pods come from spec.template.
POD_TEMPLATE_KINDS = frozenset(
    {
        "kubernetes:apps/v1:Deployment",
        "kubernetes:apps/v1:StatefulSet",
        "kubernetes:apps/v1:DaemonSet",
        "kubernetes:apps/v1:ReplicaSet",
        "kubernetes:batch/v1:Job",
    }
)

EXPOSED_SERVICE_TYPES = frozenset({"LoadBalancer", "NodePort"})
ROOT_USERS = frozenset({"0", "root"})
DEFAULT_PRODUCTION_STACKS = ("prod",)

# The one root container the program runs on purpose: a one-shot `chown` of a new Docker volume
# (components/platform/docker.py). It is exempt only while it keeps all of these settings.
VOLUME_OWNER_SUFFIX = "-volume-owner"
VOLUME_OWNER_CAPABILITIES = frozenset({"CHOWN"})


def stack_of(urn: str) -> str:
    """Return the stack name of a resource URN (`urn:pulumi:<stack>::<project>::<type>::<name>`)."""
    prefix = "urn:pulumi:"
    if not urn.startswith(prefix) or "::" not in urn:
        raise ValueError(f"invalid resource URN {urn!r}: expected urn:pulumi:<stack>::<project>::<type>::<name>")
    return urn[len(prefix) :].split("::", 1)[0]


def _port_text(value: Any) -> str:
    # Pulumi passes numbers as floats, such as 3000.0.
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- No port exposed without TLS or authentication ---------------------------------------------


def exposure_violations(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """Return a message for each way the resource makes a port reachable beyond its host or cluster.

    Docker: a port published on an address other than loopback (an unset `ip` publishes on
    0.0.0.0), or host networking. Kubernetes: a Service of type LoadBalancer or NodePort or with
    externalIPs, a pod with hostNetwork or a container hostPort, and an Ingress that does not
    terminate TLS for every host it routes.
    """
    if resource_type == DOCKER_CONTAINER:
        return _docker_exposure(props)
    if resource_type == SERVICE:
        return _service_exposure(props)
    if resource_type == INGRESS:
        return _ingress_tls(props)

    pod_spec = _pod_spec(resource_type, props)
    if pod_spec is not None:
        return _pod_exposure(pod_spec)
    return []


def _service_exposure(props: Mapping[str, Any]) -> list[str]:
    spec = props.get("spec") or {}
    violations = []
    service_type = spec.get("type") or "ClusterIP"
    if service_type in EXPOSED_SERVICE_TYPES:
        violations.append(
            f"Service type {service_type} opens a port on every node or a cloud load balancer, without TLS "
            "or authentication: use type ClusterIP and publish web UIs through an Ingress with tls."
        )
    if spec.get("externalIPs"):
        violations.append(
            f"Service externalIPs {', '.join(spec['externalIPs'])} accept traffic from outside the cluster: "
            "remove externalIPs and publish web UIs through an Ingress with tls."
        )
    return violations


def _pod_exposure(pod_spec: Mapping[str, Any]) -> list[str]:
    violations = []
    if pod_spec.get("hostNetwork"):
        violations.append("hostNetwork: true makes every listening port reachable on the node's addresses: remove it.")
    containers = [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]
    for container in containers:
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                violations.append(
                    f"container {container.get('name', '?')!r} maps port {_port_text(port.get('containerPort'))} to hostPort "
                    f"{_port_text(port['hostPort'])} on the node: remove hostPort and use a ClusterIP Service."
                )
    return violations


def _docker_exposure(props: Mapping[str, Any]) -> list[str]:
    violations = []
    if props.get("networkMode") == "host":
        violations.append(
            "networkMode host makes every listening port reachable on the host's addresses: "
            "use a bridge network and publish ports on 127.0.0.1."
        )
    for port in props.get("ports") or []:
        ip = port.get("ip") or "0.0.0.0"
        if not _is_loopback(ip):
            violations.append(
                f"container port {_port_text(port.get('internal'))} is published on {ip}, reachable from the network without TLS "
                "or authentication: set ip to 127.0.0.1."
            )
    return violations


def _ingress_tls(props: Mapping[str, Any]) -> list[str]:
    spec = props.get("spec") or {}
    tls = spec.get("tls") or []
    hosts = sorted({rule.get("host") or "*" for rule in spec.get("rules") or []})
    if not tls:
        return [
            f"Ingress serves {', '.join(hosts) or 'its backend'} over plain HTTP: add spec.tls with a certificate Secret for each host."
        ]

    # A tls entry without hosts applies the Ingress controller's default certificate to every host.
    if any(not entry.get("hosts") for entry in tls):
        return []
    covered = {host for entry in tls for host in entry.get("hosts") or []}
    missing = [host for host in hosts if host not in covered]
    if missing:
        return [f"Ingress has no tls entry for host {', '.join(missing)}: add the host to spec.tls[].hosts."]
    return []


# --- No container running as root ----------------------------------------------------------------


def root_violations(resource_type: str, name: str, props: Mapping[str, Any]) -> list[str]:
    """Return a message for each container of the resource that may run as root.

    Docker: `user` unset (the image's default, often root) or root by name or id, except the
    volume-owner container while it keeps exactly the settings of `is_volume_owner`. Kubernetes:
    a container whose effective securityContext (its own, else the pod's) lacks runAsNonRoot:
    true, or sets runAsUser 0.
    """
    if resource_type == DOCKER_CONTAINER:
        return _docker_root(name, props)

    pod_spec = _pod_spec(resource_type, props)
    if pod_spec is None:
        return []
    return _pod_root(pod_spec)


def is_volume_owner(name: str, props: Mapping[str, Any]) -> bool:
    """Return whether a Docker container is the one-shot volume `chown`, with nothing more than it needs.

    It must be named `<service>-volume-owner`, run `chown` once without restarts, add no
    capability but CHOWN after dropping ALL, forbid privilege escalation, publish no port and
    have no network.
    """
    capabilities = props.get("capabilities") or {}
    command = props.get("command") or []
    return (
        name.endswith(VOLUME_OWNER_SUFFIX)
        and bool(command)
        and command[0] == "chown"
        and props.get("mustRun") is False
        and list(capabilities.get("drops") or []) == ["ALL"]
        and set(capabilities.get("adds") or []) <= VOLUME_OWNER_CAPABILITIES
        and "no-new-privileges:true" in (props.get("securityOpts") or [])
        and not props.get("ports")
        and props.get("networkMode") == "none"
    )


def _docker_root(name: str, props: Mapping[str, Any]) -> list[str]:
    user = str(props.get("user") or "")
    # Docker's user is "name", "uid" or either followed by ":group".
    account = user.split(":", 1)[0]
    if account and account not in ROOT_USERS:
        return []
    if is_volume_owner(name, props):
        return []
    setting = f"user {user!r}" if user else "no user, so it runs as the image's default user, often root,"
    return [f"container {name!r} sets {setting}: set user to a numeric non-root id such as 65534."]


def _pod_spec(resource_type: str, props: Mapping[str, Any]) -> Mapping[str, Any] | None:
    spec = props.get("spec") or {}
    if resource_type == POD:
        return spec
    if resource_type in POD_TEMPLATE_KINDS:
        return (spec.get("template") or {}).get("spec") or {}
    if resource_type == CRON_JOB:
        job_spec = (spec.get("jobTemplate") or {}).get("spec") or {}
        return (job_spec.get("template") or {}).get("spec") or {}
    return None


def _pod_root(pod_spec: Mapping[str, Any]) -> list[str]:
    pod_context = pod_spec.get("securityContext") or {}
    containers = [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]
    violations = []
    for container in containers:
        context = container.get("securityContext") or {}
        name = container.get("name", "?")
        non_root = _effective(context, pod_context, "runAsNonRoot")
        user = _effective(context, pod_context, "runAsUser")
        if non_root is not True:
            violations.append(
                f"container {name!r} does not set runAsNonRoot: true in its or the pod's securityContext, so it may run as root."
            )
        if user is not None and float(user) == 0:
            violations.append(f"container {name!r} sets runAsUser 0 (root): use a non-root id such as 65534.")
    return violations


def _effective(container_context: Mapping[str, Any], pod_context: Mapping[str, Any], key: str) -> Any:
    # A container's securityContext overrides the pod's, field by field.
    if container_context.get(key) is not None:
        return container_context[key]
    return pod_context.get(key)


# --- Stateful volumes protected in production --------------------------------------------------


def volume_protection_violations(
    resource_type: str,
    urn: str,
    protect: bool,
    production_stacks: Iterable[str] = DEFAULT_PRODUCTION_STACKS,
) -> list[str]:
    """Return a message when a production stack declares a volume without the `protect` option.

    The stack comes from the resource's URN, and `production_stacks` names the production stacks
    (policy config `productionStacks`), so the rule does not trust a label that the program sets.
    """
    if resource_type not in (PERSISTENT_VOLUME_CLAIM, DOCKER_VOLUME):
        return []
    stack = stack_of(urn)
    if stack not in set(production_stacks) or protect:
        return []
    return [
        f"stack {stack!r} is a production stack and this volume is not protected, so `pulumi destroy` or a "
        "replacement would delete its data: set protect=True in its resource options."
    ]
