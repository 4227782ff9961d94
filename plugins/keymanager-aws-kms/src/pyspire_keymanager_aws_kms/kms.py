"""The KMS calls the key manager makes, through :mod:`pyspire_sdk.aws`, and nothing else.

One client per key manager, made at configure and closed with it. Each call is bounded by
:data:`~pyspire_sdk.aws.CALL_TIMEOUT` and made once (botocore's own retries are off): a failed
signature is retried by whoever asked for it, by the one backoff policy. SDK failures become
:class:`~pyspire_sdk.aws.AwsCallError` (an :class:`UnavailableError`) naming the call; a key
or alias KMS does not know becomes :class:`NotFoundError`. ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_KMS``) points the calls elsewhere, as for every AWS SDK. aiobotocore is
imported when the client is made, so merely registering the plugin does not load it.
"""

from __future__ import annotations

__all__ = ["PENDING_WINDOW_DAYS", "AliasEntry", "KeyDetails", "KmsClient"]

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from pyspire_keymanager_aws_kms.signing import SignRequest
from pyspire_sdk.aws import AwsAccess, AwsClients, aws_call
from pyspire_sdk.errors import AlreadyExistsError, NotFoundError, PyspireError, UnavailableError

PENDING_WINDOW_DAYS = 7
"""Days between scheduling a key's deletion and its deletion (the shortest KMS allows)."""

T = TypeVar("T")

_ERRORS: Mapping[str, type[PyspireError]] = {
    "NotFoundException": NotFoundError,
    "AlreadyExistsException": AlreadyExistsError,
}


@dataclass(frozen=True)
class AliasEntry:
    """One alias as ListAliases tells it; ``last_updated`` is None when KMS gives no date."""

    name: str
    target_key_id: str
    last_updated: datetime | None


@dataclass(frozen=True)
class KeyDetails:
    """What DescribeKey tells of a key that the disposal of stale keys needs."""

    key_id: str
    description: str
    created: datetime | None
    state: str


class KmsClient:
    """A KMS client of one region with the configured (or the default chain's) credentials."""

    def __init__(self, region: str, access_key_id: str, secret_access_key: str) -> None:
        self._access = AwsAccess(
            region=region, access_key_id=access_key_id, secret_access_key=secret_access_key
        )
        self._clients = AwsClients()
        self._client: Any = None

    async def open(self) -> None:
        """Make the client (loads aiobotocore)."""
        self._client = await self._clients.client("kms", self._access)

    async def close(self) -> None:
        """Close the client."""
        self._client = None
        await self._clients.close()

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        if self._client is None:
            raise UnavailableError(f"failed to {what}: the kms client is closed")
        return await aws_call(what, call(), _ERRORS)

    async def create_key(
        self, key_spec: str, description: str, policy: str | None, tags: Mapping[str, str]
    ) -> str:
        """Make a signing key; its key ID."""
        arguments: dict[str, Any] = {
            "KeySpec": key_spec,
            "KeyUsage": "SIGN_VERIFY",
            "Description": description,
            "Tags": [{"TagKey": key, "TagValue": value} for key, value in tags.items()],
        }
        if policy is not None:
            arguments["Policy"] = policy
        answer = await self._call("create key", lambda: self._client.create_key(**arguments))
        return str(answer["KeyMetadata"]["KeyId"])

    async def create_alias(self, alias: str, key_id: str) -> None:
        """Point the new alias ``alias`` at ``key_id``."""
        await self._call(
            "create alias",
            lambda: self._client.create_alias(AliasName=alias, TargetKeyId=key_id),
        )

    async def update_alias(self, alias: str, key_id: str) -> None:
        """Point the existing alias ``alias`` at ``key_id`` (also refreshes its date)."""
        await self._call(
            "update alias",
            lambda: self._client.update_alias(AliasName=alias, TargetKeyId=key_id),
        )

    async def delete_alias(self, alias: str) -> None:
        """Remove the alias ``alias``."""
        await self._call("delete alias", lambda: self._client.delete_alias(AliasName=alias))

    async def _pages(self, what: str, operation: str, items: str) -> AsyncIterator[Any]:
        marker: str | None = None
        while True:
            arguments: dict[str, Any] = {"Limit": 100}
            if marker:
                arguments["Marker"] = marker
            page = await self._call(
                what, functools.partial(getattr(self._client, operation), **arguments)
            )
            for item in page.get(items, []):
                yield item
            marker = page.get("NextMarker")
            if not page.get("Truncated") or not marker:
                return

    async def list_aliases(self, prefix: str) -> list[AliasEntry]:
        """Every alias whose name starts with ``prefix`` and that points at a key."""
        found: list[AliasEntry] = []
        async for item in self._pages("list aliases", "list_aliases", "Aliases"):
            name = str(item.get("AliasName", ""))
            target = item.get("TargetKeyId")
            if name.startswith(prefix) and target:
                updated = item.get("LastUpdatedDate") or item.get("CreationDate")
                found.append(
                    AliasEntry(
                        name, str(target), updated if isinstance(updated, datetime) else None
                    )
                )
        return found

    async def list_key_ids(self) -> list[str]:
        """The IDs of every key of the account in the region."""
        return [
            str(item["KeyId"])
            async for item in self._pages("list keys", "list_keys", "Keys")
            if item.get("KeyId")
        ]

    async def describe_key(self, key_id: str) -> KeyDetails:
        """What KMS tells of ``key_id``."""
        answer = await self._call("describe key", lambda: self._client.describe_key(KeyId=key_id))
        metadata = answer["KeyMetadata"]
        created = metadata.get("CreationDate")
        return KeyDetails(
            key_id=str(metadata["KeyId"]),
            description=str(metadata.get("Description", "")),
            created=created if isinstance(created, datetime) else None,
            state=str(metadata.get("KeyState", "")),
        )

    async def tags(self, key_id: str) -> dict[str, str]:
        """The tags of ``key_id``."""
        answer = await self._call(
            "list resource tags", lambda: self._client.list_resource_tags(KeyId=key_id)
        )
        return {str(tag["TagKey"]): str(tag["TagValue"]) for tag in answer.get("Tags", [])}

    async def get_public_key(self, key_id: str) -> bytes:
        """The SubjectPublicKeyInfo DER of ``key_id``."""
        answer = await self._call(
            "get public key", lambda: self._client.get_public_key(KeyId=key_id)
        )
        return bytes(answer["PublicKey"])

    async def sign(self, key_id: str, request: SignRequest) -> bytes:
        """KMS's signature of ``request``'s message with ``key_id``."""
        answer = await self._call(
            "sign",
            lambda: self._client.sign(
                KeyId=key_id,
                Message=request.message,
                MessageType=request.message_type,
                SigningAlgorithm=request.algorithm,
            ),
        )
        return bytes(answer["Signature"])

    async def schedule_key_deletion(self, key_id: str) -> None:
        """Have KMS delete ``key_id`` after :data:`PENDING_WINDOW_DAYS` days."""
        await self._call(
            "schedule key deletion",
            lambda: self._client.schedule_key_deletion(
                KeyId=key_id, PendingWindowInDays=PENDING_WINDOW_DAYS
            ),
        )
