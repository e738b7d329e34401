"""Policy pack of magflow-monitoring, run by `pulumi preview --policy-pack policy` and `pulumi up --policy-pack policy`.

Every rule is mandatory: a violation fails the preview or update. The rules themselves are the
pure functions of `validators.py`.
"""

from typing import Callable

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

import validators


def _report(messages: list[str], report_violation: ReportViolation) -> None:
    for message in messages:
        report_violation(message, None)


def check_exposure(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    _report(validators.exposure_violations(args.resource_type, args.props), report_violation)


def check_root(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    _report(validators.root_violations(args.resource_type, args.name, args.props), report_violation)


def check_volume_protection(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    stacks = args.get_config().get("productionStacks") or list(validators.DEFAULT_PRODUCTION_STACKS)
    _report(validators.volume_protection_violations(args.resource_type, args.urn, args.opts.protect, stacks), report_violation)


def _policy(name: str, description: str, validate: Callable, config_schema: PolicyConfigSchema | None = None) -> ResourceValidationPolicy:
    return ResourceValidationPolicy(
        name=name,
        description=description,
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=config_schema,
    )


POLICIES = [
    _policy(
        "no-unauthenticated-exposure",
        "No port reachable beyond loopback or the cluster without TLS: Docker ports on 127.0.0.1 only, "
        "no LoadBalancer or NodePort Service, every Ingress host under spec.tls.",
        check_exposure,
    ),
    _policy(
        "no-root-containers",
        "Every container runs as a non-root user; only the one-shot Docker volume-owner chown is exempt.",
        check_root,
    ),
    _policy(
        "protected-volumes-in-production",
        "In a production stack, every PersistentVolumeClaim and Docker volume has the protect option.",
        check_volume_protection,
        PolicyConfigSchema(
            properties={
                "productionStacks": {
                    "type": "array",
                    "items": {"type": "string"},
                    "default": list(validators.DEFAULT_PRODUCTION_STACKS),
                    "description": "Names of the production stacks.",
                }
            }
        ),
    ),
]

# The Pulumi CLI runs this directory with runpy under the name __main__. Tests import the module
# under another name to check POLICIES without starting the analyzer's gRPC server.
if __name__ == "__main__":
    PolicyPack(name="magflow-monitoring", policies=POLICIES, enforcement_level=EnforcementLevel.MANDATORY)
