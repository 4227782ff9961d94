"""Nonces and the JSON messages of challenge/response node attestors."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from pyspire_sdk.challenge import (
    MAX_MESSAGE_BYTES,
    NONCE_SIZE,
    JsonMessage,
    combined_digest,
    encode_message,
    new_nonce,
)
from pyspire_sdk.errors import InvalidArgumentError


def test_nonces_are_fresh_and_of_the_fixed_size() -> None:
    nonces = {new_nonce() for _ in range(64)}
    assert len(nonces) == 64
    assert {len(nonce) for nonce in nonces} == {NONCE_SIZE}


def test_the_combined_digest_is_sha256_of_server_then_agent_nonce() -> None:
    server, agent = b"s" * 32, b"a" * 32
    assert combined_digest(server, agent) == hashlib.sha256(server + agent).digest()
    assert combined_digest(server, agent) != combined_digest(agent, server)


@pytest.mark.parametrize(
    ("server", "agent", "message"),
    [
        (b"s" * 31, b"a" * 32, "server nonce is 31 bytes long, expected 32"),
        (b"s" * 32, b"", "agent nonce is 0 bytes long, expected 32"),
        (b"s" * 32, b"a" * 33, "agent nonce is 33 bytes long"),
    ],
)
def test_a_nonce_of_another_size_is_refused(server: bytes, agent: bytes, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        combined_digest(server, agent)


def test_messages_are_written_as_go_marshals_them() -> None:
    written = encode_message(
        {"rsa_signature": {"nonce": b"\x00\xff" * 2}, "ecdsa_signature": None, "n": [b"a"]}
    )
    assert written == (
        b'{"rsa_signature":{"nonce":"AP8A/w=="},"ecdsa_signature":null,"n":["YQ=="]}'
    )


def test_a_message_reads_back_field_by_field() -> None:
    message = JsonMessage.decode(
        encode_message(
            {
                "certificates": [b"one", b"two"],
                "sig": {"nonce": b"n" * 32, "r": b"\x01"},
                "absent": None,
                "hostname": "node1",
                "port": 8080,
            }
        ),
        "payload",
    )
    assert message.binary_list("certificates") == [b"one", b"two"]
    inner = message.optional_object("sig")
    assert inner is not None
    assert inner.binary("nonce") == b"n" * 32
    assert inner.optional_binary("s") is None
    assert message.optional_object("absent") is None
    assert message.text("hostname") == "node1"
    assert message.integer("port") == 8080
    assert message.has("hostname")
    assert not message.has("absent")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe", "payload is not UTF-8 text"),
        (b"{nope", "payload is not JSON"),
        (b"[1]", "payload is an array, expected a JSON object"),
        (b"null", "payload is null, expected a JSON object"),
        (b'"text"', "payload is a string, expected a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "payload is "),
    ],
)
def test_what_is_not_one_json_object_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        JsonMessage.decode(data, "payload")


def test_a_message_over_the_limit_is_refused_before_it_is_parsed() -> None:
    data = b'{"a":"' + b"x" * MAX_MESSAGE_BYTES + b'"}'
    with pytest.raises(InvalidArgumentError, match="more than"):
        JsonMessage.decode(data, "payload")


@pytest.mark.parametrize(
    ("document", "read", "message"),
    [
        ({}, lambda m: m.text("hostname"), "payload.hostname is missing"),
        ({"hostname": None}, lambda m: m.text("hostname"), "payload.hostname is null"),
        ({"hostname": 7}, lambda m: m.text("hostname"), "is a number, expected a string"),
        ({"port": "80"}, lambda m: m.integer("port"), "payload.port is a string"),
        ({"port": True}, lambda m: m.integer("port"), "payload.port is a boolean"),
        ({"port": 1.5}, lambda m: m.integer("port"), "payload.port is a number"),
        ({"c": ["!!"]}, lambda m: m.binary_list("c"), r"payload.c\[0\] is not standard base64"),
        ({"c": [7]}, lambda m: m.binary_list("c"), r"payload.c\[0\] is a number"),
        ({"c": "YQ=="}, lambda m: m.binary_list("c"), "payload.c is a string, expected an array"),
        ({}, lambda m: m.binary_list("c"), "payload.c is missing"),
        ({"n": "YQ"}, lambda m: m.binary("n"), "payload.n is not standard base64"),
        ({"n": "_-8="}, lambda m: m.binary("n"), "payload.n is not standard base64"),
        ({"n": "é"}, lambda m: m.binary("n"), "payload.n is not standard base64"),
        ({"o": []}, lambda m: m.optional_object("o"), "payload.o is an array"),
    ],
)
def test_a_bad_field_is_named_with_the_reason(document: object, read: object, message: str) -> None:
    parsed = JsonMessage.decode(json.dumps(document).encode(), "payload")
    with pytest.raises(InvalidArgumentError, match=message):
        read(parsed)  # type: ignore[operator]


def test_null_reads_as_an_empty_list_as_in_go() -> None:
    assert JsonMessage.decode(b'{"c":null}', "payload").binary_list("c") == []


def test_nested_paths_name_the_whole_way() -> None:
    message = JsonMessage.decode(b'{"rsa_signature":{"nonce":7}}', "challenge")
    inner = message.optional_object("rsa_signature")
    assert inner is not None
    with pytest.raises(InvalidArgumentError, match=r"challenge\.rsa_signature\.nonce is a number"):
        inner.binary("nonce")


def test_base64_is_standard_with_padding() -> None:
    data = bytes(range(256))
    message = JsonMessage.decode(
        json.dumps({"b": base64.b64encode(data).decode()}).encode(), "answer"
    )
    assert message.binary("b") == data
