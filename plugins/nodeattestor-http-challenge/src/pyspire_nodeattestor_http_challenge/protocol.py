"""SPIRE's http_challenge messages and the names they carry.

- Payload (agent → server): ``{"hostname":"node1.example.org","agentname":"default","port":80}``,
  the port being the one the server is to call (``advertised_port``).
- Challenge (server → agent): ``{"nonce":"<URL-safe base64 of 32 random bytes>"}``.
- Answer (agent → server): a newline, ``"\\n"``: SPIRE's agent sends it because its host wants
  an answer that is not empty; the proof is the HTTP fetch that follows.
- The fetch: ``GET http://<hostname>:<port>/.well-known/spiffe/nodeattestor/http_challenge/
  <agentname>/challenge``, answered with the nonce and a newline.
"""

from __future__ import annotations

__all__ = [
    "ACKNOWLEDGEMENT",
    "MAX_AGENT_NAME",
    "MAX_NONCE_TEXT",
    "AttestationData",
    "agent_name_problem",
    "challenge_path",
    "challenge_url",
    "decode_challenge",
    "decode_payload",
    "encode_challenge",
    "encode_payload",
    "hostname_problem",
    "new_nonce_text",
]

import base64
import re
from dataclasses import dataclass

from pyspire_sdk.challenge import JsonMessage, encode_message, new_nonce
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.spiffeid import SpiffeId

ACKNOWLEDGEMENT = b"\n"
"""The agent's answer to the challenge, as SPIRE's agent sends it."""

MAX_AGENT_NAME = 32
MAX_NONCE_TEXT = 64
"""The server reads at most this many bytes of the fetched answer (as SPIRE does)."""

_AGENT_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9-]*")
_NONCE_TEXT = re.compile(r"[A-Za-z0-9_=-]+")


@dataclass(frozen=True)
class AttestationData:
    """What the agent tells the server: where to fetch the challenge."""

    hostname: str
    agentname: str
    port: int


def encode_payload(data: AttestationData) -> bytes:
    """The payload, with SPIRE's field names and order."""
    return encode_message(
        {"hostname": data.hostname, "agentname": data.agentname, "port": data.port}
    )


def decode_payload(payload: bytes) -> AttestationData:
    """The payload's fields; InvalidArgumentError naming a missing or mistyped one."""
    message = JsonMessage.decode(payload, "payload")
    return AttestationData(
        hostname=message.text("hostname"),
        agentname=message.text("agentname"),
        port=message.integer("port"),
    )


def new_nonce_text() -> str:
    """A fresh nonce as text: URL-safe base64, with padding, of 32 random bytes."""
    return base64.urlsafe_b64encode(new_nonce()).decode("ascii")


def encode_challenge(nonce: str) -> bytes:
    """The server's challenge."""
    return encode_message({"nonce": nonce})


def decode_challenge(challenge: bytes) -> str:
    """The nonce to serve; InvalidArgumentError when it is not a short base64 text."""
    nonce = JsonMessage.decode(challenge, "challenge").text("nonce")
    if len(nonce) > MAX_NONCE_TEXT or not _NONCE_TEXT.fullmatch(nonce):
        raise InvalidArgumentError(
            f"challenge.nonce is not a base64 text of at most {MAX_NONCE_TEXT} characters"
        )
    return nonce


def agent_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an agent name (SPIRE's rule: a letter, then letters, digits and
    ``-``, at most 32 characters), or None."""
    if len(name) > MAX_AGENT_NAME or not _AGENT_NAME.fullmatch(name):
        return (
            f"agent name {name!r} is not valid: a letter, then letters, digits and '-', at most "
            f"{MAX_AGENT_NAME} characters"
        )
    return None


def hostname_problem(hostname: str) -> str | None:
    """Why ``hostname`` cannot be attested, or None. It is the last segment of the agent ID
    and the host part of the challenge URL, so it must be a SPIFFE path segment (which has no
    ``/``, ``:``, ``@`` or ``%``); ``localhost`` names every host and is refused (as in SPIRE)."""
    if not hostname:
        return "hostname is empty"
    if hostname == "localhost":
        return "you can not use localhost as a hostname"
    try:
        SpiffeId.from_segments("example.org", hostname)
    except InvalidArgumentError as error:
        return f"hostname {hostname!r} cannot name an agent: {error}"
    return None


def challenge_path(agentname: str) -> str:
    """The path the agent serves its challenge on."""
    return f"/.well-known/spiffe/nodeattestor/http_challenge/{agentname}/challenge"


def challenge_url(data: AttestationData) -> str:
    """Where the server fetches the challenge from."""
    return f"http://{data.hostname}:{data.port}{challenge_path(data.agentname)}"
