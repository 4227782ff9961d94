"""The server half of ``aws_iid``: verify the instance identity document, look the instance up
in EC2 and name the agent.

In SPIRE's order: the document's signature must verify with a configured AWS certificate for
its region; EC2 must know the instance, pending or running, in the document's account and
region (DescribeInstances, with ``assume_role`` in that account) and, beyond SPIRE, report that
account as its owner; unless ``skip_block_device`` is set or the account is on
``account_ids_for_local_validation``, its root volume must have been attached within a minute
of its first network interface (a volume moved from another instance is refused); the agent
ID comes from ``agent_path_template``. Selectors come from the document and from EC2: tags,
security groups and, unless ``disable_instance_profile_selectors``, the roles of the
instance profile (IAM GetInstanceProfile). As in SPIRE, a node attests once (``can_reattest``
is false): the host refuses a second attestation of the same agent ID, so a document read
from the node by anyone else is of no use once the agent has attested.
"""

from __future__ import annotations

__all__ = ["DEFAULT_AGENT_PATH_TEMPLATE", "ServerAwsIidAttestor", "ServerAwsIidConfig"]

import asyncio
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pyspire_nodeattestor_aws_iid.ec2 import AwsSession, AwsSettings, Ec2Instance
from pyspire_nodeattestor_aws_iid.identity import (
    TEMPLATE_FIELDS,
    AttestationData,
    InstanceIdentityDocument,
)
from pyspire_nodeattestor_aws_iid.signature import AwsCertificates, verify_document
from pyspire_sdk.agent_path import AgentPathTemplate
from pyspire_sdk.aws import key_pair_issues
from pyspire_sdk.config import setting
from pyspire_sdk.errors import (
    ConfigIssue,
    InvalidArgumentError,
    PermissionDeniedError,
    PluginError,
)
from pyspire_sdk.model import AttestationResult
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.node_attestor import Challenger

DEFAULT_AGENT_PATH_TEMPLATE = "/{{ .PluginName }}/{{ .AccountID }}/{{ .Region }}/{{ .InstanceID }}"
MAX_SECONDS_BETWEEN_DEVICE_ATTACHMENTS = 60
_PROFILE_RESOURCE = re.compile(r"instance-profile[/:](.+)")


@dataclass(frozen=True, kw_only=True)
class ServerAwsIidConfig:
    """The server half's settings (SPIRE's keys, and where AWS's certificates are)."""

    certificate_path: Path | None = setting(
        None,
        description="PEM file of the AWS public certificates that verify instance identity "
        "signatures (the RSA-2048 one of `rsa2048`, and the RSA one of `signature`), for "
        "regions without an entry in `region_certificate_paths`",
    )
    region_certificate_paths: Mapping[str, Path] = setting(
        default_factory=dict,
        description="PEM file of AWS's public certificates per region, e.g. "
        '`{ "us-west-2" = "/etc/aws/us-west-2.pem" }`',
    )
    access_key_id: str = setting(
        "",
        description="AWS access key ID; empty: AWS_ACCESS_KEY_ID, else the SDK's default "
        "credential chain",
    )
    secret_access_key: str = setting(
        "",
        description="AWS secret access key; empty: AWS_SECRET_ACCESS_KEY, else the SDK's "
        "default credential chain",
        secret=True,
    )
    assume_role: str = setting(
        "",
        description="role assumed in the node's account before the AWS calls, "
        "`arn:<partition>:iam::<account>:role/<assume_role>`; empty: none",
    )
    partition: Literal["aws", "aws-cn", "aws-us-gov"] = setting(
        "aws", description="the AWS partition of the role's ARN"
    )
    skip_block_device: bool = setting(
        False,
        description="skip the check that the root volume was attached with the instance's "
        "first network interface (not moved from another instance)",
    )
    account_ids_for_local_validation: tuple[str, ...] = setting(
        (), description="accounts whose instances skip that block device check"
    )
    disable_instance_profile_selectors: bool = setting(
        False,
        description="make no IAM call and no `iamrole` selectors (for servers that cannot "
        "reach iam.amazonaws.com)",
    )
    agent_path_template: str = setting(
        DEFAULT_AGENT_PATH_TEMPLATE,
        description="the agent ID's path after /spire/agent, with fields {{ .PluginName }}, "
        "{{ .AccountID }}, {{ .Region }}, {{ .InstanceID }}, {{ .TrustDomain }} and "
        '{{ .Tags.<key> }} or {{ index .Tags "<key>" }}',
    )

    def validate(self) -> Iterable[ConfigIssue]:
        """Rules across keys: some certificate, both halves of a key pair, a template that
        parses."""
        if self.certificate_path is None and not self.region_certificate_paths:
            yield ConfigIssue(
                "certificate_path",
                "AWS's public certificates are required: set certificate_path or "
                "region_certificate_paths",
            )
        yield from key_pair_issues(self.access_key_id, self.secret_access_key)
        try:
            AgentPathTemplate.parse(self.agent_path_template, TEMPLATE_FIELDS)
        except InvalidArgumentError as error:
            yield ConfigIssue("agent_path_template", str(error))


def check_block_device(instance: Ec2Instance) -> None:
    """SPIRE's anti-tampering check: an EBS root volume attached more than a minute apart from
    network interface 0 was moved from elsewhere; :class:`PermissionDeniedError` then."""
    first = [when for index, when in instance.network_interfaces if index == 0]
    if not first:
        raise PermissionDeniedError(
            "the EC2 instance network interface with device index 0 is inaccessible"
        )
    if instance.root_device_type == "instance-store":
        return
    roots = [when for name, when in instance.block_devices if name == instance.root_device_name]
    if not roots:
        raise PermissionDeniedError(
            "failed to locate the root device block mapping with name "
            f'"{instance.root_device_name}"'
        )
    if first[0] is None or roots[0] is None:
        raise PermissionDeniedError("EC2 reports no attach time for the root device or interface")
    disparity = abs(int((first[0] - roots[0]).total_seconds()))
    if disparity > MAX_SECONDS_BETWEEN_DEVICE_ATTACHMENTS:
        raise PermissionDeniedError(
            "failed checking the disparity device attach times, root BlockDeviceMapping and "
            f"NetworkInterface[0] attach times differ by {disparity} seconds"
        )


def profile_name(arn: str) -> str:
    """The instance profile's name in its ARN (the last segment of its path)."""
    parts = arn.split(":", 5)
    match = _PROFILE_RESOURCE.fullmatch(parts[5]) if len(parts) == 6 else None
    if parts[0] != "arn" or match is None:
        raise PermissionDeniedError(f'"{arn}" is not the ARN of an instance profile')
    return match.group(1).split("/")[-1]


@dataclass(frozen=True)
class _Attested:
    """What a verified node is: its document, its instance in EC2, its profile's roles."""

    document: InstanceIdentityDocument
    instance: Ec2Instance
    roles: tuple[str, ...] = ()


class ServerAwsIidAttestor:
    """Verifies instance identity documents against AWS's certificates and EC2."""

    def __init__(self) -> None:
        self._config = ServerAwsIidConfig()
        self._host: HostServices | None = None
        self._certificates = AwsCertificates()
        self._aws: AwsSession | None = None
        self._template: AgentPathTemplate | None = None

    async def configure(self, config: ServerAwsIidConfig, host: HostServices) -> None:
        """Load the certificates (a file that cannot be used fails here) and prepare the AWS
        clients, which are made at the first attestation of each account and region."""
        self._template = AgentPathTemplate.parse(config.agent_path_template, TEMPLATE_FIELDS)
        self._certificates = await asyncio.to_thread(
            AwsCertificates.load, config.certificate_path, config.region_certificate_paths
        )
        if self._aws is not None:
            await self._aws.close()
        self._aws = AwsSession(
            AwsSettings(
                access_key_id=config.access_key_id,
                secret_access_key=config.secret_access_key,
                assume_role=config.assume_role,
                partition=config.partition,
            ),
            host.clock,
        )
        self._config = config
        self._host = host

    async def close(self) -> None:
        """Close the AWS clients."""
        if self._aws is not None:
            await self._aws.close()

    async def attest(self, payload: bytes, challenge: Challenger) -> AttestationResult:
        """Verify the document in ``payload`` and the instance; who the agent is."""
        if self._host is None or self._aws is None or self._template is None:
            raise PluginError("aws_iid: used before configure")
        attested = await self._verify(payload, self._aws)
        document, instance = attested.document, attested.instance
        values = document.template_values(self._host.trust_domain.name, dict(instance.tags))
        try:
            agent = self._template.agent_id(self._host.trust_domain, values)
        except InvalidArgumentError as error:
            raise PermissionDeniedError(f"failed to create spiffe ID: {error}") from None
        return AttestationResult(
            agent_id=agent, selector_values=self._selectors(attested), can_reattest=False
        )

    async def _verify(self, payload: bytes, aws: AwsSession) -> _Attested:
        config = self._config
        document = verify_document(AttestationData.from_payload(payload), self._certificates)
        instance = await aws.instance(document.account_id, document.region, document.instance_id)
        if instance.owner_id != document.account_id:
            raise PermissionDeniedError(
                f'instance "{document.instance_id}" belongs to account "{instance.owner_id}", '
                f'not to the document\'s account "{document.account_id}"'
            )
        local = document.account_id in config.account_ids_for_local_validation
        if not (config.skip_block_device or local):
            check_block_device(instance)
        roles: tuple[str, ...] = ()
        if instance.instance_profile_arn and not config.disable_instance_profile_selectors:
            roles = await aws.instance_profile_roles(
                document.account_id, document.region, profile_name(instance.instance_profile_arn)
            )
        return _Attested(document, instance, roles)

    @staticmethod
    def _selectors(attested: _Attested) -> tuple[str, ...]:
        """SPIRE's selector values, sorted and without repeats."""
        document, instance = attested.document, attested.instance
        values = {f"tag:{key}:{value}" for key, value in instance.tags}
        for group_id, group_name in instance.security_groups:
            values |= {f"sg:id:{group_id}", f"sg:name:{group_name}"}
        values |= {f"iamrole:{role}" for role in attested.roles}
        values |= {
            f"account_id:{document.account_id}",
            f"image:id:{document.image_id}",
            f"instance:id:{document.instance_id}",
            f"region:{document.region}",
            f"az:{document.availability_zone}",
        }
        return tuple(sorted(values))
