"""The policy pack in policy/: each rule on a bad and a good resource, then on every resource the program declares."""

import runpy
from pathlib import Path

import pytest
from pulumi_policy import PolicyCustomTimeouts, PolicyResourceOptions, ResourceValidationArgs, ResourceValidationPolicy

from policy import validators
from pulumi_harness import ProgramRun, RecordedResource

POLICY_DIR = Path(__file__).resolve().parent.parent / "policy"
PROD_URN = "urn:pulumi:prod::magflow-monitoring::kubernetes:core/v1:PersistentVolumeClaim::prometheus-data"
DEV_URN = "urn:pulumi:dev::magflow-monitoring::docker:index/volume:Volume::prometheus-data"


def docker_container(**props):
    return {"name": "magflow-dev-grafana", "user": "472", **props}


def pod_template(pod_context=None, container_context=None):
    container = {"name": "app", "image": "example:1"}
    if container_context is not None:
        container["securityContext"] = container_context
    spec = {"containers": [container]}
    if pod_context is not None:
        spec["securityContext"] = pod_context
    return {"spec": {"template": {"spec": spec}}}


VOLUME_OWNER = {
    "user": "0",
    "command": ["chown", "472:472", "/data"],
    "mustRun": False,
    "capabilities": {"drops": ["ALL"], "adds": ["CHOWN"]},
    "securityOpts": ["no-new-privileges:true"],
    "networkMode": "none",
}


# --- stack_of -------------------------------------------------------------------------------------


def test_stack_of_urn():
    assert validators.stack_of(PROD_URN) == "prod"


def test_stack_of_invalid_urn():
    with pytest.raises(ValueError, match="invalid resource URN"):
        validators.stack_of("prometheus-data")


# --- no-unauthenticated-exposure -----------------------------------------------------------------


def test_exposure_docker_loopback_accepted():
    props = docker_container(ports=[{"internal": 3000, "external": 3000, "ip": "127.0.0.1"}])
    assert validators.exposure_violations(validators.DOCKER_CONTAINER, props) == []


def test_exposure_docker_ipv6_loopback_accepted():
    props = docker_container(ports=[{"internal": 3000, "external": 3000, "ip": "::1"}])
    assert validators.exposure_violations(validators.DOCKER_CONTAINER, props) == []


@pytest.mark.parametrize("port", [{"internal": 3000, "external": 3000, "ip": "0.0.0.0"}, {"internal": 3000}, {"internal": 3000, "ip": "10.0.0.5"}])
def test_exposure_docker_public_ip_rejected(port):
    violations = validators.exposure_violations(validators.DOCKER_CONTAINER, docker_container(ports=[port]))
    assert len(violations) == 1
    assert "127.0.0.1" in violations[0]


def test_exposure_docker_host_network_rejected():
    violations = validators.exposure_violations(validators.DOCKER_CONTAINER, docker_container(networkMode="host"))
    assert len(violations) == 1


def test_exposure_service_cluster_ip_accepted():
    assert validators.exposure_violations(validators.SERVICE, {"spec": {"ports": [{"port": 80}]}}) == []


@pytest.mark.parametrize("service_type", ["LoadBalancer", "NodePort"])
def test_exposure_service_type_rejected(service_type):
    violations = validators.exposure_violations(validators.SERVICE, {"spec": {"type": service_type}})
    assert len(violations) == 1
    assert service_type in violations[0]


def test_exposure_service_external_ips_rejected():
    violations = validators.exposure_violations(validators.SERVICE, {"spec": {"externalIPs": ["203.0.113.7"]}})
    assert len(violations) == 1
    assert "203.0.113.7" in violations[0]


def test_exposure_pod_host_network_rejected():
    props = pod_template()
    props["spec"]["template"]["spec"]["hostNetwork"] = True
    assert len(validators.exposure_violations("kubernetes:apps/v1:Deployment", props)) == 1


def test_exposure_host_port_rejected():
    props = pod_template()
    props["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": 3000.0, "hostPort": 3000.0}]
    violations = validators.exposure_violations("kubernetes:apps/v1:Deployment", props)
    assert len(violations) == 1
    assert "hostPort 3000" in violations[0]


def test_exposure_container_port_accepted():
    props = pod_template()
    props["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": 3000, "name": "http"}]
    assert validators.exposure_violations("kubernetes:apps/v1:Deployment", props) == []


def test_exposure_ingress_without_tls_rejected():
    props = {"spec": {"rules": [{"host": "grafana.example.com"}]}}
    violations = validators.exposure_violations(validators.INGRESS, props)
    assert len(violations) == 1
    assert "grafana.example.com" in violations[0]


def test_exposure_ingress_with_tls_accepted():
    props = {"spec": {"rules": [{"host": "grafana.example.com"}], "tls": [{"hosts": ["grafana.example.com"], "secretName": "grafana-tls"}]}}
    assert validators.exposure_violations(validators.INGRESS, props) == []


def test_exposure_ingress_tls_missing_host_rejected():
    props = {"spec": {"rules": [{"host": "grafana.example.com"}], "tls": [{"hosts": ["other.example.com"], "secretName": "other-tls"}]}}
    violations = validators.exposure_violations(validators.INGRESS, props)
    assert len(violations) == 1
    assert "grafana.example.com" in violations[0]


def test_exposure_other_types_ignored():
    assert validators.exposure_violations(validators.PERSISTENT_VOLUME_CLAIM, {"spec": {"type": "NodePort"}}) == []


# --- no-root-containers ---------------------------------------------------------------------------


def test_root_docker_numeric_user_accepted():
    assert validators.root_violations(validators.DOCKER_CONTAINER, "grafana", docker_container()) == []


@pytest.mark.parametrize("user", [None, "", "0", "root", "0:0", "root:root"])
def test_root_docker_root_user_rejected(user):
    props = docker_container(user=user)
    assert len(validators.root_violations(validators.DOCKER_CONTAINER, "grafana", props)) == 1


def test_root_volume_owner_exempt():
    assert validators.root_violations(validators.DOCKER_CONTAINER, "grafana-volume-owner", VOLUME_OWNER) == []


@pytest.mark.parametrize(
    "change",
    [
        {"capabilities": {"drops": ["ALL"], "adds": ["CHOWN", "DAC_OVERRIDE"]}},
        {"capabilities": {"adds": ["CHOWN"]}},
        {"command": ["sh", "-c", "chown 472 /data"]},
        {"mustRun": True},
        {"securityOpts": []},
        {"networkMode": "bridge"},
        {"ports": [{"internal": 80, "ip": "127.0.0.1"}]},
    ],
    ids=["extra-capability", "no-drop", "shell", "restarts", "privilege-escalation", "network", "port"],
)
def test_root_volume_owner_exemption_narrow(change):
    props = {**VOLUME_OWNER, **change}
    assert len(validators.root_violations(validators.DOCKER_CONTAINER, "grafana-volume-owner", props)) == 1


def test_root_volume_owner_settings_other_name_rejected():
    assert len(validators.root_violations(validators.DOCKER_CONTAINER, "grafana", VOLUME_OWNER)) == 1


def test_root_pod_context_non_root_accepted():
    props = pod_template(pod_context={"runAsNonRoot": True, "runAsUser": 472})
    assert validators.root_violations("kubernetes:apps/v1:Deployment", "grafana", props) == []


def test_root_container_context_non_root_accepted():
    props = pod_template(container_context={"runAsNonRoot": True})
    assert validators.root_violations("kubernetes:apps/v1:StatefulSet", "grafana", props) == []


def test_root_pod_without_run_as_non_root_rejected():
    props = pod_template(pod_context={"runAsUser": 472})
    violations = validators.root_violations("kubernetes:apps/v1:Deployment", "grafana", props)
    assert len(violations) == 1
    assert "runAsNonRoot" in violations[0]


def test_root_container_overrides_pod_rejected():
    props = pod_template(pod_context={"runAsNonRoot": True}, container_context={"runAsNonRoot": False})
    assert len(validators.root_violations("kubernetes:apps/v1:Deployment", "grafana", props)) == 1


def test_root_run_as_user_zero_rejected():
    props = pod_template(pod_context={"runAsNonRoot": True}, container_context={"runAsUser": 0.0})
    violations = validators.root_violations("kubernetes:apps/v1:Deployment", "grafana", props)
    assert len(violations) == 1
    assert "runAsUser 0" in violations[0]


def test_root_bare_pod_rejected():
    props = {"spec": {"containers": [{"name": "app"}]}}
    assert len(validators.root_violations(validators.POD, "debug", props)) == 1


def test_root_cron_job_rejected():
    props = {"spec": {"jobTemplate": pod_template()}}
    assert len(validators.root_violations(validators.CRON_JOB, "backup", props)) == 1


def test_root_init_container_rejected():
    props = pod_template(pod_context={"runAsUser": 472}, container_context={"runAsNonRoot": True})
    props["spec"]["template"]["spec"]["initContainers"] = [{"name": "init"}]
    violations = validators.root_violations("kubernetes:apps/v1:Deployment", "grafana", props)
    assert len(violations) == 1
    assert "'init'" in violations[0]


# --- protected-volumes-in-production ------------------------------------------------------------


def test_volume_unprotected_prod_rejected():
    violations = validators.volume_protection_violations(validators.PERSISTENT_VOLUME_CLAIM, PROD_URN, protect=False)
    assert len(violations) == 1
    assert "'prod'" in violations[0]


def test_volume_protected_prod_accepted():
    assert validators.volume_protection_violations(validators.PERSISTENT_VOLUME_CLAIM, PROD_URN, protect=True) == []


def test_volume_unprotected_dev_accepted():
    assert validators.volume_protection_violations(validators.DOCKER_VOLUME, DEV_URN, protect=False) == []


def test_volume_configured_production_stack_rejected():
    violations = validators.volume_protection_violations(validators.DOCKER_VOLUME, DEV_URN, protect=False, production_stacks=["dev"])
    assert len(violations) == 1


def test_volume_rule_ignores_other_types():
    assert validators.volume_protection_violations(validators.SERVICE, PROD_URN, protect=False) == []


# --- The pack module -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pack() -> dict:
    """Return the globals of policy/__main__.py, loaded the way the CLI loads it but without serving."""
    return runpy.run_path(str(POLICY_DIR), run_name="policy_pack_under_test")


def policy_args(resource: RecordedResource, config=None) -> ResourceValidationArgs:
    options = PolicyResourceOptions(
        protect=resource.protect,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
    )
    return ResourceValidationArgs(resource.type, resource.inputs, resource.urn, resource.name, options, None, config)


def run_policies(policies: list[ResourceValidationPolicy], run: ProgramRun) -> dict[str, list[tuple[str, str]]]:
    """Return, by policy name, the (resource name, message) of every violation in a program run."""
    found: dict[str, list[tuple[str, str]]] = {policy.name: [] for policy in policies}
    for resource in run.resources:
        for policy in policies:
            policy.validate(
                policy_args(resource), lambda message, urn=None, policy=policy, resource=resource: found[policy.name].append((resource.name, message))
            )
    return found


def test_pack_policies_names(pack):
    names = [policy.name for policy in pack["POLICIES"]]
    assert names == ["no-unauthenticated-exposure", "no-root-containers", "protected-volumes-in-production"]


def test_pack_policies_mandatory(pack):
    levels = {policy.name: policy.enforcement_level.value for policy in pack["POLICIES"]}
    assert set(levels.values()) == {"mandatory"}


def test_pack_file_runtime():
    text = (POLICY_DIR / "PulumiPolicy.yaml").read_text()
    assert "name: python" in text


# --- The committed stacks ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dev_violations(pack, dev_run) -> dict[str, list[tuple[str, str]]]:
    assert dev_run.resources
    return run_policies(pack["POLICIES"], dev_run)


@pytest.fixture(scope="module")
def prod_violations(pack, prod_run) -> dict[str, list[tuple[str, str]]]:
    assert prod_run.resources
    return run_policies(pack["POLICIES"], prod_run)


@pytest.mark.parametrize("policy", ["no-unauthenticated-exposure", "no-root-containers", "protected-volumes-in-production"])
def test_dev_stack_complies(dev_violations, policy):
    assert dev_violations[policy] == []


@pytest.mark.parametrize("policy", ["no-root-containers", "protected-volumes-in-production"])
def test_prod_stack_complies(prod_violations, policy):
    assert prod_violations[policy] == []


def test_prod_stack_exposure_complies(prod_violations):
    assert prod_violations["no-unauthenticated-exposure"] == []


def test_prod_stack_exposure_only_ingress(prod_violations):
    # Until the Ingress has tls, its four web UIs are the only exposure the rule may find.
    names = {name for name, _ in prod_violations["no-unauthenticated-exposure"]}
    assert names <= {"grafana", "prometheus", "alertmanager", "jaeger"}


def test_dev_volume_owners_checked(dev_run):
    owners = [resource for resource in dev_run.of_type(validators.DOCKER_CONTAINER) if resource.name.endswith("-volume-owner")]
    assert owners
    for owner in owners:
        assert validators.is_volume_owner(owner.name, owner.inputs), owner.name


def test_prod_claims_checked(prod_run):
    claims = prod_run.of_type(validators.PERSISTENT_VOLUME_CLAIM)
    assert claims
    for claim in claims:
        assert validators.stack_of(claim.urn) == "prod"


def test_prod_unprotected_claim_rejected(pack, prod_run):
    # The same claims without `protect` must fail the rule, so the prod check above is not vacuous.
    claims = prod_run.of_type(validators.PERSISTENT_VOLUME_CLAIM)
    assert claims
    unprotected = [RecordedResource(**{**claim.__dict__, "protect": False}) for claim in claims]
    found = run_policies(pack["POLICIES"], ProgramRun(stack="prod", resources=unprotected, outputs={}, secret_outputs=frozenset()))
    assert len(found["protected-volumes-in-production"]) == len(claims)
