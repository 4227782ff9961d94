"""What the agent sends and what an instance identity document says; names both halves share.

The payload is SPIRE's ``IIDAttestationData``, JSON with the document as the metadata service
serves it (``/latest/dynamic/instance-identity/document``) and its two signatures: ``rsa2048``,
the base64 PKCS #7 signed data of ``.../rsa2048``, and ``signature``, the base64 SHA-256 RSA
signature of ``.../signature``. SPIRE's agent sends both so that old servers, which know only
the second, keep working.
"""

from __future__ import annotations

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "PLUGIN_NAME",
    "TEMPLATE_FIELDS",
    "AttestationData",
    "InstanceIdentityDocument",
]

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyspire_sdk.errors import InvalidArgumentError

PLUGIN_NAME = "aws_iid"

MAX_PAYLOAD_BYTES = 64 * 1024
"""A document and two signatures take about 3 KiB; anything far larger is not one."""


def _json_object(data: bytes | str, what: str) -> Mapping[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError) as error:
        raise InvalidArgumentError(f"failed to unmarshal {what}: {error}") from None
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"failed to unmarshal {what}: not a JSON object")
    return value


@dataclass(frozen=True)
class AttestationData:
    """The payload: the document's text and its signatures (base64, possibly empty)."""

    document: str
    signature: str = field(default="", repr=False)
    rsa2048: str = field(default="", repr=False)

    def to_payload(self) -> bytes:
        """JSON as SPIRE's agent writes it (Go's field order, no spaces)."""
        data = {"document": self.document, "signature": self.signature, "rsa2048": self.rsa2048}
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_payload(cls, payload: bytes) -> AttestationData:
        """Read a payload; :class:`InvalidArgumentError` naming what is malformed."""
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise InvalidArgumentError(
                f"attestation data is {len(payload)} bytes, over {MAX_PAYLOAD_BYTES}"
            )
        data = _json_object(payload, "the attestation data")
        values = {}
        for name in ("document", "signature", "rsa2048"):
            value = data.get(name, "")
            if not isinstance(value, str):
                raise InvalidArgumentError(f"attestation data field {name!r} is not a string")
            values[name] = value
        if not values["document"]:
            raise InvalidArgumentError("attestation data has no instance identity document")
        return cls(**values)


@dataclass(frozen=True)
class InstanceIdentityDocument:
    """The fields of a document that attestation uses (AWS's names in comments)."""

    account_id: str  # accountId
    region: str  # region
    instance_id: str  # instanceId
    image_id: str = ""  # imageId
    availability_zone: str = ""  # availabilityZone

    @classmethod
    def parse(cls, document: str) -> InstanceIdentityDocument:
        """Read the document's JSON; the account, region and instance are required."""
        data = _json_object(document, "the instance identity document")

        def text(name: str, *, required: bool) -> str:
            value = data.get(name, "")
            if not isinstance(value, str) or (required and not value):
                raise InvalidArgumentError(
                    f"instance identity document field {name!r} is missing or not a string"
                )
            return value

        return cls(
            account_id=text("accountId", required=True),
            region=text("region", required=True),
            instance_id=text("instanceId", required=True),
            image_id=text("imageId", required=False),
            availability_zone=text("availabilityZone", required=False),
        )

    def template_values(self, trust_domain: str, tags: Mapping[str, str]) -> dict[str, Any]:
        """The fields ``agent_path_template`` may use (SPIRE's names); ``Tags`` are the
        instance's tags as EC2 reports them."""
        return {
            "PluginName": PLUGIN_NAME,
            "AccountID": self.account_id,
            "Region": self.region,
            "InstanceID": self.instance_id,
            "TrustDomain": trust_domain,
            "Tags": dict(tags),
        }


TEMPLATE_FIELDS = ("PluginName", "AccountID", "Region", "InstanceID", "TrustDomain", "Tags")
"""Every field :meth:`InstanceIdentityDocument.template_values` provides."""
