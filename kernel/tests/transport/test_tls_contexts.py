"""How TLS contexts take their identity and trust: in memory where the system allows, from a
private directory elsewhere, and with a clear error for anything that does not load.

Each test runs a real TLS 1.3 handshake between the contexts built (through memory BIOs, no
socket), so a context that loaded the wrong thing cannot pass."""

from __future__ import annotations

import errno
import os
import ssl
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from pyspire.transport import tls
from pyspire.transport.tls import build_client_context, build_server_context
from pyspire_sdk.errors import InvalidArgumentError

from .test_transport import der, issue

Issued = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> bytes | None:
    """Run a TLS handshake between the two contexts; the client certificate (DER) the server
    received, or None."""
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(client_in, client_out, server_side=False)
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", client_side), ("server", server_side)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if all(done.values()):
            # TLS 1.3: the server checks the client's certificate in its last flight.
            server_side.read(1) if server_in.pending else None
            return server_side.getpeercert(binary_form=True)
    raise AssertionError("the handshake did not finish")


@pytest.fixture
def ca() -> Issued:
    return issue("spiffe://example.org")


@pytest.fixture
def server_context(ca: Issued) -> ssl.SSLContext:
    cert, key = issue("spiffe://example.org/spire/server", ca)
    return build_server_context([der(cert)], key, [der(ca[0])])


def test_the_identity_is_presented(ca: Issued, server_context: ssl.SSLContext) -> None:
    agent, key = issue("spiffe://example.org/spire/agent/a", ca)
    client = build_client_context([der(ca[0])], [der(agent)], key)
    assert handshake(client, server_context) == der(agent)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="memfd_create is Linux only")
def test_on_linux_the_identity_never_reaches_a_file(
    ca: Issued, server_context: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_directory(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the private key went to a directory")

    monkeypatch.setattr(tempfile, "TemporaryDirectory", no_directory)
    monkeypatch.setattr(tempfile, "mkdtemp", no_directory)
    agent, key = issue("spiffe://example.org/spire/agent/a", ca)
    before = len(os.listdir("/proc/self/fd"))
    contexts = [build_client_context([der(ca[0])], [der(agent)], key) for _ in range(10)]
    assert len(os.listdir("/proc/self/fd")) == before  # every in-memory file is closed
    assert handshake(contexts[-1], server_context) == der(agent)


def _refused(*args: Any) -> int:
    raise OSError(errno.ENOSYS, "memfd_create is not allowed here")


@pytest.mark.parametrize("without", ["system", "sandbox"])
def test_elsewhere_a_private_directory_holds_the_identity_while_it_loads(
    ca: Issued,
    server_context: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    without: str,
) -> None:
    if without == "system":
        monkeypatch.setattr(tls, "_IN_MEMORY_FILES", False)
    else:
        monkeypatch.setattr(os, "memfd_create", _refused, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen: list[tuple[int, int]] = []
    load = ssl.SSLContext.load_cert_chain

    def spy(self: ssl.SSLContext, certfile: Any, *args: Any, **kwargs: Any) -> None:
        path = Path(certfile)
        seen.append((stat.S_IMODE(path.parent.stat().st_mode), stat.S_IMODE(path.stat().st_mode)))
        load(self, certfile, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", spy)
    agent, key = issue("spiffe://example.org/spire/agent/a", ca)
    client = build_client_context([der(ca[0])], [der(agent)], key)
    assert seen == [(0o700, 0o600)]
    assert list(tmp_path.iterdir()) == []  # deleted after loading
    assert handshake(client, server_context) == der(agent)


def test_every_authority_of_the_bundle_is_trusted(ca: Issued) -> None:
    other = issue("spiffe://example.org/ca/second")  # another name: no key identifiers here
    cert, key = issue("spiffe://example.org/spire/server", other)
    server = build_server_context([der(cert)], key, [der(ca[0])])
    client = build_client_context([der(ca[0]), der(other[0])])
    assert handshake(client, server) is None
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(build_client_context([der(ca[0])]), server)


def test_a_bundle_with_an_invalid_certificate_is_refused_by_name(ca: Issued) -> None:
    # Cut short, the last certificate looks to OpenSSL like the end of the data.
    for broken in (b"not a certificate", der(ca[0])[:-10]):
        with pytest.raises(InvalidArgumentError, match="the trust bundle holds an invalid"):
            build_client_context([der(ca[0]), broken])


def test_an_identity_that_does_not_load_is_refused_by_name(ca: Issued) -> None:
    agent, key = issue("spiffe://example.org/spire/agent/a", ca)
    with pytest.raises(InvalidArgumentError, match="certificate chain holds an invalid"):
        build_client_context([der(ca[0])], [b"not a certificate"], key)
    _, stranger = issue("spiffe://example.org/spire/agent/b", ca)
    with pytest.raises(InvalidArgumentError, match="chain and key do not load"):
        build_client_context([der(ca[0])], [der(agent)], stranger)
