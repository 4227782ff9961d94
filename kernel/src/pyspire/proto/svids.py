"""BatchNewX509SVID on the wire: the server's and the agent's halves, written and read by the
generated codecs straight from and to SDK values; and the encodings of the SVID types
(``spire.api.types.X509SVID`` and ``JWTSVID``) other messages carry.

The agent asks for SVIDs constantly and the server signs them in batches of up to 500, so
neither side builds message objects it does not need: a request is read into (entry ID, CSR)
pairs, a response written from (status code, status message, SVID) triples.
"""

from __future__ import annotations

__all__ = [
    "BatchItem",
    "BatchResult",
    "batch_new_x509_svid_request",
    "batch_new_x509_svid_response",
    "encode_jwt_svid",
    "encode_x509_svid",
    "read_batch_new_x509_svid_request",
    "read_batch_new_x509_svid_response",
]

from collections.abc import Sequence
from datetime import datetime

from pyspire.proto.gen.codec.spire_api_server_svid_v1 import (
    decode_BatchNewX509SVIDRequest,
    decode_BatchNewX509SVIDResponse,
    write_BatchNewX509SVIDRequest,
    write_BatchNewX509SVIDResponse,
    write_BatchNewX509SVIDResponse_Result,
    write_NewX509SVIDParams,
)
from pyspire.proto.gen.codec.spire_api_types import (
    X509SVID,
    write_JWTSVID,
    write_SPIFFEID,
    write_Status,
    write_X509SVID,
)
from pyspire_sdk.model import JwtSvid, X509Svid
from pyspire_sdk.spiffeid import SpiffeId

BatchItem = tuple[str, bytes]
"""One item of a BatchNewX509SVID request: the entry ID and the DER CSR."""

BatchResult = tuple[int, str, X509SVID | None]
"""One result of a BatchNewX509SVID response as read: status code and message (zero values when
absent) and the SVID as sent, unvalidated (see
:func:`pyspire.proto.convert.x509_svid_from_proto`)."""


def _seconds(moment: datetime | None) -> int:
    return int(moment.timestamp()) if moment is not None else 0


def _spiffe_id(spiffe_id: SpiffeId) -> bytes:
    return write_SPIFFEID(trust_domain=spiffe_id.trust_domain.name, path=spiffe_id.path)


def encode_x509_svid(svid: X509Svid) -> bytes:
    """The encoding of ``spire.api.types.X509SVID`` for ``svid``."""
    return write_X509SVID(
        cert_chain=svid.cert_chain,
        id=_spiffe_id(svid.spiffe_id),
        expires_at=_seconds(svid.expires_at),
        hint=svid.hint,
    )


def encode_jwt_svid(svid: JwtSvid) -> bytes:
    """The encoding of ``spire.api.types.JWTSVID`` for ``svid``."""
    return write_JWTSVID(
        token=svid.token,
        id=_spiffe_id(svid.spiffe_id),
        expires_at=_seconds(svid.expires_at),
        issued_at=_seconds(svid.issued_at),
        hint=svid.hint,
    )


def batch_new_x509_svid_request(items: Sequence[BatchItem]) -> bytes:
    """The encoding of a ``BatchNewX509SVIDRequest`` asking for these (entry ID, CSR) pairs."""
    return write_BatchNewX509SVIDRequest(
        params=[write_NewX509SVIDParams(entry_id=entry_id, csr=csr) for entry_id, csr in items]
    )


def read_batch_new_x509_svid_request(data: bytes) -> list[BatchItem]:
    """The (entry ID, CSR) pairs of an encoded ``BatchNewX509SVIDRequest``, in order;
    :class:`~pyspire.proto.errors.DecodeError` when the bytes are not one."""
    request = decode_BatchNewX509SVIDRequest(data)
    return [(params.entry_id, params.csr) for params in request.params]


def batch_new_x509_svid_response(results: Sequence[tuple[int, str, X509Svid | None]]) -> bytes:
    """The encoding of a ``BatchNewX509SVIDResponse`` from (status code, status message, SVID or
    None) per request item, in request order."""
    return write_BatchNewX509SVIDResponse(
        results=[
            write_BatchNewX509SVIDResponse_Result(
                status=_OK_STATUS
                if code == 0 and message == "OK"
                else write_Status(code=code, message=message),
                svid=None if svid is None else encode_x509_svid(svid),
            )
            for code, message, svid in results
        ]
    )


_OK_STATUS = write_Status(code=0, message="OK")
"""The status of nearly every item, encoded once."""


def read_batch_new_x509_svid_response(data: bytes) -> list[BatchResult]:
    """The results of an encoded ``BatchNewX509SVIDResponse``, in order;
    :class:`~pyspire.proto.errors.DecodeError` when the bytes are not one. A result without
    status is OK, as its zero value says."""
    response = decode_BatchNewX509SVIDResponse(data)
    results: list[BatchResult] = []
    for result in response.results:
        status = result.status
        if status is None:
            results.append((0, "", result.svid))
        else:
            results.append((status.code, status.message, result.svid))
    return results
