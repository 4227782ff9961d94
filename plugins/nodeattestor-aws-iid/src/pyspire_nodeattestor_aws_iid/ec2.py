"""The AWS calls of the server half: EC2 DescribeInstances, IAM GetInstanceProfile, STS
AssumeRole, through aiobotocore.

Clients are made per account and region, as SPIRE's server makes them, and kept: with
``assume_role`` their credentials come from assuming
``arn:<partition>:iam::<account>:role/<assume_role>`` and the clients are made again five
minutes before those expire (by the injected clock); without it, from ``access_key_id`` and
``secret_access_key`` or else the SDK's default chain (environment, shared files, the
instance's role). Each call is bounded by 20 s (SPIRE's) and made once: botocore's own
retries are off, since the agent retries the whole attestation by the one backoff policy.
``AWS_ENDPOINT_URL`` (and ``AWS_ENDPOINT_URL_EC2`` and so on) point the calls elsewhere, as
for every AWS SDK. aiobotocore is imported when the first client is made.
"""

from __future__ import annotations

__all__ = ["AwsSession", "AwsSettings", "Ec2Instance"]

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import PermissionDeniedError, UnavailableError

CALL_TIMEOUT = 20.0
_RENEW_BEFORE = timedelta(minutes=5)
_NOT_FOUND = ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed")
_STATES = [{"Name": "instance-state-name", "Values": ["pending", "running"]}]
T = TypeVar("T")


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


@dataclass
class _Clients:
    ec2: Any
    iam: Any
    stack: AsyncExitStack
    expires_at: datetime | None


@functools.cache
def _shared_session() -> Any:
    """One botocore session per process: it caches the service models, which take about a
    second to load (EC2's is large), for every client made later."""
    from aiobotocore.session import get_session

    return get_session()


def _error_code(error: BaseException) -> str:
    response = getattr(error, "response", None)
    details = response.get("Error", {}) if isinstance(response, Mapping) else {}
    return str(details.get("Code", "") or type(error).__name__)


def _reason(error: BaseException) -> str:
    response = getattr(error, "response", None)
    details = response.get("Error", {}) if isinstance(response, Mapping) else {}
    message = details.get("Message", "") if details else str(error)
    return f"{_error_code(error)}: {message}" if message else _error_code(error)


class AwsSession:
    """EC2 and IAM clients per (account, region), made on first use and closed by
    :meth:`close`."""

    def __init__(self, settings: AwsSettings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._clients: dict[tuple[str, str], _Clients] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._session: Any = None
        self._config: Any = None

    async def close(self) -> None:
        """Close every client."""
        clients, self._clients = self._clients, {}
        for entry in clients.values():
            await entry.stack.aclose()

    def _botocore(self) -> tuple[Any, Any]:
        if self._session is None:
            from aiobotocore.config import AioConfig

            self._session = _shared_session()
            self._config = AioConfig(
                connect_timeout=5,
                read_timeout=CALL_TIMEOUT,
                retries={"max_attempts": 1, "mode": "standard"},
            )
        return self._session, self._config

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call`` bounded by :data:`CALL_TIMEOUT`; SDK failures become
        :class:`UnavailableError` naming ``what``."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                return await call()
        except TimeoutError:
            raise UnavailableError(f"failed to {what}: timed out after {CALL_TIMEOUT:g}s") from None
        except (ClientError, BotoCoreError) as error:
            raise UnavailableError(f"failed to {what}: {_reason(error)}") from error

    async def _credentials(self, account_id: str, region: str) -> tuple[dict[str, Any], Any]:
        """Keyword arguments naming the credentials for ``account_id``, and when they expire."""
        settings = self._settings
        static: dict[str, Any] = {}
        if settings.access_key_id:
            static = {
                "aws_access_key_id": settings.access_key_id,
                "aws_secret_access_key": settings.secret_access_key,
            }
        if not settings.assume_role:
            return static, None
        session, config = self._botocore()
        arn = settings.role_arn(account_id)

        async def assume() -> Any:
            async with session.create_client(
                "sts", region_name=region, config=config, **static
            ) as sts:
                return await sts.assume_role(RoleArn=arn, RoleSessionName="pyspire-aws-iid")

        from botocore.exceptions import ClientError

        try:
            answer = await self._call(f"assume role {arn}", assume)
        except UnavailableError as error:
            cause = error.__cause__
            if isinstance(cause, ClientError) and _error_code(cause) == "AccessDenied":
                raise PermissionDeniedError(str(error)) from None
            raise
        issued = answer["Credentials"]
        assumed = {
            "aws_access_key_id": issued["AccessKeyId"],
            "aws_secret_access_key": issued["SecretAccessKey"],
            "aws_session_token": issued["SessionToken"],
        }
        return assumed, issued.get("Expiration")

    async def _clients_for(self, account_id: str, region: str) -> _Clients:
        key = (account_id, region)
        async with self._locks.setdefault(key, asyncio.Lock()):
            entry = self._clients.get(key)
            now = self._clock.now()
            if entry is not None and (
                entry.expires_at is None or now < entry.expires_at - _RENEW_BEFORE
            ):
                return entry
            if entry is not None:
                del self._clients[key]
                await entry.stack.aclose()
            credentials, expires_at = await self._credentials(account_id, region)
            session, config = self._botocore()
            stack = AsyncExitStack()
            try:
                ec2 = await stack.enter_async_context(
                    session.create_client("ec2", region_name=region, config=config, **credentials)
                )
                iam = await stack.enter_async_context(
                    session.create_client("iam", region_name=region, config=config, **credentials)
                )
            except BaseException:
                await stack.aclose()
                raise
            entry = _Clients(ec2=ec2, iam=iam, stack=stack, expires_at=expires_at)
            self._clients[key] = entry
            return entry

    async def instance(self, account_id: str, region: str, instance_id: str) -> Ec2Instance:
        """The instance, pending or running, as EC2 describes it in ``account_id``'s
        ``region``; :class:`PermissionDeniedError` when EC2 does not know it there."""
        clients = await self._clients_for(account_id, region)
        from botocore.exceptions import ClientError

        try:
            answer = await self._call(
                "describe instance",
                lambda: clients.ec2.describe_instances(InstanceIds=[instance_id], Filters=_STATES),
            )
        except UnavailableError as error:
            cause = error.__cause__
            if isinstance(cause, ClientError) and _error_code(cause) in _NOT_FOUND:
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
        clients = await self._clients_for(account_id, region)
        answer = await self._call(
            "get instance profile",
            lambda: clients.iam.get_instance_profile(InstanceProfileName=profile_name),
        )
        roles = (answer.get("InstanceProfile") or {}).get("Roles", [])
        return tuple(role["Arn"] for role in roles if role.get("Arn"))
