"""The AWS calls of the server half: EC2 DescribeInstances, IAM GetInstanceProfile, STS
AssumeRole, through :mod:`pyspire_sdk.aws`.

Clients are made per account and region, as SPIRE's server makes them, and kept
(:class:`~pyspire_sdk.aws.AwsClients`): with ``assume_role`` their credentials come from
assuming ``arn:<partition>:iam::<account>:role/<assume_role>`` and the clients are made again
five minutes before those expire (by the injected clock); without it, from ``access_key_id``
and ``secret_access_key`` or else the SDK's default chain (environment, shared files, the
instance's role). Each call is bounded by 20 s (SPIRE's) and made once: botocore's own
retries are off, since the agent retries the whole attestation by the one backoff policy.
``AWS_ENDPOINT_URL`` (and ``AWS_ENDPOINT_URL_EC2`` and so on) point the calls elsewhere, as
for every AWS SDK. aiobotocore is imported when the first client is made.
"""

from __future__ import annotations

__all__ = ["AwsSession", "AwsSettings", "Ec2Instance"]

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pyspire_sdk.aws import AwsAccess, AwsCallError, AwsClients, aws_call
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import PermissionDeniedError

_NOT_FOUND = ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed")
_STATES = [{"Name": "instance-state-name", "Values": ["pending", "running"]}]


@dataclass(frozen=True)
class AwsSettings:
    """How to reach AWS: static keys (empty: the default chain), a role to assume in the
    node's account (empty: none) and the partition of its ARN."""

    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)
    assume_role: str = ""
    partition: str = "aws"

    def role_arn(self, account_id: str) -> str:
        """The role assumed for ``account_id`` (SPIRE's template)."""
        return f"arn:{self.partition}:iam::{account_id}:role/{self.assume_role}"


def _attach_time(attachment: Any) -> datetime | None:
    value = attachment.get("AttachTime") if isinstance(attachment, Mapping) else None
    return value if isinstance(value, datetime) else None


@dataclass(frozen=True)
class Ec2Instance:
    """What DescribeInstances says of an instance that attestation uses."""

    owner_id: str
    tags: tuple[tuple[str, str], ...] = ()
    security_groups: tuple[tuple[str, str], ...] = ()
    """(id, name) pairs."""
    instance_profile_arn: str = ""
    root_device_type: str = ""
    root_device_name: str = ""
    block_devices: tuple[tuple[str, datetime | None], ...] = ()
    """(device name, EBS attach time) pairs."""
    network_interfaces: tuple[tuple[int, datetime | None], ...] = ()
    """(device index, attach time) pairs."""

    @classmethod
    def from_description(cls, owner_id: str, data: Mapping[str, Any]) -> Ec2Instance:
        """Read one instance of a DescribeInstances answer."""
        profile = data.get("IamInstanceProfile") or {}
        return cls(
            owner_id=owner_id,
            tags=tuple((tag.get("Key", ""), tag.get("Value", "")) for tag in data.get("Tags", [])),
            security_groups=tuple(
                (group.get("GroupId", ""), group.get("GroupName", ""))
                for group in data.get("SecurityGroups", [])
            ),
            instance_profile_arn=profile.get("Arn", ""),
            root_device_type=data.get("RootDeviceType", ""),
            root_device_name=data.get("RootDeviceName", ""),
            block_devices=tuple(
                (device.get("DeviceName", ""), _attach_time(device.get("Ebs")))
                for device in data.get("BlockDeviceMappings", [])
            ),
            network_interfaces=tuple(
                (
                    int((interface.get("Attachment") or {}).get("DeviceIndex", -1)),
                    _attach_time(interface.get("Attachment")),
                )
                for interface in data.get("NetworkInterfaces", [])
            ),
        )


class AwsSession:
    """EC2 and IAM clients per (account, region), made on first use and closed by
    :meth:`close`."""

    def __init__(self, settings: AwsSettings, clock: Clock) -> None:
        self._settings = settings
        self._clients = AwsClients(clock)

    async def close(self) -> None:
        """Close every client."""
        await self._clients.close()

    def access(self, account_id: str, region: str) -> AwsAccess:
        """How the calls for ``account_id``'s ``region`` reach AWS."""
        settings = self._settings
        return AwsAccess(
            region=region,
            access_key_id=settings.access_key_id,
            secret_access_key=settings.secret_access_key,
            assume_role_arn=settings.role_arn(account_id) if settings.assume_role else "",
            session_name="pyspire-aws-iid",
        )

    async def _client(self, service: str, account_id: str, region: str) -> Any:
        """The kept client; a role the node's account does not let the server assume is
        :class:`PermissionDeniedError`."""
        try:
            return await self._clients.client(service, self.access(account_id, region))
        except AwsCallError as error:
            if error.code == "AccessDenied":
                raise PermissionDeniedError(str(error)) from None
            raise

    async def instance(self, account_id: str, region: str, instance_id: str) -> Ec2Instance:
        """The instance, pending or running, as EC2 describes it in ``account_id``'s
        ``region``; :class:`PermissionDeniedError` when EC2 does not know it there."""
        ec2 = await self._client("ec2", account_id, region)
        try:
            answer = await aws_call(
                "describe instance",
                ec2.describe_instances(InstanceIds=[instance_id], Filters=_STATES),
            )
        except AwsCallError as error:
            if error.code in _NOT_FOUND:
                raise PermissionDeniedError(
                    f'instance "{instance_id}" was not found in EC2 (account "{account_id}", '
                    f'region "{region}")'
                ) from None
            raise
        for reservation in answer.get("Reservations", []):
            for data in reservation.get("Instances", []):
                if data.get("InstanceId") == instance_id:
                    return Ec2Instance.from_description(reservation.get("OwnerId", ""), data)
        raise PermissionDeniedError(
            f'instance "{instance_id}" is not pending or running in EC2 (account '
            f'"{account_id}", region "{region}")'
        )

    async def instance_profile_roles(
        self, account_id: str, region: str, profile_name: str
    ) -> tuple[str, ...]:
        """The ARNs of the roles of the instance profile ``profile_name``."""
        iam = await self._client("iam", account_id, region)
        answer = await aws_call(
            "get instance profile", iam.get_instance_profile(InstanceProfileName=profile_name)
        )
        roles = (answer.get("InstanceProfile") or {}).get("Roles", [])
        return tuple(role["Arn"] for role in roles if role.get("Arn"))
