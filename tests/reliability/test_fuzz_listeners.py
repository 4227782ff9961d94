"""Property-based fuzzing of every request type on all three listeners, and of their framing.

The listeners: the server's agent API (TCP, mutual TLS, the caller presenting a real agent SVID
it attested for), the server's admin unix socket, and the agent's Workload API (with the
security header, so the calls reach their handlers). For every method those listeners serve
(read from the descriptors, see :mod:`fuzzing`), hypothesis sends requests of its type, from
well-formed with edge values to mangled bytes. After every request the process must still run,
must not have answered UNKNOWN (an unhandled error), and must answer a good request on the same
listener.

Frame garbage: random bytes where the TLS handshake or the HTTP/2 preface belongs, random bytes
after a valid preface, and gRPC messages whose framing lies (a length longer or shorter than the
body, compression that was never negotiated). Same properties.

Examples per request type: about two dozen in the quick form (the suite's time budget; the same
examples every run, so the suite stays reproducible), 10,000 in the full form (new ones every
run).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from figures import Figures
from forms import by_form
from fuzzing import (
    LoopThread,
    Method,
    OpenConnection,
    call,
    grpc_frame,
    h2_request,
    h2_status,
    malformed,
    request_bytes,
    service_methods,
)
from grpclib.client import Channel
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from processes import (
    TRUST_DOMAIN,
    AgentSettings,
    Deployment,
    Process,
    ServerSettings,
    free_port,
    short_temp_dir,
)

from pyspire.agent.client import ServerClient
from pyspire.cli.commands.mint import build_csr
from pyspire.cli.workload_client import SECURITY_HEADER
from pyspire.transport.tls import build_client_context
from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

EXAMPLES = by_form(quick=20, full=10_000)
GARBAGE_EXAMPLES = by_form(quick=40, full=10_000)
WORKLOAD = f"spiffe://{TRUST_DOMAIN}/fuzz"
GARBAGE_READ_TIMEOUT = 2.0
ATTEST_ATTEMPTS = 20
ATTEST_RETRY = 0.25

SERVER_API = (
    "spire.api.server.agent.v1.Agent",
    "spire.api.server.bundle.v1.Bundle",
    "spire.api.server.entry.v1.Entry",
    "spire.api.server.svid.v1.SVID",
)
LISTENER_SERVICES: Mapping[str, tuple[str, ...]] = {
    "agent-api": SERVER_API,
    "admin": (*SERVER_API, "spire.api.server.debug.v1.Debug", "grpc.health.v1.Health"),
    "workload": ("SpiffeWorkloadAPI",),
}
GOOD_REQUESTS: Mapping[str, str] = {
    "agent-api": "/spire.api.server.bundle.v1.Bundle/GetBundle",
    "admin": "/grpc.health.v1.Health/Check",
    "workload": "/SpiffeWorkloadAPI/FetchX509Bundles",
}

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=by_form(quick=True, full=False),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass
class Listener:
    """One listener and how to reach it: a grpclib channel (living on the fuzzing loop) for
    calls, and a way to open a raw transport for frame garbage."""

    name: str
    process: Process
    channel: Channel
    open_connection: OpenConnection
    open_plain: OpenConnection
    """A transport below any TLS (the same as ``open_connection`` on unix sockets)."""
    metadata: Mapping[str, str] | None = None

    @property
    def methods(self) -> list[Method]:
        return service_methods(*LISTENER_SERVICES[self.name])

    @property
    def good(self) -> Method:
        [method] = [m for m in self.methods if m.path == GOOD_REQUESTS[self.name]]
        return method


class _JoinToken:
    """The agent side of join-token attestation, for the fuzzing client's own agent SVID (the
    part of the plugin's interface that attestation calls)."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def attestation_payload(self) -> bytes:
        return self._token.encode()

    async def answer_challenge(self, challenge: bytes) -> bytes:
        raise AssertionError("join token attestation has no challenge")


async def _attest(port: int, token: str) -> tuple[tuple[bytes, ...], PrivateKeyTypes]:
    """Attest as a new agent with ``token``: its SVID chain and private key. The deployment's
    agent attested from the same address moments ago, so a refusal by the per-address rate
    limit is retried until the limiter's bucket refills."""
    key, csr = await asyncio.to_thread(build_csr, SpiffeId.parse(WORKLOAD), ())
    client = ServerClient(
        trust_domain=TrustDomain(TRUST_DOMAIN), address="127.0.0.1", port=port, bundle=None
    )
    try:
        for _ in range(ATTEST_ATTEMPTS):
            try:
                result = await client.attest("join_token", cast(Any, _JoinToken(token)), csr)
            except UnavailableError as error:
                if "over the limit" not in str(error):
                    raise
                await asyncio.sleep(ATTEST_RETRY)
            else:
                return result.svid.cert_chain, key
        raise AssertionError(f"attestation refused {ATTEST_ATTEMPTS} times by the rate limit")
    finally:
        await client.close()


def _bundle_der(path: Path) -> list[bytes]:
    return [
        certificate.public_bytes(serialization.Encoding.DER)
        for certificate in x509.load_pem_x509_certificates(path.read_bytes())
    ]


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    root = short_temp_dir()
    port = free_port()
    deployed = Deployment.start(
        ServerSettings(root=root, port=port),
        AgentSettings(root=root, server_port=port, bootstrap_bundle=root / "bootstrap.pem"),
        [(WORKLOAD, [f"unix:uid:{os.getuid()}"])],
    )
    try:
        yield deployed
    finally:
        deployed.stop()


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    running = LoopThread()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def listeners(deployment: Deployment, loop: LoopThread) -> Iterator[dict[str, Listener]]:
    server, agent = deployment.server, deployment.agent
    port = server.settings.port
    chain, key = loop.run(_attest(port, server.generate_token()))
    context = build_client_context(_bundle_der(agent.settings.bootstrap_bundle), chain, key)

    def tcp(tls: ssl.SSLContext | None) -> OpenConnection:
        return lambda: asyncio.open_connection("127.0.0.1", port, ssl=tls)

    def unix(path: Path) -> OpenConnection:
        return lambda: asyncio.open_unix_connection(str(path))

    found = loop.call(
        lambda: {
            "agent-api": Listener(
                "agent-api",
                server,
                Channel("127.0.0.1", port, ssl=context),
                tcp(context),
                tcp(None),
            ),
            "admin": Listener(
                "admin",
                server,
                Channel(path=str(server.socket_path)),
                unix(server.socket_path),
                unix(server.socket_path),
            ),
            "workload": Listener(
                "workload",
                agent,
                Channel(path=str(agent.socket_path)),
                unix(agent.socket_path),
                unix(agent.socket_path),
                SECURITY_HEADER,
            ),
        }
    )
    try:
        yield found
    finally:
        for listener in found.values():
            loop.call(listener.channel.close)


def _answers(loop: LoopThread, listener: Listener) -> str:
    """What the listener answers to its good request (``OK`` when all is well)."""
    return loop.run(call(listener.channel, listener.good, [b""], listener.metadata))


def _check_alive(loop: LoopThread, listener: Listener, after: str) -> None:
    assert listener.process.running, f"the {listener.process.name} died after {after}"
    answer = _answers(loop, listener)
    assert answer == "OK", f"the good request got {answer} after {after}"


# -- requests ----------------------------------------------------------------------------------


REQUEST_CASES = [
    pytest.param(name, method, id=f"{name}:{method.path}")
    for name, services in LISTENER_SERVICES.items()
    for method in service_methods(*services)
]


def _payloads(method: Method) -> st.SearchStrategy[list[bytes]]:
    one = request_bytes(method.request)
    if method.client_streaming:
        return st.lists(one, min_size=1, max_size=3)
    return one.map(lambda data: [data])


@pytest.mark.parametrize(("listener_name", "method"), REQUEST_CASES)
def test_fuzzed_requests(
    listeners: dict[str, Listener],
    loop: LoopThread,
    figures: Figures,
    listener_name: str,
    method: Method,
) -> None:
    listener = listeners[listener_name]
    statuses: Counter[str] = Counter()

    def requests_never_break_the_listener(payloads: list[bytes]) -> None:
        status = loop.run(call(listener.channel, method, payloads, listener.metadata))
        statuses[status] += 1
        assert status != "UNKNOWN", f"{method} answered UNKNOWN to {payloads!r}"
        _check_alive(loop, listener, f"{method} got {payloads!r}")

    check = given(_payloads(method))(requests_never_break_the_listener)
    for data in malformed(method.request):
        check = example([data])(check)
    try:
        FUZZ_SETTINGS(check)()
    finally:
        figures.add(
            examples=sum(statuses.values()),
            statuses=",".join(f"{name}:{n}" for name, n in statuses.most_common()),
        )
        figures.report()


# -- frame garbage -----------------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@dataclass(frozen=True)
class Garbage:
    """One connection's worth of garbage: where it goes and what it is."""

    kind: str
    data: bytes
    method_index: int = 0
    compressed: bool = False
    declared: int | None = None


GARBAGE = st.one_of(
    st.builds(Garbage, kind=st.just("before-tls"), data=st.binary(min_size=1, max_size=512)),
    st.builds(Garbage, kind=st.just("before-preface"), data=st.binary(min_size=1, max_size=512)),
    st.builds(Garbage, kind=st.just("after-preface"), data=st.binary(min_size=1, max_size=512)),
    st.builds(
        Garbage,
        kind=st.just("lying-frame"),
        data=st.binary(max_size=256),
        method_index=st.integers(0, 100),
        compressed=st.booleans(),
        declared=st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    ),
)


def _garbage_examples(listener: Listener) -> list[Garbage]:
    """Garbage of every kind tried first in every run: a TLS record announcing 64 KiB, an
    HTTP/1.1 request, an HTTP/2 WINDOW_UPDATE of zero (a connection error), and the good
    request's message framed honestly, with a length it does not have, claiming compression,
    and holding bytes that do not decode."""
    good = listener.methods.index(listener.good)
    return [
        Garbage("before-tls", b"\x16\x03\x01\xff\xff"),
        Garbage("before-preface", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        Garbage("after-preface", b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
        Garbage("lying-frame", b"", good),
        Garbage("lying-frame", b"", good, declared=2**32 - 1),
        Garbage("lying-frame", b"\x08\x01", good, declared=1),
        Garbage("lying-frame", b"", good, compressed=True),
        Garbage("lying-frame", b"\x00", good),
    ]


async def _send_garbage(listener: Listener, garbage: Garbage) -> str:
    """Send one piece of garbage on a fresh connection; for a lying gRPC frame the status
    the listener answered with, otherwise ``SENT``."""
    opener = listener.open_plain if garbage.kind == "before-tls" else listener.open_connection
    reader, writer = await opener()
    try:
        if garbage.kind == "lying-frame":
            methods = listener.methods
            method = methods[garbage.method_index % len(methods)]
            body = grpc_frame(
                garbage.data, compressed=garbage.compressed, declared=garbage.declared
            )
            connection, opening = h2_request(method.path, body, listener.metadata)
            writer.write(opening)
            await writer.drain()
            return await h2_status(connection, reader, writer, GARBAGE_READ_TIMEOUT)
        writer.write(PREFACE + garbage.data if garbage.kind == "after-preface" else garbage.data)
        await writer.drain()
        return "SENT"
    except (ConnectionError, OSError):
        return "CLOSED"
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError, ssl.SSLError):
            await writer.wait_closed()


@pytest.mark.parametrize("listener_name", list(LISTENER_SERVICES))
def test_frame_garbage(
    listeners: dict[str, Listener], loop: LoopThread, figures: Figures, listener_name: str
) -> None:
    listener = listeners[listener_name]
    outcomes: Counter[str] = Counter()

    def garbage_never_breaks_the_listener(garbage: Garbage) -> None:
        outcome = loop.run(_send_garbage(listener, garbage))
        outcomes[f"{garbage.kind}:{outcome}"] += 1
        assert outcome != "UNKNOWN", f"{garbage!r} was answered UNKNOWN"
        _check_alive(loop, listener, repr(garbage))

    check = given(GARBAGE)(garbage_never_breaks_the_listener)
    for garbage in _garbage_examples(listener):
        check = example(garbage)(check)
    try:
        settings(FUZZ_SETTINGS, max_examples=GARBAGE_EXAMPLES)(check)()
    finally:
        figures.add(
            examples=sum(outcomes.values()),
            outcomes=",".join(f"{name}:{n}" for name, n in sorted(outcomes.items())),
        )
        figures.report()
