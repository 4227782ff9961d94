"""The ``shaping`` credential composer: marks every credential it composes so a test can see
which composer method shaped it.

Every X.509 credential gets an ``OU=<kind>`` subject attribute (``ca``, ``server``, ``agent``,
``workload``) and the extension ``extension_oid`` holding the kind as a UTF8String; workload
X509-SVIDs also get ``dns_name`` and lifetime ``workload_ttl`` when set; JWT-SVIDs get the
claims ``jwt_claims``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from pyspire_sdk.config import setting
from pyspire_sdk.plugin import HostServices, PluginRegistration, hookimpl
from pyspire_sdk.plugins.credential_composer import (
    CredentialComposer,
    Extension,
    JwtSvidClaims,
    SubjectAttribute,
    X509CaTemplate,
    X509SvidTemplate,
)
from pyspire_sdk.spiffeid import SpiffeId

ORGANIZATIONAL_UNIT = "2.5.4.11"


@dataclass(frozen=True, kw_only=True)
class ShapingComposerConfig:
    extension_oid: str = setting("1.3.6.1.4.1.99999.7", description="extension marking the kind")
    dns_name: str = setting("", description="DNS name added to workload X509-SVIDs")
    workload_ttl: timedelta | None = setting(None, description="workload X509-SVID lifetime")
    jwt_claims: dict[str, str] = setting(
        default_factory=dict, description="claims added to JWT-SVIDs"
    )


def _utf8(text: str) -> bytes:
    data = text.encode()
    return bytes((0x0C, len(data))) + data


class ShapingComposer:
    async def configure(self, config: ShapingComposerConfig, host: HostServices) -> None:
        self.config = config

    async def close(self) -> None:
        return None

    def _mark(self, kind: str) -> tuple[SubjectAttribute, Extension]:
        return (
            SubjectAttribute(ORGANIZATIONAL_UNIT, kind),
            Extension(self.config.extension_oid, critical=False, value=_utf8(kind)),
        )

    def _svid(self, kind: str, template: X509SvidTemplate) -> X509SvidTemplate:
        attribute, extension = self._mark(kind)
        return replace(
            template,
            subject=(*template.subject, attribute),
            extra_extensions=(*template.extra_extensions, extension),
        )

    async def compose_server_x509_ca(self, template: X509CaTemplate) -> X509CaTemplate:
        attribute, extension = self._mark("ca")
        return replace(
            template,
            subject=(*template.subject, attribute),
            extra_extensions=(*template.extra_extensions, extension),
        )

    async def compose_server_x509_svid(
        self, spiffe_id: SpiffeId, public_key: bytes, template: X509SvidTemplate
    ) -> X509SvidTemplate:
        return self._svid("server", template)

    async def compose_agent_x509_svid(
        self, spiffe_id: SpiffeId, public_key: bytes, template: X509SvidTemplate
    ) -> X509SvidTemplate:
        return self._svid("agent", template)

    async def compose_workload_x509_svid(
        self, spiffe_id: SpiffeId, public_key: bytes, template: X509SvidTemplate
    ) -> X509SvidTemplate:
        composed = self._svid("workload", template)
        if self.config.dns_name:
            composed = replace(composed, dns_names=(*composed.dns_names, self.config.dns_name))
        if self.config.workload_ttl is not None:
            composed = replace(composed, ttl=self.config.workload_ttl)
        return composed

    async def compose_workload_jwt_svid(
        self, spiffe_id: SpiffeId, claims: JwtSvidClaims
    ) -> JwtSvidClaims:
        return claims.with_claims(dict(self.config.jwt_claims))


@hookimpl
def pyspire_credential_composers() -> list[PluginRegistration[Any, CredentialComposer]]:
    return [
        PluginRegistration(
            name="shaping",
            config_type=ShapingComposerConfig,
            factory=ShapingComposer,
            description="marks every credential with its kind (tests only)",
        )
    ]
