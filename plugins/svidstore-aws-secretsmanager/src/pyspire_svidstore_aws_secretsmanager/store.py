"""The ``aws_secretsmanager`` SVID store: each stored SVID is one secret in AWS Secrets Manager.

SPIRE's calls, in SPIRE's order. A put describes the secret: an unknown one is created
(``CreateSecret`` with the tag ``spire-svid=true``, the KMS key if any, and the value), a known
one must carry that tag, is restored if it was scheduled for deletion, and gets the new value
(``PutSecretValue``, a new version: readers of the secret's current version see the rotation).
A delete describes the secret too: an unknown one is done, a tagged one is scheduled for
deletion with a recovery window of 7 days. A secret without the tag is never touched: it is
not ours. The store never reads a secret's value, so it needs no read permission.

One client per store, made at the first call by :mod:`pyspire_sdk.aws` (aiobotocore is
imported then) and closed by :meth:`close`. Each call is bounded by 20 s and made once
(botocore's own retries are off): the agent retries a failed put or delete by the one backoff
policy. Credentials AWS refuses, or a request it finds malformed, are errors no retry cures
(:data:`~pyspire_sdk.aws.REFUSALS`). ``AWS_ENDPOINT_URL`` points the calls elsewhere, as for
every AWS SDK.
"""

from __future__ import annotations

__all__ = [
    "PLUGIN_NAME",
    "RECOVERY_WINDOW_DAYS",
    "SPIRE_TAG",
    "SecretsManagerStore",
]

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import structlog
from structlog.typing import FilteringBoundLogger

from pyspire_sdk.aws import REFUSALS, AwsAccess, AwsCallError, AwsClients, aws_call
from pyspire_sdk.errors import InvalidArgumentError, PluginError, UnavailableError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.svid_store import StoredSvid
from pyspire_svidstore_aws_secretsmanager.config import SecretsManagerConfig
from pyspire_svidstore_aws_secretsmanager.metadata import SecretOptions
from pyspire_svidstore_aws_secretsmanager.secret import encode_secret

PLUGIN_NAME = "aws_secretsmanager"

SPIRE_TAG = ("spire-svid", "true")
"""The tag that marks a secret as holding an SVID SPIRE (or this store) wrote."""

RECOVERY_WINDOW_DAYS = 7
"""How long a deleted secret can be restored (SPIRE's window)."""

_NOT_FOUND = "ResourceNotFoundException"
_EXISTS = "ResourceExistsException"
T = TypeVar("T")


def _has_spire_tag(description: Mapping[str, Any]) -> bool:
    return any(
        (tag.get("Key"), tag.get("Value")) == SPIRE_TAG for tag in description.get("Tags") or []
    )


class SecretsManagerStore:
    """Writes stored SVIDs to AWS Secrets Manager (see the module documentation)."""

    def __init__(self) -> None:
        self._config: SecretsManagerConfig | None = None
        self._clients = AwsClients()
        self._logger: FilteringBoundLogger = structlog.get_logger().bind(plugin=PLUGIN_NAME)

    async def configure(self, config: SecretsManagerConfig, host: HostServices) -> None:
        """Keep ``config``; AWS is called at the first put or delete."""
        await self.close()
        self._config = config
        self._logger = host.logger
        self._logger.info(
            "aws secrets manager svid store configured",
            region=config.region,
            kms_key_id=config.kms_key_id or "account default",
            credentials="configured keys" if config.access_key_id else "default chain",
        )

    async def close(self) -> None:
        """Close the client; the next call makes a new one."""
        await self._clients.close()

    async def _call(self, what: str, call: Callable[[Any], Awaitable[T]]) -> T:
        """``call`` on the client; an AWS failure becomes the SDK error the agent acts on,
        naming ``what``."""
        config = self._config
        if config is None:
            raise PluginError("aws_secretsmanager svid store is not configured")
        access = AwsAccess(
            region=config.region,
            access_key_id=config.access_key_id,
            secret_access_key=config.secret_access_key,
        )
        client = await self._clients.client("secretsmanager", access)
        return await aws_call(what, call(client), REFUSALS)

    async def _describe(self, secret_id: str) -> dict[str, Any] | None:
        """The secret's description, ``None`` when Secrets Manager does not know it."""
        try:
            answer: dict[str, Any] = await self._call(
                f"describe secret {secret_id!r}",
                lambda client: client.describe_secret(SecretId=secret_id),
            )
        except AwsCallError as error:
            if error.code == _NOT_FOUND:
                return None
            raise
        return answer

    @staticmethod
    def _ours(secret_id: str, description: Mapping[str, Any]) -> str:
        """The secret's ARN; :class:`InvalidArgumentError` when it lacks SPIRE's tag."""
        if not _has_spire_tag(description):
            raise InvalidArgumentError(
                f"secret {secret_id!r} does not contain the 'spire-svid' tag: it is not an svid "
                "secret and is left alone"
            )
        return str(description.get("ARN") or secret_id)

    async def _create(self, options: SecretOptions, value: bytes) -> None:
        if not options.name:
            raise InvalidArgumentError(
                f"failed to create secret {options.arn!r}: metadata secretname:<name> is "
                "required to create a secret"
            )
        assert self._config is not None
        request: dict[str, Any] = {
            "Name": options.name,
            "Tags": [{"Key": SPIRE_TAG[0], "Value": SPIRE_TAG[1]}],
            "SecretBinary": value,
        }
        kms_key_id = options.kms_key_id or self._config.kms_key_id
        if kms_key_id:
            request["KmsKeyId"] = kms_key_id
        answer = await self._call(
            f"create secret {options.name!r}", lambda client: client.create_secret(**request)
        )
        self._logger.debug(
            "secret created",
            arn=answer.get("ARN"),
            name=answer.get("Name"),
            version_id=answer.get("VersionId"),
        )

    async def _update(self, secret_id: str, description: Mapping[str, Any], value: bytes) -> None:
        arn = self._ours(secret_id, description)
        if description.get("DeletedDate") is not None:
            await self._call(
                f"restore secret {secret_id!r}", lambda client: client.restore_secret(SecretId=arn)
            )
            self._logger.debug("secret scheduled for deletion restored", arn=arn)
        answer = await self._call(
            f"put secret value {secret_id!r}",
            lambda client: client.put_secret_value(SecretId=arn, SecretBinary=value),
        )
        self._logger.debug("secret value updated", arn=arn, version_id=answer.get("VersionId"))

    async def put_x509_svid(self, svid: StoredSvid) -> None:
        """Create or update the secret ``svid.metadata`` names with the SVID's document."""
        options = SecretOptions.parse(svid.metadata)
        value = await asyncio.to_thread(encode_secret, svid)
        for _ in range(2):
            description = await self._describe(options.secret_id)
            if description is not None:
                await self._update(options.secret_id, description, value)
                return
            try:
                await self._create(options, value)
            except AwsCallError as error:
                # Created by another writer since it was described: update that one.
                if error.code != _EXISTS:
                    raise
                continue
            return
        raise UnavailableError(f"secret {options.secret_id!r} appeared and vanished while put")

    async def delete_x509_svid(self, metadata: tuple[str, ...]) -> None:
        """Schedule the deletion of the secret ``metadata`` names; one that is unknown or
        already scheduled is done."""
        options = SecretOptions.parse(metadata)
        secret_id = options.secret_id
        description = await self._describe(secret_id)
        if description is None:
            self._logger.warning("secret not found", secret_id=secret_id)
            return
        arn = self._ours(secret_id, description)
        if description.get("DeletedDate") is not None:
            self._logger.debug("secret already scheduled for deletion", arn=arn)
            return
        answer = await self._call(
            f"delete secret {secret_id!r}",
            lambda client: client.delete_secret(
                SecretId=arn, RecoveryWindowInDays=RECOVERY_WINDOW_DAYS
            ),
        )
        self._logger.debug("secret deleted", arn=arn, deletion_date=str(answer.get("DeletionDate")))
