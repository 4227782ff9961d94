"""The ``aws_kms`` key manager and its registration.

Every key is a KMS key made for this server and found by its alias (see
:mod:`pyspire_keymanager_aws_kms.aliases`); the private half never leaves KMS, which signs on
request: whole messages of up to 4 KiB, which is what the server signs, and digests (see
:mod:`pyspire_keymanager_aws_kms.signing`). At configure the server's aliases are listed and
each key's public half read, so keys made by an earlier run are used again. Replacing a key
points the alias at a new KMS key; the old key keeps serving the signatures already asked of it
and is scheduled for deletion (KMS's 7-day window) once the last of them is done. Every
signature KMS returns is verified against the key's public half before it is handed out, so a
wrong answer from the service never reaches a certificate.

Upkeep as SPIRE's, driven by the injected clock after each key generation (the server makes
keys at every CA rotation): the server's own aliases are refreshed, stale aliases of other
servers of the trust domain go with their keys, and keys of the trust domain left without an
alias are deleted (see :mod:`pyspire_keymanager_aws_kms.maintenance`).
"""

from __future__ import annotations

__all__ = ["AwsKmsKeyManager", "pyspire_key_managers"]

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog
from structlog.typing import FilteringBoundLogger

from pyspire_keymanager_aws_kms.aliases import (
    KEY_ID_TAG,
    alias_name,
    key_description,
    key_id_from_alias,
    server_prefix,
    trust_domain_prefix,
)
from pyspire_keymanager_aws_kms.config import AwsKmsKeyManagerConfig
from pyspire_keymanager_aws_kms.kms import AliasEntry, KmsClient
from pyspire_keymanager_aws_kms.maintenance import (
    ALIAS_THRESHOLD,
    KEY_THRESHOLD,
    Schedule,
    is_stale,
)
from pyspire_keymanager_aws_kms.server_id import load_or_create_server_id
from pyspire_keymanager_aws_kms.signing import (
    KEY_SPECS,
    SignRequest,
    digest_request,
    message_request,
)
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    PluginError,
    PyspireError,
)
from pyspire_sdk.keys import (
    check_digest,
    key_type_of,
    load_public_key,
    verify_digest_signature,
)
from pyspire_sdk.plugin import HostServices, PluginRegistration, hookimpl
from pyspire_sdk.plugins.key_manager import (
    HashAlgorithm,
    KeyManager,
    KeyType,
    PublicKey,
    validate_key_id,
)


@dataclass
class _Entry:
    """One managed key: its public half, the KMS key behind it, and the signatures under way
    with it (a replaced key is deleted when none are left)."""

    public: PublicKey
    kms_key_id: str
    in_flight: int = 0
    retired: bool = False
    deletion_scheduled: bool = False


def _read_policy(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise PluginError(f"cannot read key policy file {path}: {reason}") from None
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        raise PluginError(
            f"key policy file {path} is not valid JSON: {error.msg} at line {error.lineno}"
        ) from None
    return text


class AwsKmsKeyManager:
    """A key manager whose keys are KMS keys of one region, named per server."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._kms: KmsClient | None = None
        self._logger: FilteringBoundLogger = structlog.get_logger()
        self._clock: Clock | None = None
        self._trust_domain = ""
        self._server_id = ""
        self._policy: str | None = None
        self._schedule: Schedule | None = None
        self._upkeep = asyncio.Lock()

    @property
    def server_id(self) -> str:
        """This server's ID in its aliases; set by ``configure``."""
        if not self._server_id:
            raise PluginError("key manager is not configured")
        return self._server_id

    async def configure(self, config: AwsKmsKeyManagerConfig, host: HostServices) -> None:
        """Find the server ID, read the key policy, reach KMS and load this server's keys."""
        self._logger = host.logger
        self._clock = host.clock
        self._trust_domain = host.trust_domain.name
        if config.key_identifier_value:
            self._server_id = config.key_identifier_value
        else:
            assert config.key_identifier_file is not None  # validate() guarantees one
            path = host.data_dir / config.key_identifier_file
            self._server_id = await asyncio.to_thread(load_or_create_server_id, path)
        if config.key_policy_file is not None:
            policy_path = host.data_dir / config.key_policy_file
            self._policy = await asyncio.to_thread(_read_policy, policy_path)
        self._kms = KmsClient(config.region, config.access_key_id, config.secret_access_key)
        try:
            await self._kms.open()
            await self._load()
        except BaseException:
            await self.close()
            raise
        self._schedule = Schedule.starting(host.clock.now())
        self._logger.info(
            "kms keys loaded",
            region=config.region,
            server_id=self._server_id,
            keys=len(self._entries),
        )

    async def close(self) -> None:
        """Close the KMS client."""
        kms, self._kms = self._kms, None
        if kms is not None:
            await kms.close()

    def _client(self) -> KmsClient:
        if self._kms is None:
            raise PluginError("key manager is not configured")
        return self._kms

    async def _load(self) -> None:
        kms = self._client()
        prefix = server_prefix(self._trust_domain, self._server_id)
        for alias in await kms.list_aliases(prefix):
            key_id = key_id_from_alias(alias.name, prefix)
            if key_id is None:
                key_id = (await kms.tags(alias.target_key_id)).get(KEY_ID_TAG)
            try:
                key_id = validate_key_id(key_id)
            except InvalidArgumentError:
                self._logger.warning("alias names no key ID; ignored", alias_name=alias.name)
                continue
            der = await kms.get_public_key(alias.target_key_id)
            key_type = key_type_of(load_public_key(der))
            public = PublicKey(key_id=key_id, key_type=key_type, der=der)
            self._entries[key_id] = _Entry(public=public, kms_key_id=alias.target_key_id)

    # -- the key manager interface ----------------------------------------------------------

    async def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        """Make a KMS key, point the key ID's alias at it, retire the key it replaces."""
        key_id = validate_key_id(key_id)
        key_type = KeyType.parse(key_type)
        kms = self._client()
        async with self._locks.setdefault(key_id, asyncio.Lock()):
            kms_key_id = await kms.create_key(
                KEY_SPECS[key_type],
                key_description(self._trust_domain),
                self._policy,
                {KEY_ID_TAG: key_id},
            )
            try:
                der = await kms.get_public_key(kms_key_id)
                await self._point_alias(key_id, kms_key_id)
            except BaseException:
                await self._delete_quietly(kms_key_id, "key generation failed")
                raise
            entry = _Entry(PublicKey(key_id, key_type, der), kms_key_id)
            old = self._entries.get(key_id)
            self._entries[key_id] = entry
        self._logger.info(
            "kms key made", key_id=key_id, key_type=key_type.value, kms_key_id=kms_key_id
        )
        if old is not None:
            old.retired = True
            await self._release(old)
        await self._upkeep_if_due()
        return entry.public

    async def _point_alias(self, key_id: str, kms_key_id: str) -> None:
        kms = self._client()
        alias = alias_name(self._trust_domain, self._server_id, key_id)
        if key_id in self._entries:
            await kms.update_alias(alias, kms_key_id)
            return
        try:
            await kms.create_alias(alias, kms_key_id)
        except AlreadyExistsError:
            await kms.update_alias(alias, kms_key_id)

    async def get_public_key(self, key_id: str) -> PublicKey:
        """The public half of the key under ``key_id``, as KMS told it."""
        return self._entry(key_id).public

    async def get_public_keys(self) -> list[PublicKey]:
        """Every key's public half, ordered by key ID."""
        return [self._entries[key_id].public for key_id in sorted(self._entries)]

    def _entry(self, key_id: str) -> _Entry:
        key_id = validate_key_id(key_id)
        entry = self._entries.get(key_id)
        if entry is None:
            raise NotFoundError(f"no key under key_id {key_id!r}")
        return entry

    async def sign_digest(
        self,
        key_id: str,
        digest: bytes,
        hash_algorithm: HashAlgorithm,
        *,
        rsa_pss: bool = False,
    ) -> bytes:
        """KMS's signature of ``digest`` (``MessageType=DIGEST``), verified against the key's
        public half."""
        validate_key_id(key_id)
        hash_algorithm = HashAlgorithm.parse(hash_algorithm)
        data = check_digest(digest, hash_algorithm)
        entry = self._entry(key_id)
        request = digest_request(entry.public.key_type, data, hash_algorithm, rsa_pss=rsa_pss)
        return await self._sign(entry, request, data, hash_algorithm, rsa_pss)

    async def sign_message(
        self, key_id: str, message: bytes, hash_algorithm: HashAlgorithm
    ) -> bytes:
        """KMS's signature of ``message``, sent whole when KMS takes it (see
        :func:`~pyspire_keymanager_aws_kms.signing.message_request`), verified against the
        key's public half."""
        validate_key_id(key_id)
        hash_algorithm = HashAlgorithm.parse(hash_algorithm)
        digest = hash_algorithm.digest(message)
        entry = self._entry(key_id)
        request = message_request(entry.public.key_type, bytes(message), hash_algorithm)
        return await self._sign(entry, request, digest, hash_algorithm, False)

    async def _sign(
        self,
        entry: _Entry,
        request: SignRequest,
        digest: bytes,
        hash_algorithm: HashAlgorithm,
        rsa_pss: bool,
    ) -> bytes:
        """Have KMS sign ``request`` and check the answer against ``digest``, the digest of
        what was asked to be signed."""
        entry.in_flight += 1
        try:
            signature = await self._client().sign(entry.kms_key_id, request)
        finally:
            entry.in_flight -= 1
        if entry.retired:
            await self._release(entry)
        if not verify_digest_signature(
            entry.public, signature, digest, hash_algorithm, rsa_pss=rsa_pss
        ):
            raise PluginError(
                f"kms returned a signature that does not verify with key "
                f"{entry.public.key_id!r} (kms key {entry.kms_key_id}, {request.algorithm}, "
                f"message type {request.message_type})"
            )
        return signature

    # -- retiring and upkeep ----------------------------------------------------------------

    async def _release(self, entry: _Entry) -> None:
        """Schedule a replaced key's deletion once no signature with it is under way."""
        if entry.in_flight or entry.deletion_scheduled:
            return
        entry.deletion_scheduled = True
        await self._delete_quietly(entry.kms_key_id, "key replaced")

    async def _delete_quietly(self, kms_key_id: str, reason: str) -> None:
        """Schedule ``kms_key_id``'s deletion; a failure is logged (the stale-key upkeep
        deletes it later), never raised over the work that asked for it."""
        try:
            await self._client().schedule_key_deletion(kms_key_id)
        except PyspireError as error:
            self._logger.warning(
                "kms key deletion not scheduled", kms_key_id=kms_key_id, error=str(error)
            )
            return
        self._logger.info("kms key deletion scheduled", kms_key_id=kms_key_id, reason=reason)

    async def _upkeep_if_due(self) -> None:
        """Run each upkeep job that is due; failures are logged and retried at the next key."""
        if self._schedule is None or self._clock is None or self._upkeep.locked():
            return
        async with self._upkeep:
            now = self._clock.now()
            try:
                if self._schedule.refresh_due(now):
                    await self._refresh_aliases()
                    self._schedule.refreshed = now
                if self._schedule.dispose_aliases_due(now):
                    await self._dispose_stale_aliases(now)
                    self._schedule.aliases_disposed = now
                if self._schedule.dispose_keys_due(now):
                    await self._dispose_stale_keys(now)
                    self._schedule.keys_disposed = now
            except PyspireError as error:
                self._logger.warning("kms key upkeep failed", error=str(error))

    async def _refresh_aliases(self) -> None:
        """Update each own alias in place, so other servers see it is in use."""
        kms = self._client()
        for key_id, entry in list(self._entries.items()):
            alias = alias_name(self._trust_domain, self._server_id, key_id)
            await kms.update_alias(alias, entry.kms_key_id)

    async def _dispose_stale_aliases(self, now: datetime) -> None:
        """Delete aliases of other servers of the trust domain not updated for two weeks, and
        schedule the deletion of their keys."""
        kms = self._client()
        own = server_prefix(self._trust_domain, self._server_id)
        for alias in await kms.list_aliases(trust_domain_prefix(self._trust_domain)):
            if alias.name.startswith(own):
                continue
            if not is_stale(await self._alias_date(alias), now, ALIAS_THRESHOLD):
                continue
            await kms.delete_alias(alias.name)
            self._logger.info("stale kms alias deleted", alias_name=alias.name)
            await self._delete_quietly(alias.target_key_id, "alias stale")

    async def _alias_date(self, alias: AliasEntry) -> datetime | None:
        """When the alias was last updated; where KMS gives no alias dates, the creation of
        the key it names stands in (never later than the alias's own date)."""
        if alias.last_updated is not None:
            return alias.last_updated
        return (await self._client().describe_key(alias.target_key_id)).created

    async def _dispose_stale_keys(self, now: datetime) -> None:
        """Schedule the deletion of enabled keys of the trust domain that no alias names and
        that are older than 48 hours."""
        kms = self._client()
        named = {alias.target_key_id for alias in await kms.list_aliases("alias/")}
        description = key_description(self._trust_domain)
        for kms_key_id in await kms.list_key_ids():
            if kms_key_id in named:
                continue
            details = await kms.describe_key(kms_key_id)
            if details.description != description or details.state != "Enabled":
                continue
            if is_stale(details.created, now, KEY_THRESHOLD):
                await self._delete_quietly(kms_key_id, "key without alias")


@hookimpl
def pyspire_key_managers() -> list[PluginRegistration[AwsKmsKeyManagerConfig, KeyManager]]:
    """Offer the ``aws_kms`` key manager."""
    return [
        PluginRegistration(
            name="aws_kms",
            config_type=AwsKmsKeyManagerConfig,
            factory=AwsKmsKeyManager,
            description="keys made and kept in AWS KMS, named per server; private keys never "
            "leave KMS",
        )
    ]
