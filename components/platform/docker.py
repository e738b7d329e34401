"""Docker platform: one network, named volumes and one container per workload, all on 127.0.0.1."""

import pulumi
import pulumi_docker as docker

from components.settings import StackSettings
from components.workload import Workload, config_checksum

CONFIG_CHECKSUM_LABEL = "io.magflow.config-checksum"
VOLUME_OWNER_IMAGE = "busybox:1.37.0"


class DockerPlatform:
    """Creates the resources of each workload on the local Docker engine, as children of `parent`."""

    def __init__(self, settings: StackSettings, stack: str, parent: pulumi.Resource):
        self.settings = settings
        self.prefix = f"magflow-{stack}"
        self.parent = parent
        self.network = docker.Network(
            "network",
            name=f"{self.prefix}-network",
            driver="bridge",
            opts=pulumi.ResourceOptions(parent=parent),
        )

    def deploy(self, workload: Workload, depends_on: list[pulumi.Resource] | None = None) -> docker.Container:
        opts = pulumi.ResourceOptions(parent=self.parent)

        image = docker.RemoteImage(workload.name, name=workload.image, keep_locally=True, opts=opts)

        volumes = []
        if workload.data is not None:
            # The volume's inputs never depend on rendered config, so a config change replaces the
            # container but keeps the volume and its data. Production volumes are protected from
            # `pulumi destroy` and from any change that would replace them.
            volume = docker.Volume(
                f"{workload.name}-data",
                name=f"{self.prefix}-{workload.name}-data",
                opts=pulumi.ResourceOptions(parent=self.parent, protect=self.settings.is_production),
            )
            volumes.append(docker.ContainerVolumeArgs(volume_name=volume.name, container_path=workload.data.mount_path))
            depends_on = [*(depends_on or []), self._own_volume(workload, volume)]

        uploads = [
            docker.ContainerUploadArgs(file=f"{workload.config_dir}/{path}", content=content, permissions="0444")
            for path, content in sorted(workload.files.items())
        ]

        # Ports are published on loopback only: nothing in the dev stack is reachable from the network.
        ports = [
            docker.ContainerPortArgs(internal=port.container_port, external=port.host_port, ip="127.0.0.1", protocol=port.protocol.lower())
            for port in workload.ports
            if port.host_port is not None
        ]

        healthcheck = None
        if workload.check is not None and workload.check.docker_command is not None:
            healthcheck = docker.ContainerHealthcheckArgs(
                tests=["CMD", *workload.check.docker_command],
                interval="10s",
                timeout="5s",
                retries=5,
                start_period="30s",
            )

        memory_mb = None
        if workload.resources is not None:
            memory_mb = _memory_in_mebibytes(workload.resources.memory_limit)

        return docker.Container(
            workload.name,
            name=f"{self.prefix}-{workload.name}",
            image=image.image_id,
            command=workload.args or None,
            envs=[f"{key}={value}" for key, value in sorted(workload.env.items())] or None,
            user=str(workload.user),
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=self.network.name, aliases=[workload.name])],
            ports=ports,
            volumes=volumes,
            uploads=uploads,
            hosts=[docker.ContainerHostArgs(host=host, ip=ip) for host, ip in sorted(workload.extra_hosts.items())] or None,
            labels=[docker.ContainerLabelArgs(label=CONFIG_CHECKSUM_LABEL, value=config_checksum(workload))],
            healthcheck=healthcheck,
            memory=memory_mb,
            # NOTE: the root filesystem stays writable on Docker. pulumi-docker 5.2 copies `uploads`
            # into the created container by extracting a tar at "/", and Docker rejects any copy
            # outside a volume when the root filesystem is read-only ("container rootfs is marked
            # read-only"). Kubernetes mounts the config instead and sets readOnlyRootFilesystem.
            read_only=False,
            tmpfs={path: "rw,noexec,nosuid,nodev" for path in workload.tmp_dirs} or None,
            # Every port is above 1024 and every file a workload writes belongs to its own user, so
            # only `workload.capabilities` (an image's file capability) is added back. Docker's
            # default seccomp profile applies as well.
            capabilities=docker.ContainerCapabilitiesArgs(drops=["ALL"], adds=list(workload.capabilities) or None),
            security_opts=["no-new-privileges:true"],
            restart="unless-stopped",
            # With a health check, `pulumi up` waits until the container is healthy, so the next
            # resources (such as Grafana's preferences) find a working service.
            wait=healthcheck is not None,
            wait_timeout=120,
            opts=pulumi.ResourceOptions(parent=self.parent, depends_on=depends_on or []),
        )

    def _own_volume(self, workload: Workload, volume: docker.Volume) -> docker.Container:
        """Give the workload's user ownership of its new volume, with a one-shot container.

        Docker creates a named volume owned by root unless the image already has the mount path,
        and some images (Jaeger's) do not, so their non-root user could not write to it.
        """
        assert workload.data is not None
        image = docker.RemoteImage(
            f"{workload.name}-volume-owner", name=VOLUME_OWNER_IMAGE, keep_locally=True, opts=pulumi.ResourceOptions(parent=self.parent)
        )
        return docker.Container(
            f"{workload.name}-volume-owner",
            name=f"{self.prefix}-{workload.name}-volume-owner",
            image=image.image_id,
            # The top directory only: the service creates everything below it as its own user.
            # Root without CAP_DAC_READ_SEARCH could not descend into the service's 0700
            # directories, so `chown -R` would fail on a volume that already contains data.
            command=["chown", f"{workload.user}:{workload.user}", "/data"],
            volumes=[docker.ContainerVolumeArgs(volume_name=volume.name, container_path="/data")],
            # Runs once and exits; attach makes `pulumi up` wait for it before starting the service.
            must_run=False,
            attach=True,
            # Root by design, because only root can give away a directory, with CAP_CHOWN only.
            # The policy pack exempts this container by these exact settings.
            user="0",
            capabilities=docker.ContainerCapabilitiesArgs(adds=["CHOWN"], drops=["ALL"]),
            security_opts=["no-new-privileges:true"],
            network_mode="none",
            opts=pulumi.ResourceOptions(parent=self.parent),
        )

    def url(self, workload: Workload, port_name: str) -> str:
        """Return the loopback URL of a published port; every published web port serves HTTPS."""
        port = next(port for port in workload.ports if port.name == port_name)
        return f"https://127.0.0.1:{port.host_port}"


def _memory_in_mebibytes(quantity: str) -> int:
    units = {"Mi": 1, "Gi": 1024}
    return int(quantity[:-2]) * units[quantity[-2:]]
