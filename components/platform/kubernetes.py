"""Kubernetes platform: a namespace, and per workload a Deployment, Service, config, volume and Ingress."""

import pulumi
import pulumi_kubernetes as k8s

from components import network_flows
from components.settings import StackSettings
from components.units import format_kubernetes_quantity
from components.workload import Workload, config_checksum

CONFIG_CHECKSUM_ANNOTATION = "magflow.io/config-checksum"
TMP_DIR_SIZE_LIMIT = "256Mi"


def _namespace_selector(namespace: str) -> k8s.meta.v1.LabelSelectorArgs:
    # Kubernetes 1.22 and later label every namespace with its name.
    return k8s.meta.v1.LabelSelectorArgs(match_labels={"kubernetes.io/metadata.name": namespace})


def _config_key(path: str) -> str:
    # ConfigMap and Secret keys cannot contain "/"; the projected volume maps each key back to its path.
    return path.replace("/", "__")


class KubernetesPlatform:
    """Creates the resources of each workload in the current kubeconfig context, as children of `parent`."""

    def __init__(self, settings: StackSettings, stack: str, parent: pulumi.Resource):
        self.settings = settings
        self.parent = parent
        self.namespace = k8s.core.v1.Namespace(
            "namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=settings.namespace,
                labels={"app.kubernetes.io/part-of": "magflow-monitoring", "magflow.io/stack": stack},
            ),
            # Deleting a namespace deletes every PersistentVolumeClaim in it, regardless of the
            # claims' own options, so the production namespace is protected like its claims.
            opts=pulumi.ResourceOptions(parent=parent, protect=settings.is_production),
        )
        self.namespace_name = self.namespace.metadata.name
        self._deny_by_default()

    def _metadata(self, name: str, workload: Workload) -> k8s.meta.v1.ObjectMetaArgs:
        return k8s.meta.v1.ObjectMetaArgs(
            name=name,
            namespace=self.namespace_name,
            labels=self._labels(workload),
        )

    @staticmethod
    def _labels(workload: Workload) -> dict[str, str]:
        return {"app.kubernetes.io/name": workload.name, "app.kubernetes.io/part-of": "magflow-monitoring"}

    def deploy(self, workload: Workload, depends_on: list[pulumi.Resource] | None = None) -> k8s.apps.v1.Deployment:
        opts = pulumi.ResourceOptions(parent=self.parent)
        labels = self._labels(workload)

        plain_files = {path: content for path, content in workload.files.items() if path not in workload.secret_files}
        secret_files = {path: content for path, content in workload.files.items() if path in workload.secret_files}

        sources = []
        if plain_files:
            config_map = k8s.core.v1.ConfigMap(
                f"{workload.name}-config",
                metadata=self._metadata(f"{workload.name}-config", workload),
                data={_config_key(path): content for path, content in plain_files.items()},
                opts=opts,
            )
            sources.append(
                k8s.core.v1.VolumeProjectionArgs(
                    config_map=k8s.core.v1.ConfigMapProjectionArgs(
                        name=config_map.metadata.name,
                        items=[k8s.core.v1.KeyToPathArgs(key=_config_key(path), path=path) for path in sorted(plain_files)],
                    )
                )
            )
        if secret_files:
            secret = k8s.core.v1.Secret(
                f"{workload.name}-secrets",
                metadata=self._metadata(f"{workload.name}-secrets", workload),
                string_data={_config_key(path): pulumi.Output.secret(content) for path, content in secret_files.items()},
                opts=opts,
            )
            sources.append(
                k8s.core.v1.VolumeProjectionArgs(
                    secret=k8s.core.v1.SecretProjectionArgs(
                        name=secret.metadata.name,
                        items=[k8s.core.v1.KeyToPathArgs(key=_config_key(path), path=path) for path in sorted(secret_files)],
                    )
                )
            )

        volumes = [k8s.core.v1.VolumeArgs(name="config", projected=k8s.core.v1.ProjectedVolumeSourceArgs(sources=sources))]
        mounts = [k8s.core.v1.VolumeMountArgs(name="config", mount_path=workload.config_dir, read_only=True)]

        if workload.data is not None:
            claim = self._claim(workload)
            volumes.append(
                k8s.core.v1.VolumeArgs(
                    name="data",
                    persistent_volume_claim=k8s.core.v1.PersistentVolumeClaimVolumeSourceArgs(claim_name=claim.metadata.name),
                )
            )
            mounts.append(k8s.core.v1.VolumeMountArgs(name="data", mount_path=workload.data.mount_path))

        # The root filesystem is read-only: each scratch directory is an emptyDir, writable
        # through the pod's fsGroup and emptied when the pod is replaced.
        for index, path in enumerate(workload.tmp_dirs):
            volumes.append(
                k8s.core.v1.VolumeArgs(name=f"tmp-{index}", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(size_limit=TMP_DIR_SIZE_LIMIT))
            )
            mounts.append(k8s.core.v1.VolumeMountArgs(name=f"tmp-{index}", mount_path=path))

        probe = None
        if workload.check is not None:
            # A probe cannot send basic-auth credentials without putting them in the pod spec, so
            # an authenticated endpoint gets a TCP check instead.
            http_get = None
            tcp_socket = None
            if workload.check.authenticated:
                tcp_socket = k8s.core.v1.TCPSocketActionArgs(port=workload.check.port)
            else:
                http_get = k8s.core.v1.HTTPGetActionArgs(path=workload.check.path, port=workload.check.port, scheme=workload.check.scheme)
            probe = k8s.core.v1.ProbeArgs(
                http_get=http_get,
                tcp_socket=tcp_socket,
                period_seconds=10,
                timeout_seconds=5,
                failure_threshold=6,
            )

        resources = None
        if workload.resources is not None:
            resources = k8s.core.v1.ResourceRequirementsArgs(
                requests={"cpu": workload.resources.cpu_request, "memory": workload.resources.memory_request},
                limits={"cpu": workload.resources.cpu_limit, "memory": workload.resources.memory_limit},
            )

        container = k8s.core.v1.ContainerArgs(
            name=workload.name,
            image=workload.image,
            args=workload.args or None,
            env=[k8s.core.v1.EnvVarArgs(name=key, value=value) for key, value in sorted(workload.env.items())] or None,
            ports=[
                k8s.core.v1.ContainerPortArgs(name=port.name, container_port=port.container_port, protocol=port.protocol)
                for port in workload.ports
            ],
            volume_mounts=mounts,
            readiness_probe=probe,
            liveness_probe=probe,
            resources=resources,
            # The restricted Pod Security Standard: every port is above 1024, so the only capability
            # added back is one an image's binary carries as a file capability (NET_BIND_SERVICE,
            # which the standard allows).
            security_context=k8s.core.v1.SecurityContextArgs(
                allow_privilege_escalation=False,
                read_only_root_filesystem=workload.read_only_root,
                run_as_non_root=True,
                capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"], add=list(workload.capabilities) or None),
            ),
        )

        deployment = k8s.apps.v1.Deployment(
            workload.name,
            metadata=self._metadata(workload.name, workload),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=1,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
                # A ReadWriteOnce volume can be attached to one pod only: stop the old pod first.
                strategy=k8s.apps.v1.DeploymentStrategyArgs(type="Recreate"),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(
                        labels=labels,
                        # ConfigMaps and Secrets update in place; a new checksum rolls the pod to read them.
                        annotations={CONFIG_CHECKSUM_ANNOTATION: config_checksum(workload)},
                    ),
                    spec=k8s.core.v1.PodSpecArgs(
                        security_context=k8s.core.v1.PodSecurityContextArgs(
                            run_as_user=workload.user,
                            run_as_group=workload.user,
                            run_as_non_root=True,
                            fs_group=workload.user,
                            seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
                        ),
                        # No workload calls the Kubernetes API.
                        automount_service_account_token=False,
                        containers=[container],
                        volumes=volumes,
                    ),
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self.parent, depends_on=depends_on or []),
        )

        service = k8s.core.v1.Service(
            workload.name,
            metadata=self._metadata(workload.name, workload),
            spec=k8s.core.v1.ServiceSpecArgs(
                selector=labels,
                ports=[
                    k8s.core.v1.ServicePortArgs(name=port.name, port=port.container_port, target_port=port.name, protocol=port.protocol)
                    for port in workload.ports
                ],
            ),
            opts=opts,
        )

        ingress_ports = [port for port in workload.ports if port.ingress]
        if ingress_ports:
            self._ingress(workload, service, ingress_ports[0].name)

        self._allow_flows(workload)

        return deployment

    def _deny_by_default(self) -> k8s.networking.v1.NetworkPolicy:
        """Deny every connection to and from the namespace's pods, except DNS lookups."""
        dns_ports = [
            k8s.networking.v1.NetworkPolicyPortArgs(port=network_flows.DNS_PORT, protocol=protocol) for protocol in ("UDP", "TCP")
        ]
        return k8s.networking.v1.NetworkPolicy(
            "default-deny",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="default-deny",
                namespace=self.namespace_name,
                labels={"app.kubernetes.io/part-of": "magflow-monitoring"},
            ),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(),
                policy_types=["Ingress", "Egress"],
                egress=[k8s.networking.v1.NetworkPolicyEgressRuleArgs(ports=dns_ports)],
            ),
            opts=pulumi.ResourceOptions(parent=self.parent),
        )

    def _peer(self, name: str) -> list[k8s.networking.v1.NetworkPolicyPeerArgs] | None:
        """Return the peers of a flow end; None (any address) for the peers outside the cluster."""
        if name in network_flows.EXTERNAL_PEERS:
            return None
        if name == network_flows.INGRESS_CONTROLLER:
            namespace = self.settings.ingress_controller_namespace
            return [k8s.networking.v1.NetworkPolicyPeerArgs(namespace_selector=_namespace_selector(namespace))]
        if name == network_flows.OTLP_CLIENTS:
            # An empty namespace selector selects every namespace.
            selector = k8s.meta.v1.LabelSelectorArgs()
            if self.settings.otlp_client_namespace:
                selector = _namespace_selector(self.settings.otlp_client_namespace)
            return [k8s.networking.v1.NetworkPolicyPeerArgs(namespace_selector=selector)]
        return [k8s.networking.v1.NetworkPolicyPeerArgs(pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels={"app.kubernetes.io/name": name}))]

    def _allow_flows(self, workload: Workload) -> k8s.networking.v1.NetworkPolicy:
        """Allow the flows of `components.network_flows` that start or end at the workload's pod."""

        def ports(flow: network_flows.Flow) -> list[k8s.networking.v1.NetworkPolicyPortArgs]:
            return [k8s.networking.v1.NetworkPolicyPortArgs(port=port, protocol="TCP") for port in flow.ports]

        ingress = [
            k8s.networking.v1.NetworkPolicyIngressRuleArgs(from_=self._peer(flow.source), ports=ports(flow))
            for flow in network_flows.ingress_flows(self.settings, workload.name)
        ]
        egress = [
            k8s.networking.v1.NetworkPolicyEgressRuleArgs(to=self._peer(flow.destination), ports=ports(flow))
            for flow in network_flows.egress_flows(self.settings, workload.name)
        ]
        return k8s.networking.v1.NetworkPolicy(
            workload.name,
            metadata=self._metadata(workload.name, workload),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=self._labels(workload)),
                policy_types=["Ingress", "Egress"],
                ingress=ingress,
                egress=egress,
            ),
            opts=pulumi.ResourceOptions(parent=self.parent),
        )

    def _claim(self, workload: Workload) -> k8s.core.v1.PersistentVolumeClaim:
        assert workload.data is not None
        return k8s.core.v1.PersistentVolumeClaim(
            f"{workload.name}-data",
            metadata=self._metadata(f"{workload.name}-data", workload),
            spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                access_modes=["ReadWriteOnce"],
                storage_class_name=self.settings.storage_class or None,
                resources=k8s.core.v1.VolumeResourceRequirementsArgs(
                    requests={"storage": format_kubernetes_quantity(workload.data.size_bytes)},
                ),
            ),
            # Monitoring data outlives any single deployment: production claims cannot be deleted by
            # `pulumi destroy` or by a replacement, and every claim stays in the cluster when Pulumi deletes it from its state.
            # pulumi-kubernetes 4.x replaces a claim only when accessModes, selector, storageClassName
            # or volumeName change. A larger storage request is an in-place update that expands the
            # volume if its StorageClass sets allowVolumeExpansion.
            opts=pulumi.ResourceOptions(
                parent=self.parent,
                protect=self.settings.is_production,
                retain_on_delete=True,
            ),
        )

    def _ingress(self, workload: Workload, service: k8s.core.v1.Service, port_name: str) -> k8s.networking.v1.Ingress:
        name = workload.ingress_name or workload.name
        host = self.settings.ui_host(name)
        metadata = self._metadata(name, workload)
        metadata.annotations = self._ingress_annotations()
        # With an issuer, cert-manager creates and renews this Secret; otherwise it must exist.
        tls_secret = self.settings.ingress_tls_secret or f"{name}-ingress-tls"
        return k8s.networking.v1.Ingress(
            name,
            metadata=metadata,
            spec=k8s.networking.v1.IngressSpecArgs(
                ingress_class_name=self.settings.ingress_class,
                tls=[k8s.networking.v1.IngressTLSArgs(hosts=[host], secret_name=tls_secret)],
                rules=[
                    k8s.networking.v1.IngressRuleArgs(
                        host=host,
                        http=k8s.networking.v1.HTTPIngressRuleValueArgs(
                            paths=[
                                k8s.networking.v1.HTTPIngressPathArgs(
                                    path="/",
                                    path_type="Prefix",
                                    backend=k8s.networking.v1.IngressBackendArgs(
                                        service=k8s.networking.v1.IngressServiceBackendArgs(
                                            name=service.metadata.name,
                                            port=k8s.networking.v1.ServiceBackendPortArgs(name=port_name),
                                        )
                                    ),
                                )
                            ]
                        ),
                    )
                ],
            ),
            opts=pulumi.ResourceOptions(parent=self.parent),
        )

    def _ingress_annotations(self) -> dict[str, str]:
        """Return the ingress-nginx and cert-manager annotations: HTTPS only, to pods that serve HTTPS."""
        annotations = {
            # Plain HTTP requests get a redirect to HTTPS.
            "nginx.ingress.kubernetes.io/force-ssl-redirect": "true",
            # The pods serve TLS with the stack CA's certificates.
            "nginx.ingress.kubernetes.io/backend-protocol": "HTTPS",
        }
        if self.settings.ingress_tls_issuer and not self.settings.ingress_tls_secret:
            annotations["cert-manager.io/cluster-issuer"] = self.settings.ingress_tls_issuer
        return annotations

    def url(self, workload: Workload, port_name: str) -> str:
        """Return the Ingress URL of a web UI."""
        return f"https://{self.settings.ui_host(workload.ingress_name or workload.name)}"
