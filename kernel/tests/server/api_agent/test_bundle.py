"""The Bundle service: our bundle, federated bundles, downstream JWT keys."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pyspire.proto.convert import bundle_from_proto
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb
from pyspire.server.api.bundle import BundleService
from pyspire.server.api.own_bundle import BUNDLE_READ_INTERVAL
from pyspire.server.authorization import CallerKind
from pyspire.server.context import ServerContext
from pyspire_sdk.errors import InvalidArgumentError, NotFoundError
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing import FakeClock

from .conftest import caller

Mode = bundle_pb.BatchDeleteFederatedBundleRequestMode


def ca_der(name: str = "other") -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )


def jwt_key(kid: str = "k1") -> pb.JwtKey:
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    return pb.JwtKey(
        public_key=public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        key_id=kid,
        expires_at=1_900_000_000,
    )


def federated(name: str = "other.org", *, refresh_hint: int = 300) -> pb.Bundle:
    return pb.Bundle(
        trust_domain=name,
        x509_authorities=[pb.X509Certificate(asn1=ca_der(name))],
        jwt_authorities=[jwt_key()],
        refresh_hint=refresh_hint,
        sequence_number=1,
    )


async def test_get_bundle_with_and_without_a_mask(
    context: ServerContext, bundle_service: BundleService
) -> None:
    caller(CallerKind.ANY)
    bundle = await bundle_service.get_bundle(bundle_pb.GetBundleRequest())
    assert bundle.trust_domain == "example.org"
    assert len(bundle.x509_authorities) == 1
    assert len(bundle.jwt_authorities) == 1
    assert bundle.sequence_number > 0
    masked = await bundle_service.get_bundle(
        bundle_pb.GetBundleRequest(output_mask=pb.BundleMask(jwt_authorities=True))
    )
    assert masked.trust_domain == "example.org"
    assert masked.x509_authorities == []
    assert masked.jwt_authorities == bundle.jwt_authorities
    assert masked.sequence_number == 0


async def test_append_bundle_adds_authorities_once(bundle_service: BundleService) -> None:
    before = await bundle_service.get_bundle(bundle_pb.GetBundleRequest())
    extra_ca = ca_der("extra")
    key = jwt_key("appended")
    after = await bundle_service.append_bundle(
        bundle_pb.AppendBundleRequest(
            x509_authorities=[pb.X509Certificate(asn1=extra_ca)], jwt_authorities=[key]
        )
    )
    assert [a.asn1 for a in after.x509_authorities][-1] == extra_ca
    assert [k.key_id for k in after.jwt_authorities][-1] == "appended"
    assert after.sequence_number == before.sequence_number + 1
    again = await bundle_service.append_bundle(
        bundle_pb.AppendBundleRequest(x509_authorities=[pb.X509Certificate(asn1=extra_ca)])
    )
    assert again.sequence_number == after.sequence_number
    assert len(again.x509_authorities) == len(after.x509_authorities)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (bundle_pb.AppendBundleRequest(), "^missing authorities"),
        (
            bundle_pb.AppendBundleRequest(x509_authorities=[pb.X509Certificate(asn1=b"junk")]),
            r"x509_authorities\[0\]: not a DER X.509 certificate",
        ),
        (
            bundle_pb.AppendBundleRequest(x509_authorities=[pb.X509Certificate()]),
            r"x509_authorities\[0\]: asn1 is missing",
        ),
        (
            bundle_pb.AppendBundleRequest(jwt_authorities=[pb.JwtKey(public_key=b"k")]),
            r"jwt_authorities\[0\]: key_id is missing",
        ),
        (
            bundle_pb.AppendBundleRequest(
                jwt_authorities=[pb.JwtKey(key_id="k", public_key=b"not der")]
            ),
            r"jwt_authorities\[0\]: public_key is not a DER public key",
        ),
    ],
)
async def test_append_bundle_rejects_bad_authorities(
    bundle_service: BundleService, request_: bundle_pb.AppendBundleRequest, message: str
) -> None:
    before = await bundle_service.get_bundle(bundle_pb.GetBundleRequest())
    with pytest.raises(InvalidArgumentError, match=message):
        await bundle_service.append_bundle(request_)
    assert await bundle_service.get_bundle(bundle_pb.GetBundleRequest()) == before


async def test_publish_jwt_authority(bundle_service: BundleService) -> None:
    caller(CallerKind.DOWNSTREAM, spiffe_id=SpiffeId.parse("spiffe://example.org/downstream"))
    key = jwt_key("downstream-key")
    response = await bundle_service.publish_jwt_authority(
        bundle_pb.PublishJwtAuthorityRequest(jwt_authority=key)
    )
    assert [k.key_id for k in response.jwt_authorities][-1] == "downstream-key"
    assert response.jwt_authorities[-1].expires_at == key.expires_at
    caller(CallerKind.ANY)
    bundle = await bundle_service.get_bundle(bundle_pb.GetBundleRequest())
    assert "downstream-key" in [k.key_id for k in bundle.jwt_authorities]
    with pytest.raises(InvalidArgumentError, match=r"^missing jwt_authority$"):
        await bundle_service.publish_jwt_authority(bundle_pb.PublishJwtAuthorityRequest())
    with pytest.raises(InvalidArgumentError, match=r"^invalid jwt_authority: key_id is missing$"):
        await bundle_service.publish_jwt_authority(
            bundle_pb.PublishJwtAuthorityRequest(jwt_authority=pb.JwtKey(public_key=b"x"))
        )


async def test_federated_bundle_life_cycle(bundle_service: BundleService) -> None:
    created = await bundle_service.batch_create_federated_bundle(
        bundle_pb.BatchCreateFederatedBundleRequest(
            bundle=[federated("a.org"), federated("b.org"), federated("a.org")]
        )
    )
    assert [r.status.code for r in created.results] == [0, 0, 6]
    assert created.results[0].bundle.trust_domain == "a.org"
    assert created.results[2].bundle.trust_domain == ""

    assert (await bundle_service.count_bundles(bundle_pb.CountBundlesRequest())).count == 3
    listed = await bundle_service.list_federated_bundles(bundle_pb.ListFederatedBundlesRequest())
    assert [b.trust_domain for b in listed.bundles] == ["a.org", "b.org"]

    fetched = await bundle_service.get_federated_bundle(
        bundle_pb.GetFederatedBundleRequest(trust_domain="b.org")
    )
    assert fetched == created.results[1].bundle

    replacement = federated("a.org", refresh_hint=60)
    updated = await bundle_service.batch_update_federated_bundle(
        bundle_pb.BatchUpdateFederatedBundleRequest(
            bundle=[replacement, federated("c.org")],
            input_mask=pb.BundleMask(refresh_hint=True),
        )
    )
    assert [r.status.code for r in updated.results] == [0, 5]
    assert updated.results[0].bundle.refresh_hint == 60
    assert updated.results[0].bundle.x509_authorities == created.results[0].bundle.x509_authorities

    full = await bundle_service.batch_update_federated_bundle(
        bundle_pb.BatchUpdateFederatedBundleRequest(bundle=[replacement])
    )
    assert full.results[0].bundle.x509_authorities == replacement.x509_authorities

    set_response = await bundle_service.batch_set_federated_bundle(
        bundle_pb.BatchSetFederatedBundleRequest(
            bundle=[federated("c.org"), federated("a.org")],
            output_mask=pb.BundleMask(refresh_hint=True),
        )
    )
    assert [r.status.code for r in set_response.results] == [0, 0]
    assert set_response.results[0].bundle.x509_authorities == []
    assert set_response.results[0].bundle.refresh_hint == 300

    deleted = await bundle_service.batch_delete_federated_bundle(
        bundle_pb.BatchDeleteFederatedBundleRequest(trust_domains=["a.org", "nope.org", "b.org"])
    )
    assert [(r.status.code, r.trust_domain) for r in deleted.results] == [
        (0, "a.org"),
        (5, "nope.org"),
        (0, "b.org"),
    ]
    with pytest.raises(NotFoundError, match=r"'a.org' not found"):
        await bundle_service.get_federated_bundle(
            bundle_pb.GetFederatedBundleRequest(trust_domain="a.org")
        )


async def test_our_own_trust_domain_is_not_a_federated_one(bundle_service: BundleService) -> None:
    with pytest.raises(InvalidArgumentError, match=r"server's own trust domain"):
        await bundle_service.get_federated_bundle(
            bundle_pb.GetFederatedBundleRequest(trust_domain="example.org")
        )
    with pytest.raises(InvalidArgumentError, match=r"^invalid trust_domain"):
        await bundle_service.get_federated_bundle(
            bundle_pb.GetFederatedBundleRequest(trust_domain="Not A Domain")
        )
    own = federated("example.org")
    for response in (
        await bundle_service.batch_create_federated_bundle(
            bundle_pb.BatchCreateFederatedBundleRequest(bundle=[own])
        ),
        await bundle_service.batch_update_federated_bundle(
            bundle_pb.BatchUpdateFederatedBundleRequest(bundle=[own])
        ),
        await bundle_service.batch_set_federated_bundle(
            bundle_pb.BatchSetFederatedBundleRequest(bundle=[own])
        ),
    ):
        assert response.results[0].status.code == 3
        assert "server's own trust domain" in response.results[0].status.message
    deleted = await bundle_service.batch_delete_federated_bundle(
        bundle_pb.BatchDeleteFederatedBundleRequest(trust_domains=["example.org"])
    )
    assert deleted.results[0].status.code == 3
    assert (await bundle_service.get_bundle(bundle_pb.GetBundleRequest())).x509_authorities


async def test_batch_items_with_bad_bundles_fail_alone(bundle_service: BundleService) -> None:
    broken = federated("x.org")
    broken.x509_authorities = [pb.X509Certificate(asn1=b"junk")]
    response = await bundle_service.batch_create_federated_bundle(
        bundle_pb.BatchCreateFederatedBundleRequest(
            bundle=[broken, pb.Bundle(trust_domain="bad domain"), federated("y.org")]
        )
    )
    assert [r.status.code for r in response.results] == [3, 3, 0]
    assert "bundle[0].x509_authorities[0]" in response.results[0].status.message
    assert "bundle[1].trust_domain" in response.results[1].status.message
    with pytest.raises(NotFoundError):
        await bundle_service.get_federated_bundle(
            bundle_pb.GetFederatedBundleRequest(trust_domain="x.org")
        )


async def test_delete_modes(context: ServerContext, bundle_service: BundleService) -> None:
    await bundle_service.batch_create_federated_bundle(
        bundle_pb.BatchCreateFederatedBundleRequest(
            bundle=[federated("r.org"), federated("d.org"), federated("s.org")]
        )
    )
    parent = SpiffeId.parse("spiffe://example.org/spire/agent/x/y")
    stored: dict[str, RegistrationEntry] = {}
    for name in ("r.org", "d.org", "s.org"):
        stored[name] = await context.datastore.create_entry(
            RegistrationEntry(
                spiffe_id=SpiffeId.parse(f"spiffe://example.org/fed/{name}"),
                parent_id=parent,
                selectors=(Selector("unix", f"uid:{len(stored)}"),),
                federates_with=(TrustDomain(name),),
            )
        )

    restrict = await bundle_service.batch_delete_federated_bundle(
        bundle_pb.BatchDeleteFederatedBundleRequest(trust_domains=["r.org"])
    )
    assert restrict.results[0].status.code == 9
    assert await context.datastore.get_bundle(TrustDomain("r.org")) is not None

    delete = await bundle_service.batch_delete_federated_bundle(
        bundle_pb.BatchDeleteFederatedBundleRequest(trust_domains=["d.org"], mode=Mode(Mode.DELETE))
    )
    assert delete.results[0].status.code == 0
    assert await context.datastore.get_entry(stored["d.org"].id) is None

    dissociate = await bundle_service.batch_delete_federated_bundle(
        bundle_pb.BatchDeleteFederatedBundleRequest(
            trust_domains=["s.org"], mode=Mode(Mode.DISSOCIATE)
        )
    )
    assert dissociate.results[0].status.code == 0
    kept = await context.datastore.get_entry(stored["s.org"].id)
    assert kept is not None and kept.federates_with == ()


async def test_list_federated_bundles_pages(bundle_service: BundleService) -> None:
    await bundle_service.batch_create_federated_bundle(
        bundle_pb.BatchCreateFederatedBundleRequest(
            bundle=[federated(f"d{i}.org") for i in range(5)]
        )
    )
    seen: list[str] = []
    token = ""
    while True:
        page = await bundle_service.list_federated_bundles(
            bundle_pb.ListFederatedBundlesRequest(
                page_size=2, page_token=token, output_mask=pb.BundleMask()
            )
        )
        assert len(page.bundles) <= 2
        seen += [b.trust_domain for b in page.bundles]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"d{i}.org" for i in range(5)]
    with pytest.raises(InvalidArgumentError, match=r"^invalid page_size: -2 is negative$"):
        await bundle_service.list_federated_bundles(
            bundle_pb.ListFederatedBundlesRequest(page_size=-2)
        )


async def test_get_bundle_answer_is_encoded_once_per_bundle_revision(
    context: ServerContext, bundle_service: BundleService, fake_clock: FakeClock
) -> None:
    """Agents' GetBundle (no mask) is answered from kept bytes: the datastore is read again at
    most once a second, the bytes encoded again only when the bundle changed, and a write
    through this server (or a change of the trust epoch) is seen at the next call."""
    caller(CallerKind.ANY)
    expected = bytes(await bundle_service.get_bundle(bundle_pb.GetBundleRequest()))
    reply = bundle_service.reply
    first = await bundle_service.get_bundle_encoded(bundle_pb.GetBundleRequest())
    assert first.data == expected
    await fake_clock.advance(5)
    assert (await bundle_service.get_bundle_encoded(bundle_pb.GetBundleRequest())).data == expected
    assert reply.encodings == 1

    # Another server writes the bundle: seen within the read interval.
    await context.datastore.append_bundle(
        bundle_from_proto(
            pb.Bundle(trust_domain="example.org", x509_authorities=[pb.X509Certificate(ca_der())])
        )
    )
    assert (await bundle_service.get_bundle_encoded(bundle_pb.GetBundleRequest())).data == expected
    await fake_clock.advance(BUNDLE_READ_INTERVAL.total_seconds())
    changed = (await bundle_service.get_bundle_encoded(bundle_pb.GetBundleRequest())).data
    assert changed != expected
    assert changed == bytes(await bundle_service.get_bundle(bundle_pb.GetBundleRequest()))
    assert reply.encodings == 2

    # A write through this server is seen at once.
    await bundle_service.append_bundle(
        bundle_pb.AppendBundleRequest(jwt_authorities=[jwt_key("k9")])
    )
    appended = (await bundle_service.get_bundle_encoded(bundle_pb.GetBundleRequest())).data
    assert appended == bytes(await bundle_service.get_bundle(bundle_pb.GetBundleRequest()))
    assert appended != changed

    # A request with a mask is answered as before.
    masked = bundle_pb.GetBundleRequest(output_mask=pb.BundleMask(jwt_authorities=True))
    answer = await bundle_service.get_bundle_encoded(masked)
    assert answer.data == bytes(await bundle_service.get_bundle(masked))


async def test_callers_arriving_during_a_bundle_read_share_it(
    bundle_service: BundleService,
) -> None:
    caller(CallerKind.ANY)
    answers = await asyncio.gather(
        *(bundle_service.get_bundle_encoded(bundle_pb.GetBundleRequest()) for _ in range(20))
    )
    assert len({answer.data for answer in answers}) == 1
    assert bundle_service.reply.reads == 1
