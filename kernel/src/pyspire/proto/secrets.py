"""Envoy's Secret Discovery Service on the wire: secrets as ``google.protobuf.Any`` bytes, the
xDS responses that carry them, and what the agent reads from an Envoy ``Node``.

The agent hands Envoy three kinds of ``envoy.extensions.transport_sockets.tls.v3.Secret``, as
SPIRE's agent does: a ``TlsCertificate`` (an X509-SVID's chain and PKCS#8 key, PEM, inline),
a ``CertificateValidationContext`` with ``trusted_ca`` (a trust domain's CAs, PEM), and a
validation context that configures Envoy's SPIFFE certificate validator
(``envoy.tls.cert_validator.spiffe``) with one ``trust_domains`` item per trust domain. Each is
returned already wrapped in an ``Any``, so a response is written from cached bytes.
"""

from __future__ import annotations

__all__ = [
    "SECRET_TYPE_URL",
    "SPIFFE_VALIDATOR_NAME",
    "SPIFFE_VALIDATOR_TYPE_URL",
    "delta_response",
    "discovery_resources",
    "discovery_response",
    "envoy_version",
    "metadata_flag",
    "spiffe_validator_secret",
    "tls_certificate_secret",
    "trusted_ca_secret",
]

import base64
from collections.abc import Iterable, Sequence

from pyspire.proto.gen.codec import envoy_config_core_v3 as core
from pyspire.proto.gen.codec import envoy_extensions_transport_sockets_tls_v3 as tls
from pyspire.proto.gen.codec import envoy_service_discovery_v3 as discovery
from pyspire.proto.gen.codec import google_protobuf
from pyspire.proto.messages import EncodedMessage

SECRET_TYPE_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"  # noqa: S105
"""The type of every resource the Secret Discovery Service serves."""

SPIFFE_VALIDATOR_TYPE_URL = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig"
)
"""The type of the SPIFFE certificate validator's configuration."""

SPIFFE_VALIDATOR_NAME = "envoy.tls.cert_validator.spiffe"
"""The name Envoy knows its SPIFFE certificate validator by."""

_PEM_LINE = 64


def _pem(label: str, ders: Iterable[bytes]) -> bytes:
    """Concatenated PEM blocks of ``label`` for each DER value, in order."""
    blocks = []
    for der in ders:
        body = base64.b64encode(der)
        lines = b"\n".join(body[at : at + _PEM_LINE] for at in range(0, len(body), _PEM_LINE))
        head = f"-----BEGIN {label}-----\n".encode()
        tail = f"\n-----END {label}-----\n".encode()
        blocks.append(head + lines + tail)
    return b"".join(blocks)


def _inline(data: bytes) -> bytes:
    return core.write_DataSource(inline_bytes=data)


def _secret_any(
    name: str, *, tls_certificate: bytes | None = None, context: bytes | None = None
) -> bytes:
    secret = tls.write_Secret(
        name=name, tls_certificate=tls_certificate, validation_context=context
    )
    return google_protobuf.write_Any(type_url=SECRET_TYPE_URL, value=secret)


def tls_certificate_secret(name: str, chain: Sequence[bytes], private_key: bytes) -> bytes:
    """A ``TlsCertificate`` secret (as an ``Any``): the certificate chain (DER, leaf first)
    and the PKCS#8 DER private key, both sent as PEM."""
    certificate = tls.write_TlsCertificate(
        certificate_chain=_inline(_pem("CERTIFICATE", chain)),
        private_key=_inline(_pem("PRIVATE KEY", (private_key,))),
    )
    return _secret_any(name, tls_certificate=certificate)


def trusted_ca_secret(name: str, authorities: Sequence[bytes]) -> bytes:
    """A validation context (as an ``Any``) that trusts these CA certificates (DER) by
    standard X.509 chain validation."""
    context = tls.write_CertificateValidationContext(
        trusted_ca=_inline(_pem("CERTIFICATE", authorities))
    )
    return _secret_any(name, context=context)


def spiffe_validator_secret(
    name: str, trust_domains: Sequence[tuple[str, Sequence[bytes]]]
) -> bytes:
    """A validation context (as an ``Any``) that configures Envoy's SPIFFE certificate
    validator with each ``(trust domain name, CA certificates as DER)``, in the order given."""
    config = tls.write_SPIFFECertValidatorConfig(
        trust_domains=[
            tls.write_SPIFFECertValidatorConfig_TrustDomain(
                name=domain, trust_bundle=_inline(_pem("CERTIFICATE", authorities))
            )
            for domain, authorities in trust_domains
        ]
    )
    extension = core.write_TypedExtensionConfig(
        name=SPIFFE_VALIDATOR_NAME,
        typed_config=google_protobuf.write_Any(type_url=SPIFFE_VALIDATOR_TYPE_URL, value=config),
    )
    context = tls.write_CertificateValidationContext(custom_validator_config=extension)
    return _secret_any(name, context=context)


def discovery_resources(resources: Sequence[bytes]) -> bytes:
    """The part of a state-of-the-world response that is the same on every stream: its
    ``resources`` (encoded ``Any`` secrets) and type URL, encoded once and reused by
    :func:`discovery_response` for every Envoy that asks the same secrets at one revision."""
    return discovery.write_DiscoveryResponse(resources=resources, type_url=SECRET_TYPE_URL)


def discovery_response(
    version_info: str, resources: bytes, nonce: str
) -> EncodedMessage[discovery.DiscoveryResponse]:
    """A state-of-the-world response: ``resources`` (from :func:`discovery_resources`) with
    this stream's version and nonce.

    A message's encoding is the concatenation of its fields' encodings, so the shared part is
    spliced between the version (field 1) and the nonce (field 5) as it is, and the fields stay
    in field-number order."""
    return EncodedMessage(
        discovery.write_DiscoveryResponse(version_info=version_info)
        + resources
        + discovery.write_DiscoveryResponse(nonce=nonce),
        discovery.decode_DiscoveryResponse,
    )


def delta_response(
    system_version_info: str,
    resources: Sequence[tuple[str, str, bytes]],
    removed: Sequence[str],
    nonce: str,
) -> EncodedMessage[discovery.DeltaDiscoveryResponse]:
    """An incremental response: each ``(name, version, encoded Any)`` of ``resources`` and the
    names of ``removed`` resources."""
    return EncodedMessage(
        discovery.write_DeltaDiscoveryResponse(
            system_version_info=system_version_info,
            resources=[
                discovery.write_Resource(version=version, resource=resource, name=name)
                for name, version, resource in resources
            ],
            type_url=SECRET_TYPE_URL,
            nonce=nonce,
            removed_resources=removed,
        ),
        discovery.decode_DeltaDiscoveryResponse,
    )


def envoy_version(node: core.Node | None) -> tuple[int, int] | None:
    """The ``(major, minor)`` version of the Envoy build a node reports, or None when it does
    not report a structured build version."""
    if node is None:
        return None
    build = node.user_agent_build_version
    if build is None or build.version is None:
        return None
    return build.version.major_number, build.version.minor_number


def metadata_flag(node: core.Node | None, key: str) -> bool | None:
    """A node metadata value read as a boolean: a bool, or a string Go's ``strconv.ParseBool``
    accepts (``1 t T TRUE true True``, and the false ones); None when the key is absent or
    holds anything else."""
    if node is None or node.metadata is None:
        return None
    value = node.metadata.fields.get(key)
    if value is None:
        return None
    if value.bool_value is not None:
        return value.bool_value
    if value.string_value is not None:
        return _PARSE_BOOL.get(value.string_value)
    return None


_PARSE_BOOL = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}
