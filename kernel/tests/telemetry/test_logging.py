"""Logging: formats, levels, file output, stdlib routing and secret redaction."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import stat
from collections.abc import Iterator, Mapping
from http import HTTPStatus
from pathlib import Path

import pytest
import structlog

from pyspire.telemetry.handler import HttpResponse
from pyspire.telemetry.http import serve_http
from pyspire.telemetry.logging import (
    LOG_FILE_MODE,
    REDACTED,
    LogFormat,
    configure_logging,
    is_secret_key,
    parse_log_format,
    parse_log_level,
)
from pyspire_sdk.errors import InvalidArgumentError


class FakeTerminal(io.StringIO):
    """An in-memory stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Leave the root logger and structlog as the test found them."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    configure_logging("INFO", "text", stream=io.StringIO())
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    logging.captureWarnings(False)
    structlog.reset_defaults()


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("DEBUG", logging.DEBUG),
        ("info", logging.INFO),
        ("Warn", logging.WARNING),
        ("WARNING", logging.WARNING),
        (" error ", logging.ERROR),
        (logging.ERROR, logging.ERROR),
    ],
)
def test_level_names_are_case_insensitive(name: str | int, level: int) -> None:
    assert parse_log_level(name) == level


def test_unknown_level_and_format_are_rejected_with_the_choices() -> None:
    with pytest.raises(InvalidArgumentError, match="invalid log level 'trace': expected one of"):
        parse_log_level("trace")
    with pytest.raises(InvalidArgumentError, match="expected one of text, json, auto"):
        parse_log_format("xml")
    assert parse_log_format("JSON") is LogFormat.JSON


def test_json_format_writes_one_parsable_object_per_event() -> None:
    stream = io.StringIO()
    assert configure_logging("INFO", "json", stream=stream) is LogFormat.JSON
    log = structlog.get_logger("pyspire.test")
    log.info("entry created", entry_id="e1", count=3)
    log.debug("not shown")
    (event,) = json_lines(stream.getvalue())
    assert event["msg"] == "entry created"
    assert event["entry_id"] == "e1"
    assert event["count"] == 3
    assert event["level"] == "info"
    assert event["logger"] == "pyspire.test"
    assert str(event["timestamp"]).endswith("Z")


def test_text_format_is_plain_without_a_terminal() -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", "text", stream=stream)
    structlog.get_logger("pyspire.test").debug("agent attested", agent="spiffe://td/agent")
    output = stream.getvalue()
    assert "agent attested" in output
    assert "agent=spiffe://td/agent" in output
    assert "\x1b[" not in output


def test_text_format_has_colours_on_a_terminal() -> None:
    stream = FakeTerminal()
    configure_logging("INFO", "text", stream=stream)
    structlog.get_logger().info("hello", who="world")
    assert "\x1b[" in stream.getvalue()


def test_auto_is_text_on_a_terminal_and_json_otherwise() -> None:
    assert configure_logging("INFO", "auto", stream=FakeTerminal()) is LogFormat.TEXT
    stream = io.StringIO()
    assert configure_logging("INFO", "auto", stream=stream) is LogFormat.JSON
    structlog.get_logger().warning("disk almost full")
    assert json_lines(stream.getvalue())[0]["level"] == "warning"


def test_level_filters_structlog_and_stdlib_alike() -> None:
    stream = io.StringIO()
    configure_logging("warn", "json", stream=stream)
    structlog.get_logger().info("quiet")
    logging.getLogger("grpclib.server").info("quiet too")
    structlog.get_logger().error("loud")
    logging.getLogger("grpclib.server").warning("library says %s", "hi")
    events = json_lines(stream.getvalue())
    assert [event["msg"] for event in events] == ["loud", "library says hi"]
    assert events[1]["logger"] == "grpclib.server"
    assert events[1]["level"] == "warning"


def test_stdlib_exceptions_render_as_structured_tracebacks() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("library").exception("failed")
    (event,) = json_lines(stream.getvalue())
    assert event["msg"] == "failed"
    assert "RuntimeError" in json.dumps(event["exception"])


def test_secrets_are_redacted_in_structlog_and_stdlib_events() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    structlog.get_logger().info(
        "attesting",
        join_token="s3cr3t-token",
        password="hunter2",
        clientSecret="abc",
        private_key="-----BEGIN PRIVATE KEY-----",
        config={"db": "main", "db_password": "pw", "nested": [{"api_key": "k"}]},
        token_hint=None,
        keys_path="/var/lib/keys.json",
    )
    output = stream.getvalue()
    for secret in ("s3cr3t-token", "hunter2", "abc", "BEGIN PRIVATE KEY", '"pw"', '"k"'):
        assert secret not in output
    (event,) = json_lines(output)
    assert event["join_token"] == REDACTED
    assert event["config"] == {
        "db": "main",
        "db_password": REDACTED,
        "nested": [{"api_key": REDACTED}],
    }
    assert event["token_hint"] is None
    assert event["keys_path"] == "/var/lib/keys.json"


@pytest.mark.parametrize(
    "key",
    ["token", "join_token", "password", "secret", "private_key", "privateKey", "client-secret"],
)
def test_secret_key_names(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["tokenizer", "keys_path", "key_id", "spiffe_id", "event"])
def test_ordinary_key_names(key: str) -> None:
    assert not is_secret_key(key)


def test_file_output_appends_with_mode_0640(tmp_path: Path) -> None:
    path = tmp_path / "server.log"
    old_umask = os.umask(0o002)
    try:
        configure_logging("INFO", "json", path)
        structlog.get_logger().info("first")
        configure_logging("INFO", "json", path)
        structlog.get_logger().info("second")
    finally:
        os.umask(old_umask)
    configure_logging("INFO", "json", stream=io.StringIO())  # closes the file handler
    assert stat.S_IMODE(path.stat().st_mode) == LOG_FILE_MODE
    assert [event["msg"] for event in json_lines(path.read_text())] == ["first", "second"]


def test_auto_format_writes_json_to_a_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.log"
    assert configure_logging("INFO", "auto", str(path)) is LogFormat.JSON


def test_existing_log_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "server.log"
    path.write_text("")
    path.chmod(0o600)
    configure_logging("INFO", "text", path)
    structlog.get_logger().info("appended")
    configure_logging("INFO", "text", stream=io.StringIO())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "appended" in path.read_text()


def test_unopenable_log_file_is_a_clear_error_and_keeps_the_old_setup(tmp_path: Path) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    missing = tmp_path / "no-such-dir" / "server.log"
    with pytest.raises(InvalidArgumentError) as caught:
        configure_logging("INFO", "json", missing)
    assert str(caught.value) == f"log_file: cannot open {str(missing)!r}: no such file or directory"
    structlog.get_logger().info("still here")
    assert json_lines(stream.getvalue())[0]["msg"] == "still here"


def test_reconfiguring_replaces_only_its_own_handler() -> None:
    foreign = logging.NullHandler()
    root = logging.getLogger()
    root.addHandler(foreign)
    try:
        configure_logging("INFO", "json", stream=io.StringIO())
        configure_logging("INFO", "json", stream=io.StringIO())
        ours = [handler for handler in root.handlers if handler is not foreign]
        assert foreign in root.handlers
        assert len([h for h in ours if isinstance(h, logging.StreamHandler)]) >= 1
        before = len(root.handlers)
        configure_logging("INFO", "text", stream=io.StringIO())
        assert len(root.handlers) == before
    finally:
        root.removeHandler(foreign)


def test_a_client_hanging_up_is_routine_and_logged_at_debug_only() -> None:
    library = logging.getLogger("grpclib.server")
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    library.info("Request was cancelled: %s", "Connection lost")
    library.info("Deadline exceeded")
    assert [event["msg"] for event in json_lines(stream.getvalue())] == ["Deadline exceeded"]
    verbose = io.StringIO()
    configure_logging("debug", "json", stream=verbose)
    library.info("Request was cancelled: %s", "Connection lost")
    [event] = json_lines(verbose.getvalue())
    assert event["msg"] == "Request was cancelled: Connection lost"
    assert event["level"] == "debug"


async def test_http_requests_are_not_logged_and_malformed_ones_only_at_debug() -> None:
    """The telemetry endpoints log no line per scrape or probe (aiohttp's access log is off),
    and a malformed request, which aiohttp logs at ERROR with a traceback, is routine."""

    async def answer(path: str, headers: Mapping[str, str]) -> HttpResponse:
        return HttpResponse(HTTPStatus.OK)

    async def exchange(port: int, request: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            async with asyncio.timeout(5):
                return await reader.read()
        finally:
            writer.close()

    async def send_requests() -> None:
        async with serve_http(answer, "127.0.0.1", 0, name="test") as server:
            good = b"GET /live HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            assert (await exchange(server.port, good)).startswith(b"HTTP/1.1 200 ")
            malformed = b"GET no-slash HTTP/1.1\r\nHost: a\r\n\r\n"
            assert (await exchange(server.port, malformed)).startswith(b"HTTP/1.0 400 ")

    def library_events(text: str) -> list[dict[str, object]]:
        return [event for event in json_lines(text) if str(event["logger"]).startswith("aiohttp")]

    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    await send_requests()
    assert library_events(stream.getvalue()) == []
    verbose = io.StringIO()
    configure_logging("debug", "json", stream=verbose)
    await send_requests()
    [event] = library_events(verbose.getvalue())
    assert (event["logger"], event["level"]) == ("aiohttp.server", "debug")
