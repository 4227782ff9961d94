"""The contract suite every bundle publisher passes.

Subclass :class:`BundlePublisherContract` and provide two fixtures: ``bundle_publisher``, a
configured publisher writing the ``spiffe`` format, and ``read_published``, an async callable
returning the bytes at the publisher's destination (``None`` while there is none), read the
way a consumer reads them (the file, the object, the config map key)::

    class TestMyPublisher(BundlePublisherContract):
        @pytest_asyncio.fixture
        async def bundle_publisher(self, host_services, tmp_path):
            ...

        @pytest.fixture
        def read_published(self, tmp_path):
            async def read():
                ...
            return read

The suite checks what :class:`~pyspire_sdk.plugins.bundle_publisher.BundlePublisher`
promises: the destination holds the bundle after ``publish_bundle`` returns, a change replaces
it, publishing the same bundle again is harmless, and when publishes are asked faster than they
complete the newest bundle is the one that stays (no lost update).
"""

from __future__ import annotations

__all__ = ["BundlePublisherContract", "ReadPublished"]

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeAlias

import pytest

from pyspire_sdk.bundle import Bundle
from pyspire_sdk.bundle_formats import BundleFormat, encode_bundle
from pyspire_sdk.plugins.bundle_publisher import BundlePublisher
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing.pki import TestAuthority, jwt_authority

ReadPublished: TypeAlias = Callable[[], Awaitable[bytes | None]]
"""Reads what the publisher under test published, ``None`` when nothing is there."""

_TRUST_DOMAIN = TrustDomain("example.org")
_BURST = 8


def _bundle(sequence_number: int = 1) -> Bundle:
    authority = TestAuthority(_TRUST_DOMAIN)
    return authority.bundle(
        jwt_authorities=[jwt_authority(authority.key, f"key-{sequence_number}")],
        sequence_number=sequence_number,
    )


class BundlePublisherContract:
    """Tests every bundle publisher must pass; see the module documentation."""

    @pytest.mark.asyncio
    async def test_publishes_the_bundle_as_a_spiffe_document(
        self, bundle_publisher: BundlePublisher, read_published: ReadPublished
    ) -> None:
        bundle = _bundle()
        await bundle_publisher.publish_bundle(bundle)
        published = await read_published()
        assert published is not None, "nothing was published"
        assert Bundle.from_spiffe_json(_TRUST_DOMAIN, published) == bundle
        assert published == encode_bundle(bundle, BundleFormat.SPIFFE)

    @pytest.mark.asyncio
    async def test_a_changed_bundle_replaces_the_published_one(
        self, bundle_publisher: BundlePublisher, read_published: ReadPublished
    ) -> None:
        first = _bundle(1)
        await bundle_publisher.publish_bundle(first)
        second = first.with_changes(x509_authorities=(TestAuthority(_TRUST_DOMAIN).x509_authority,))
        await bundle_publisher.publish_bundle(second)
        assert await read_published() == encode_bundle(second, BundleFormat.SPIFFE)

    @pytest.mark.asyncio
    async def test_publishing_the_same_bundle_again_is_harmless(
        self, bundle_publisher: BundlePublisher, read_published: ReadPublished
    ) -> None:
        bundle = _bundle()
        await bundle_publisher.publish_bundle(bundle)
        await bundle_publisher.publish_bundle(bundle)
        assert await read_published() == encode_bundle(bundle, BundleFormat.SPIFFE)

    @pytest.mark.asyncio
    async def test_the_newest_of_a_burst_of_changes_is_the_one_that_stays(
        self, bundle_publisher: BundlePublisher, read_published: ReadPublished
    ) -> None:
        bundles = [_bundle(sequence) for sequence in range(1, _BURST + 1)]
        tasks = []
        for bundle in bundles:
            tasks.append(asyncio.create_task(bundle_publisher.publish_bundle(bundle)))
            await asyncio.sleep(0)  # each call starts before the next is asked
        await asyncio.gather(*tasks)
        assert await read_published() == encode_bundle(bundles[-1], BundleFormat.SPIFFE)
