"""The ``uniqueid`` credential composer and its registration.

RFC 5280 wants the subject of every certificate a CA issues to be unique to its subject entity,
while every X509-SVID shares ``C=US, O=SPIRE``. This composer, like SPIRE's ``uniqueid``, adds an
``x500UniqueIdentifier`` attribute (OID 2.5.4.45) to the subject of workload X509-SVIDs: the
first 16 bytes of the SHA-256 of the SPIFFE ID, hex encoded (32 lower-case characters). The same
SPIFFE ID always gets the same value, different ones practically never do. An attribute with
that OID already in the subject is replaced; otherwise the attribute is added last.

It has no opinion on anything else: the CA, the server's and agents' SVIDs and JWT-SVIDs pass
unchanged.
"""

from __future__ import annotations

__all__ = ["UNIQUE_ID_OID", "UniqueIdComposer", "pyspire_credential_composers", "unique_id"]

import hashlib
from dataclasses import replace

from pyspire_sdk.plugin import HostServices, NoConfig, PluginRegistration, hookimpl
from pyspire_sdk.plugins.credential_composer import (
    CredentialComposer,
    JwtSvidClaims,
    SubjectAttribute,
    X509CaTemplate,
    X509SvidTemplate,
)
from pyspire_sdk.spiffeid import SpiffeId

UNIQUE_ID_OID = "2.5.4.45"
"""x500UniqueIdentifier."""


def unique_id(spiffe_id: SpiffeId) -> str:
    """The unique identifier of ``spiffe_id``: SHA-256 of its string form, truncated to 128 bits
    and hex encoded (``spiffe://example.org/foo`` gives ``c3406f9b12ceb4f9c948318c579b905b``)."""
    return hashlib.sha256(str(spiffe_id).encode("utf-8")).digest()[:16].hex()


class UniqueIdComposer:
    """Adds the SPIFFE ID's unique identifier to workload X509-SVID subjects; takes no settings."""

    async def configure(self, config: NoConfig, host: HostServices) -> None:
        """Nothing to set up."""

    async def close(self) -> None:
        """Nothing to release."""

    async def compose_server_x509_ca(self, template: X509CaTemplate) -> X509CaTemplate:
        """No opinion."""
        return template

    async def compose_server_x509_svid(
        self, spiffe_id: SpiffeId, public_key: bytes, template: X509SvidTemplate
    ) -> X509SvidTemplate:
        """No opinion."""
        return template

    async def compose_agent_x509_svid(
        self, spiffe_id: SpiffeId, public_key: bytes, template: X509SvidTemplate
    ) -> X509SvidTemplate:
        """No opinion."""
        return template

    async def compose_workload_x509_svid(
        self, spiffe_id: SpiffeId, public_key: bytes, template: X509SvidTemplate
    ) -> X509SvidTemplate:
        """The template with the unique identifier of ``spiffe_id`` in its subject: in place of
        the first attribute with the same OID, or else last."""
        attribute = SubjectAttribute(UNIQUE_ID_OID, unique_id(spiffe_id))
        subject = list(template.subject)
        for index, existing in enumerate(subject):
            if existing.oid == UNIQUE_ID_OID:
                subject[index] = attribute
                break
        else:
            subject.append(attribute)
        return replace(template, subject=tuple(subject))

    async def compose_workload_jwt_svid(
        self, spiffe_id: SpiffeId, claims: JwtSvidClaims
    ) -> JwtSvidClaims:
        """No opinion."""
        return claims


@hookimpl
def pyspire_credential_composers() -> list[PluginRegistration[NoConfig, CredentialComposer]]:
    """Offer the ``uniqueid`` credential composer."""
    return [
        PluginRegistration(
            name="uniqueid",
            config_type=NoConfig,
            factory=UniqueIdComposer,
            description="adds x500UniqueIdentifier (a hash of the SPIFFE ID) to workload "
            "X509-SVID subjects",
        )
    ]
