"""The SDK's HTTP client against real loopback servers: bounds, TLS, errors without secrets."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from aiohttp import web

from pyspire_sdk.errors import InvalidArgumentError, UnavailableError
from pyspire_sdk.http import HttpClient, HttpError, HttpStatusError, redacted_url
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing.loopback import serve_loopback
from pyspire_sdk.testing.pki import TestAuthority

AUTHORITY = TestAuthority(TrustDomain("loopback.test"))


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"hello": request.query.get("name", "")})


async def big(request: web.Request) -> web.Response:
    return web.Response(body=b"x" * 5000)


async def streamed(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    for _ in range(10):
        await response.write(b"y" * 1000)
    await response.write_eof()
    return response


RELEASE_SLOW: dict[str, asyncio.Event] = {}


async def slow(request: web.Request) -> web.Response:
    await RELEASE_SLOW["event"].wait()
    return web.Response(text="late")


async def moved(request: web.Request) -> web.Response:
    raise web.HTTPFound("/hello")


async def missing(request: web.Request) -> web.Response:
    raise web.HTTPNotFound(text="secret-in-body")


async def echo(request: web.Request) -> web.Response:
    if request.content_type == "application/json":
        return web.json_response({"json": await request.json()})
    return web.json_response({"form": dict(await request.post())})


ROUTES = [
    ("GET", "/hello", hello),
    ("GET", "/big", big),
    ("GET", "/streamed", streamed),
    ("GET", "/slow", slow),
    ("GET", "/moved", moved),
    ("GET", "/missing", missing),
    ("POST", "/echo", echo),
]


async def test_https_with_the_configured_ca(tmp_path: Path) -> None:
    async with serve_loopback(ROUTES, tls=AUTHORITY, directory=tmp_path) as server:
        client = HttpClient(ca_file=server.ca_file)
        async with client:
            answer = await client.get(server.url + "/hello", params={"name": "a b"})
            assert answer.status == 200
            assert answer.json_object() == {"hello": "a b"}
            assert answer.headers["content-type"].startswith("application/json")
            posted = await client.post(server.url + "/echo", json_body={"k": 1})
            assert posted.json() == {"json": {"k": 1}}
            form = await client.post(server.url + "/echo", form={"grant_type": "x"})
            assert form.json() == {"form": {"grant_type": "x"}}
    assert [request.path for request in server.requests] == ["/hello", "/echo", "/echo"]
    assert server.requests[0].query == {"name": "a b"}


async def test_https_refuses_a_server_the_ca_did_not_sign(tmp_path: Path) -> None:
    other = TestAuthority(TrustDomain("other.test"))
    other_ca = tmp_path / "other.pem"
    other_ca.write_bytes(other.pem)
    async with serve_loopback(ROUTES, tls=AUTHORITY, directory=tmp_path) as server:
        client = HttpClient(ca_file=other_ca)
        async with client:
            with pytest.raises(HttpError, match="tls failed") as caught:
                await client.get(server.url + "/hello?token=secret")
    assert "secret" not in str(caught.value)
    assert str(caught.value).startswith(f"GET {server.url}/hello: ")


async def test_a_body_over_the_bound_fails_whether_announced_or_streamed() -> None:
    async with serve_loopback(ROUTES) as server:
        async with HttpClient(max_response_bytes=4096) as client:
            with pytest.raises(HttpError, match="larger than 4096 bytes"):
                await client.get(server.url + "/big")
            with pytest.raises(HttpError, match="larger than 4096 bytes"):
                await client.get(server.url + "/streamed")
        async with HttpClient(max_response_bytes=20_000) as client:
            assert len((await client.get(server.url + "/streamed")).body) == 10_000


async def test_a_slow_endpoint_times_out() -> None:
    RELEASE_SLOW["event"] = release = asyncio.Event()
    async with serve_loopback(ROUTES) as server:
        async with HttpClient(timeout=0.3) as client:
            with pytest.raises(HttpError, match=r"timed out after 0.3s"):
                await client.get(server.url + "/slow")
        release.set()


async def test_redirects_are_not_followed_and_statuses_are_errors() -> None:
    async with serve_loopback(ROUTES) as server, HttpClient() as client:
        with pytest.raises(HttpStatusError, match="HTTP 302 Found") as caught:
            await client.get(server.url + "/moved")
        assert caught.value.status == 302
        with pytest.raises(HttpStatusError, match="HTTP 404 Not Found") as missing_error:
            await client.get(server.url + "/missing")
        assert "secret-in-body" not in str(missing_error.value)
        answer = await client.request("GET", server.url + "/missing", expect_ok=False)
        assert answer.status == 404
        with pytest.raises(HttpError, match="not JSON"):
            answer.json()
    assert [request.path for request in server.requests] == ["/moved", "/missing", "/missing"]


async def test_connection_refused_names_the_url_without_credentials() -> None:
    async with serve_loopback(ROUTES) as server:
        url = server.url
    async with HttpClient() as client:
        with pytest.raises(HttpError, match="cannot connect") as caught:
            await client.get(url.replace("://", "://user:pw@") + "/x?sig=abc")
    assert isinstance(caught.value, UnavailableError)
    assert "pw" not in str(caught.value)
    assert "abc" not in str(caught.value)


@pytest.mark.parametrize("url", ["ftp://host/x", "/relative", "http://", "http://h:99999/"])
async def test_urls_that_are_not_absolute_http_are_refused(url: str) -> None:
    async with HttpClient() as client:
        with pytest.raises(InvalidArgumentError, match="url"):
            await client.get(url)


async def test_an_unreadable_ca_file_fails_open(tmp_path: Path) -> None:
    client = HttpClient(ca_file=tmp_path / "missing.pem")
    with pytest.raises(UnavailableError, match=r"missing\.pem"):
        await client.open()
    await client.close()


async def test_a_closed_client_refuses_requests() -> None:
    client = HttpClient()
    await client.close()
    with pytest.raises(UnavailableError, match="closed"):
        await client.get("http://127.0.0.1:1/")


def test_redacted_url_keeps_only_where_it_goes() -> None:
    assert redacted_url("https://u:p@host:8443/a/b?x=1#f") == "https://host:8443/a/b"
    assert redacted_url("http://[::1]:80/p") == "http://[::1]:80/p"
    assert redacted_url("http://h:bad/") == "(malformed url)"


def test_importing_the_module_does_not_import_aiohttp() -> None:
    import subprocess

    program = (
        "import sys, pyspire_sdk.http, pyspire_sdk.jwks; "
        "print(any(n.split('.')[0] == 'aiohttp' for n in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


async def test_a_unix_socket_carries_the_requests(tmp_path: Path) -> None:
    application = web.Application()
    application.router.add_get("/hello", hello)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    socket = tmp_path / "daemon.sock"
    try:
        await web.UnixSite(runner, str(socket)).start()
        async with HttpClient(unix_socket=socket) as client:
            answer = await client.get("http://daemon/hello", params={"name": "local"})
        assert answer.json_object() == {"hello": "local"}
        async with HttpClient(unix_socket=tmp_path / "absent.sock") as client:
            with pytest.raises(HttpError, match="cannot connect"):
                await client.get("http://daemon/hello")
    finally:
        await runner.cleanup()


async def test_hostname_and_chain_checks_can_be_relaxed_one_at_a_time(tmp_path: Path) -> None:
    # The certificate names "node-1" only, as a kubelet's does, and is reached at 127.0.0.1.
    async with serve_loopback(
        ROUTES, tls=AUTHORITY, directory=tmp_path, tls_hosts=("node-1",)
    ) as server:
        async with HttpClient(ca_file=server.ca_file) as strict:
            with pytest.raises(HttpError, match="tls failed"):
                await strict.get(server.url + "/hello")
        async with HttpClient(ca_file=server.ca_file, check_hostname=False) as chain_only:
            assert (await chain_only.get(server.url + "/hello")).status == 200
        other = TestAuthority(TrustDomain("other.test"))
        other_ca = tmp_path / "other.pem"
        other_ca.write_bytes(other.pem)
        async with HttpClient(ca_file=other_ca, check_hostname=False) as wrong_chain:
            with pytest.raises(HttpError, match="tls failed"):
                await wrong_chain.get(server.url + "/hello")
        async with HttpClient(verify=False) as unverified:
            assert (await unverified.get(server.url + "/hello")).status == 200


async def test_a_client_certificate_is_presented(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from pyspire_sdk.spiffeid import SpiffeId

    clients = TestAuthority(TrustDomain("clients.test"))
    svid = clients.issue(SpiffeId.parse("spiffe://clients.test/agent"))
    certificate = tmp_path / "client.pem"
    key = tmp_path / "client.key"
    leaf = x509.load_der_x509_certificate(svid.cert_chain[0])
    certificate.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    private = serialization.load_der_private_key(svid.private_key, password=None)
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    async with serve_loopback(
        ROUTES, tls=AUTHORITY, directory=tmp_path / "server", client_ca=clients
    ) as server:
        async with HttpClient(
            ca_file=server.ca_file, client_certificate=certificate, client_key=key
        ) as client:
            assert (await client.get(server.url + "/hello")).status == 200
        async with HttpClient(ca_file=server.ca_file) as anonymous:
            with pytest.raises(HttpError):
                await anonymous.get(server.url + "/hello")
    with pytest.raises(InvalidArgumentError, match="go together"):
        HttpClient(client_certificate=certificate)
    async with HttpClient(client_certificate=tmp_path / "no.pem", client_key=key) as broken:
        with pytest.raises(UnavailableError, match=r"no\.pem"):
            await broken.open()
