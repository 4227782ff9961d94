"""SVID store metadata, StoredSvid, and SPIRE's put/delete semantics on a directory store."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins import svid_store
from pyspire_sdk.plugins.svid_store import StoredSvid, SvidStore, store_metadata
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)
KEY = b"-private-key-der-"


def _svid(**changes: Any) -> StoredSvid:
    fields: dict[str, Any] = {
        "spiffe_id": SpiffeId.parse("spiffe://example.org/db"),
        "cert_chain": (b"leaf", b"intermediate"),
        "private_key": KEY,
        "bundle": (b"root",),
        "expires_at": EXPIRES,
        "metadata": ("name:db-secret",),
    }
    fields.update(changes)
    return StoredSvid(**fields)


class DirectoryStore:
    """Stores each SVID as a JSON file named by the ``name:<x>`` metadata value."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def configure(self, config: Any, host: HostServices) -> None:
        return None

    async def close(self) -> None:
        return None

    def _path(self, metadata: tuple[str, ...]) -> Path:
        names = [value.removeprefix("name:") for value in metadata if value.startswith("name:")]
        unknown = [value for value in metadata if not value.startswith("name:")]
        if unknown:
            raise InvalidArgumentError(f"metadata {unknown[0]!r} is not understood")
        if len(names) != 1:
            raise InvalidArgumentError("metadata must hold exactly one 'name:<secret>'")
        return self.directory / f"{names[0]}.json"

    async def put_x509_svid(self, svid: StoredSvid) -> None:
        document = {
            "spiffe_id": str(svid.spiffe_id),
            "chain": [der.hex() for der in svid.cert_chain],
            "federated": sorted(td.name for td in svid.federated_bundles),
        }
        self._path(svid.metadata).write_text(json.dumps(document))

    async def delete_x509_svid(self, metadata: tuple[str, ...]) -> None:
        self._path(metadata).unlink(missing_ok=True)


def test_directory_store_is_an_svid_store() -> None:
    assert isinstance(DirectoryStore(Path()), SvidStore)


def test_store_metadata_takes_the_values_of_the_store_type() -> None:
    selectors = [
        Selector("aws_secretsmanager", "secretname:web"),
        Selector("unix", "uid:0"),
        Selector("aws_secretsmanager", "arn:x"),
        Selector("aws_secretsmanager", "arn:x"),
    ]
    assert store_metadata("aws_secretsmanager", selectors) == ("arn:x", "secretname:web")
    assert store_metadata("gcp_secretmanager", selectors) == ()


async def test_put_replaces_and_delete_is_idempotent(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    await store.put_x509_svid(_svid())
    await store.put_x509_svid(_svid(cert_chain=(b"new-leaf",)))
    assert json.loads((tmp_path / "db-secret.json").read_text())["chain"] == [b"new-leaf".hex()]

    await store.delete_x509_svid(("name:db-secret",))
    await store.delete_x509_svid(("name:db-secret",))
    assert not (tmp_path / "db-secret.json").exists()


async def test_unknown_metadata_is_an_invalid_argument(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="metadata 'region:x' is not understood"):
        await DirectoryStore(tmp_path).put_x509_svid(_svid(metadata=("name:a", "region:x")))


def test_private_key_never_appears_in_repr() -> None:
    assert KEY.decode() not in repr(_svid())
    assert "private_key" not in repr(_svid())


def test_federated_bundles_are_read_only_copies() -> None:
    federated = {TrustDomain("other.org"): [b"other-root"]}
    svid = _svid(federated_bundles=federated)
    federated[TrustDomain("third.org")] = [b"x"]
    assert dict(svid.federated_bundles) == {TrustDomain("other.org"): (b"other-root",)}
    with pytest.raises(TypeError):
        svid.federated_bundles[TrustDomain("x.org")] = ()  # type: ignore[index]
    assert hash(svid) == hash(_svid(federated_bundles=federated))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cert_chain": ()}, "cert_chain is empty"),
        ({"bundle": ()}, "bundle is empty"),
        ({"cert_chain": (b"",)}, r"cert_chain\[0\] is not a non-empty DER"),
        ({"private_key": b""}, "private_key is empty"),
        ({"expires_at": datetime(2030, 1, 1)}, "expires_at must be timezone-aware"),
        ({"metadata": ("",)}, "metadata values must be non-empty strings"),
        ({"federated_bundles": {"other.org": (b"r",)}}, "is not a TrustDomain"),
        (
            {"federated_bundles": {TrustDomain("other.org"): ()}},
            r"federated_bundles\[other.org\] is empty",
        ),
    ],
)
def test_stored_svid_refuses_incomplete_records(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        _svid(**changes)


def test_hookspec_is_documented() -> None:
    hook = svid_store.pyspire_svid_stores
    assert hasattr(hook, "pyspire_spec")
    assert hook.__doc__ and "selector type" in hook.__doc__
