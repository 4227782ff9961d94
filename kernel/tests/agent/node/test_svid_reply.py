"""BatchNewX509SVID replies are read by the generated codec exactly as Google's protobuf
runtime reads them.

The oracle below parses the reply with Google's runtime, then turns each result into an
:class:`SvidResult` with the agent's status and SVID rules.
"""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError as GoogleDecodeError
from grpclib.const import Status

from pyspire.agent.client import ServerCallError, read_batch_new_x509_svid_response
from pyspire.agent.server_api import SvidResult
from pyspire.proto import descriptor_set
from pyspire.proto.convert import x509_svid_from_proto
from pyspire.proto.gen.spire.api import types as pb
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.model import X509Svid
from pyspire_sdk.spiffeid import SpiffeId


def _google_response_class() -> Any:
    """Google's runtime's class of ``BatchNewX509SVIDResponse``, from our descriptors."""
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(descriptor_set()).file:
        pool.Add(file)
    name = "spire.api.server.svid.v1.BatchNewX509SVIDResponse"
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


GoogleResponse = _google_response_class()

# -- building wire bytes --------------------------------------------------------------------


def varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def ld(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + varint(len(payload)) + payload


def vi(number: int, value: int) -> bytes:
    return tag(number, 0) + varint(value)


UNKNOWN = (
    vi(9, 300)
    + tag(10, 1)
    + bytes(range(8))
    + tag(11, 5)
    + bytes(4)
    + ld(12, b"\x0a\x02zz")
    + vi(1000, 1)  # a two-byte tag
)
"""One unknown field of each wire type proto3 allows."""


def spiffe_id(trust_domain: str = "example.org", path: str = "/web") -> bytes:
    return bytes(pb.Spiffeid(trust_domain=trust_domain, path=path))


def svid(
    chain: list[bytes] | None = None,
    expires_at: int = 1_700_000_000,
    hint: str = "",
    path: str = "/web",
) -> bytes:
    return bytes(
        pb.X509Svid(
            cert_chain=[b"leaf-der", b"ca-der"] if chain is None else chain,
            id=pb.Spiffeid(trust_domain="example.org", path=path),
            expires_at=expires_at,
            hint=hint,
        )
    )


def result(status: bytes | None = None, body: bytes | None = None) -> bytes:
    return (b"" if status is None else ld(1, status)) + (b"" if body is None else ld(2, body))


def status(code: int, message: str = "") -> bytes:
    return bytes(pb.Status(code=code, message=message))


def response(*results: bytes) -> bytes:
    return b"".join(ld(1, item) for item in results)


# -- the oracle -----------------------------------------------------------------------------


def google_results(data: bytes, entry_ids: list[str]) -> list[SvidResult]:
    reply: Any = GoogleResponse.FromString(data)
    assert len(reply.results) == len(entry_ids)
    results = []
    for entry_id, item in zip(entry_ids, reply.results, strict=True):
        code = item.status.code
        if code != 0:
            try:
                name = Status(code).name
            except ValueError:
                name = str(code)
            results.append(SvidResult(entry_id, None, f"{name}: {item.status.message or name}"))
            continue
        try:
            found = x509_svid_from_proto(item.svid, "svid")
        except InvalidArgumentError as error:
            results.append(SvidResult(entry_id, None, f"malformed SVID from server: {error}"))
        else:
            results.append(SvidResult(entry_id, found))
    return results


def ids(count: int) -> list[str]:
    return [f"entry-{index}" for index in range(count)]


def same_as_google(data: bytes, count: int) -> list[SvidResult]:
    expected = google_results(data, ids(count))
    assert read_batch_new_x509_svid_response(data, ids(count)) == expected
    return expected


# -- well-formed replies --------------------------------------------------------------------


def test_ok_results_and_refusals() -> None:
    data = response(
        result(status(0, "OK"), svid(hint="web")),
        result(status(5, "entry not found or not authorized")),
        result(status(99)),  # a code grpclib has no name for
        result(status(-1, "odd")),  # negative int32: a ten-byte varint
        result(status(7), svid()),  # an SVID beside a refusal is ignored
        result(vi(1, 0xFFFFFFFF)),  # int32 -1 in five bytes
        result(vi(1, (1 << 32) + 5)),  # only the low 32 bits count
    )
    found = same_as_google(data, 7)
    assert found[0] == SvidResult(
        "entry-0",
        X509Svid(
            spiffe_id=SpiffeId.parse("spiffe://example.org/web"),
            cert_chain=(b"leaf-der", b"ca-der"),
            expires_at=datetime.fromtimestamp(1_700_000_000, tz=UTC),
            hint="web",
        ),
    )
    assert [r.error for r in found[1:]] == [
        "NOT_FOUND: entry not found or not authorized",
        "99: 99",
        "-1: odd",
        "PERMISSION_DENIED: PERMISSION_DENIED",
        "-1: -1",
        "NOT_FOUND: NOT_FOUND",
    ]


def test_an_empty_reply_has_no_results() -> None:
    assert read_batch_new_x509_svid_response(b"", []) == []


def test_a_result_without_status_is_ok() -> None:
    found = same_as_google(response(result(None, svid())), 1)
    assert found[0].svid is not None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (None, "invalid svid.cert_chain: the certificate chain is empty"),
        (b"", "invalid svid.cert_chain: the certificate chain is empty"),
        (svid(chain=[]), "invalid svid.cert_chain: the certificate chain is empty"),
        (svid(chain=[b"leaf", b""]), r"invalid svid.cert_chain\[1\]: it is empty"),
        (svid(expires_at=0), "invalid svid.expires_at: it is missing"),
        (ld(1, b"leaf") + vi(3, 5), "invalid svid.id: trust domain is missing"),
        (ld(1, b"leaf") + vi(3, 5) + ld(2, spiffe_id("", "/x")), "trust domain is missing"),
        (ld(1, b"leaf") + vi(3, 5) + ld(2, spiffe_id("Example.org")), "invalid svid.id: "),
        (svid(path="/a//b"), "invalid svid.id: .*empty segment"),
        (svid(path="web"), "invalid svid.id: .*must start with '/'"),
    ],
)
def test_unusable_svids_are_per_result_errors(body: bytes | None, reason: str) -> None:
    found = same_as_google(response(result(status(0), body), result(status(0), svid())), 2)
    assert found[0].svid is None
    assert found[0].error.startswith("malformed SVID from server: ")
    assert re.search(reason, found[0].error)
    assert found[1].svid is not None


def test_negative_expiry_and_the_trust_domain_id() -> None:
    found = same_as_google(
        response(result(None, svid(expires_at=-86_400)), result(None, svid(path=""))), 2
    )
    assert found[0].svid is not None
    assert found[0].svid.expires_at == datetime(1969, 12, 31, tzinfo=UTC)
    assert found[1].svid is not None
    assert str(found[1].svid.spiffe_id) == "spiffe://example.org"


def test_an_expiry_no_datetime_holds_is_a_per_result_error() -> None:
    data = response(result(None, svid(expires_at=1 << 62)))
    [found] = read_batch_new_x509_svid_response(data, ["e"])
    assert found.svid is None
    assert found.error == (
        f"malformed SVID from server: invalid svid.expires_at: {1 << 62} is out of range"
    )
    # The same with an otherwise unusable ID: the expiry is judged before the ID.
    data = response(result(None, ld(1, b"leaf") + vi(3, 1 << 62)))
    [found] = read_batch_new_x509_svid_response(data, ["e"])
    assert found.error.endswith(f"{1 << 62} is out of range")


def test_unknown_fields_are_skipped_at_every_level() -> None:
    body = (
        UNKNOWN
        + ld(1, b"leaf")
        + UNKNOWN
        + ld(2, UNKNOWN + spiffe_id() + UNKNOWN)
        + vi(3, 1_700_000_000)
        + ld(4, b"hint")
        + UNKNOWN
    )
    data = UNKNOWN + ld(1, UNKNOWN + ld(1, UNKNOWN + status(0) + UNKNOWN) + ld(2, body)) + UNKNOWN
    [found] = same_as_google(data, 1)
    assert found.svid is not None
    assert found.svid.hint == "hint"
    assert found.svid.cert_chain == (b"leaf",)


def test_fields_in_any_order_the_last_scalar_wins_and_messages_merge() -> None:
    body = (
        ld(4, b"first")
        + vi(3, 1)
        + ld(2, spiffe_id(path="/old"))
        + ld(1, b"a")
        + ld(4, b"second")
        + vi(3, 1_700_000_000)
        + ld(2, spiffe_id(path="/new"))
        + ld(1, b"b")
    )
    # A repeated embedded message is merged into the earlier one, as protobuf specifies.
    data = response(
        ld(2, body) + ld(1, status(5, "gone")) + ld(1, status(0)),
        ld(1, status(0, "first")) + ld(1, bytes(pb.Status(message="second"))),
        ld(2, svid(chain=[b"x"])) + ld(2, ld(4, b"only a hint")),
    )
    found = same_as_google(data, 3)
    # The second status (all defaults) merged into the refusal: it stays a refusal.
    assert found[0].error == "NOT_FOUND: gone"
    assert found[1].error.endswith("the certificate chain is empty")  # merged status, no SVID
    assert found[2].svid is not None
    assert found[2].svid.cert_chain == (b"x",)
    assert found[2].svid.hint == "only a hint"
    [merged] = same_as_google(response(result(status(0), body)), 1)
    assert merged.svid is not None
    assert merged.svid.cert_chain == (b"a", b"b")
    assert merged.svid.hint == "second"
    assert merged.svid.spiffe_id.path == "/new"


def test_a_known_field_of_another_wire_type_is_skipped_as_unknown() -> None:
    data = response(
        result(status(0), svid()) + vi(2, 1),  # svid as a varint
        ld(1, ld(1, b"x") + ld(2, b"msg")) + ld(2, svid() + ld(3, b"1")),  # code, expires_at
        ld(1, vi(2, 1)) + ld(2, svid()),  # status.message as a varint
    )
    found = same_as_google(b"\x08\x01" + data + b"\x13\x14", 3)  # results as a varint; a group
    assert [r.svid is not None for r in found] == [True, True, True]


def test_a_large_batch() -> None:
    data = response(
        *(
            result(status(0, "OK"), svid(path=f"/w/{index}", hint=str(index)))
            for index in range(500)
        )
    )
    found = same_as_google(data, 500)
    assert [r.svid.spiffe_id.path for r in found if r.svid] == [f"/w/{i}" for i in range(500)]


# -- replies that cannot be trusted ---------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x0a", "truncated"),
        (b"\x0a\x80", "truncated"),
        (b"\x0a\x05\x0a\x01", "truncated"),
        (ld(1, ld(2, b"\x0a\x05ab")), "truncated"),
        (b"\x10" + b"\xff" * 10 + b"\x01", "overflows 64 bits"),
        (ld(1, b"\x1c"), "end of group 3 that was not started"),
        (b"\x13\x0a\x00", "group 2 is not ended"),
        (b"\x00\x00", "field number 0"),
        (ld(1, b"\x19" + bytes(7)), "truncated"),  # a 64-bit field cut short
        (ld(1, b"\x1d" + bytes(3)), "truncated"),  # a 32-bit field cut short
        (ld(1, ld(1, ld(2, b"\xff"))), "Status.message: not valid UTF-8"),
        (ld(1, ld(2, ld(4, b"\xc3"))), "X509SVID.hint: not valid UTF-8"),
        (ld(1, ld(2, ld(2, ld(1, b"\xff")))), "SPIFFEID.trust_domain: not valid UTF-8"),
        (ld(1, ld(2, ld(2, ld(2, b"/\xff")))), "SPIFFEID.path: not valid UTF-8"),
    ],
)
def test_malformed_replies_are_refused_as_googles_runtime_refuses_them(
    data: bytes, reason: str
) -> None:
    if reason != "overflows 64 bits":  # a tenth varint byte above 1: refused as Go refuses it
        with pytest.raises(GoogleDecodeError):
            GoogleResponse.FromString(data)
    with pytest.raises(
        ServerCallError, match=f"^server sent a malformed BatchNewX509SVID response: .*{reason}"
    ):
        read_batch_new_x509_svid_response(data, ["e"])


def test_a_result_count_other_than_the_requests_is_refused() -> None:
    data = response(result(status(0), svid()))
    with pytest.raises(ServerCallError, match=r"^server answered 1 results to 2 CSRs$"):
        read_batch_new_x509_svid_response(data, ["a", "b"])
    with pytest.raises(ServerCallError, match=r"^server answered 0 results to 1 CSRs$"):
        read_batch_new_x509_svid_response(b"", ["a"])


def test_damaged_replies_decode_as_googles_runtime_decodes_them() -> None:
    """Random cuts, flips and splices of a reply: where Google's runtime refuses, the reader
    refuses; where it reads, the results are equal."""
    rng = random.Random(20240611)
    seeds = [
        response(
            result(status(0, "OK"), svid(hint="h")),
            result(status(5, "no")),
            result(None, ld(1, b"leaf") + UNKNOWN + vi(3, 12) + ld(2, spiffe_id())),
        ),
        response(result(status(0), svid(chain=[b"a" * 200, b"b" * 130]))),
    ]
    checked = refused = 0
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            where = rng.randrange(len(data))
            action = rng.randrange(3)
            if action == 0:
                data[where] = rng.randrange(256)
            elif action == 1:
                del data[where : where + rng.randint(1, 4)]
            else:
                data[where:where] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 3)))
        damaged = bytes(data)
        try:
            parsed: Any = GoogleResponse.FromString(damaged)
        except GoogleDecodeError:
            with pytest.raises(ServerCallError, match=r"^server sent a malformed "):
                read_batch_new_x509_svid_response(damaged, ids(8))
            refused += 1
            continue
        count = len(parsed.results)
        try:
            expected = google_results(damaged, ids(count))
        except (OverflowError, OSError, ValueError):
            continue  # an expiry no datetime holds: see the test above
        assert read_batch_new_x509_svid_response(damaged, ids(count)) == expected, damaged
        checked += 1
    assert checked > 300
    assert refused > 300
