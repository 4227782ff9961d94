"""The generated BatchNewX509SVID response is byte for byte what betterproto makes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pyspire.proto.convert import x509_svid_to_proto
from pyspire.proto.gen.codec.spire_api_server_svid_v1 import decode_BatchNewX509SVIDResponse
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.svid import v1 as svid_pb
from pyspire.proto.svids import batch_new_x509_svid_response
from pyspire_sdk.model import X509Svid
from pyspire_sdk.spiffeid import SpiffeId

SVID = X509Svid(
    spiffe_id=SpiffeId.parse("spiffe://example.org/workload/web"),
    cert_chain=(b"\x30\x82" + b"l" * 300, b"\x30\x03abc"),
    expires_at=datetime(2030, 1, 1, 1, tzinfo=UTC),
    hint="web",
)


@pytest.mark.parametrize(
    "results",
    [
        [(0, "OK", SVID)],
        [(0, "OK", SVID), (5, "entry not found or not authorized", None), (3, "", None)],
        [(0, "", X509Svid(SVID.spiffe_id, (b"x" * 200,), SVID.expires_at))],
    ],
)
def test_bytes_equal_betterproto(results: list[tuple[int, str, X509Svid | None]]) -> None:
    expected = svid_pb.BatchNewX509SvidResponse(
        results=[
            svid_pb.BatchNewX509SvidResponseResult(
                status=pb.Status(code=code, message=message),
                **({"svid": x509_svid_to_proto(svid)} if svid is not None else {}),
            )
            for code, message, svid in results
        ]
    )
    encoded = batch_new_x509_svid_response(results)
    assert encoded == bytes(expected)
    decoded = decode_BatchNewX509SVIDResponse(encoded)
    assert [r.status.code if r.status else 0 for r in decoded.results] == [
        code for code, _, _ in results
    ]
