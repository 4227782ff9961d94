"""The server's audit log (``audit_log_enabled``): one structured line per API call.

Like SPIRE's, each line is an INFO event ``API accessed`` with ``type="audit"`` and says who
called, what, with which request, and how it ended:

- ``method`` (the full gRPC method) and ``service``;
- the caller: ``caller_uid``, ``caller_gid`` and ``caller_pid`` on a unix socket (from
  SO_PEERCRED), ``caller_addr`` on TCP, plus ``caller_id``, the SPIFFE ID of the client
  certificate when one was presented (an admin, an agent, a downstream server);
- ``request``: the fields the caller set in its (first) request message, nested as in the
  message; bytes are shown by length only (CSRs, attestation payloads, keys), and a field named
  like a secret (a join ``token``, a ``private_key``, ...) is replaced by ``[redacted]``, so no
  secret reaches the log whatever the method;
- ``status`` (``success`` or ``error``), ``status_code`` (the gRPC status name) and, on error,
  ``status_message``.

The line is written when the call ends, by :class:`~pyspire.transport.calls.WithCallContext`, so
every method of every listener it wraps is covered, refused and malformed calls included; the
caller's fields come from the transport, which knows the peer
(:func:`pyspire.transport.peer.caller_fields`).
"""

from __future__ import annotations

__all__ = ["AUDIT_EVENT", "AuditLog", "request_fields"]

import dataclasses
import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import betterproto
import grpclib.const
import structlog
from structlog.typing import FilteringBoundLogger

from pyspire.telemetry.logging import REDACTED, is_secret_key

AUDIT_EVENT = "API accessed"
"""The event (message) of every audit line, SPIRE's."""


def _value(name: str, value: Any) -> Any:
    """The loggable form of one field value (None: leave the field out)."""
    if name and is_secret_key(name):
        return REDACTED if value not in (None, "", b"") else None
    if isinstance(value, betterproto.Message):
        if not betterproto.serialized_on_wire(value):
            return None
        return request_fields(value) or {}
    if value is None:  # a codec message's absent sub-message
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # a codec message
        return request_fields(value) or {}
    if isinstance(value, bytes | bytearray):
        return f"{len(value)} bytes" if value else None
    if isinstance(value, bool | str | int | float):
        return value or None
    if isinstance(value, enum.Enum):
        return value.name if value.value else None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        items = [_value("", item) for item in value]
        return [item for item in items if item is not None] or None
    if isinstance(value, Mapping):
        found = {str(key): _value(str(key), item) for key, item in value.items()}
        return {key: item for key, item in found.items() if item is not None} or None
    return type(value).__name__


def request_fields(message: object) -> dict[str, Any]:
    """The fields a request message carries, for the audit log: unset fields left out, bytes
    by length, secret-named fields redacted. Both betterproto and codec messages are
    dataclasses; a request held as undecoded bytes gives no fields."""
    if not dataclasses.is_dataclass(message) or isinstance(message, type):
        return {}
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(message):
        try:
            raw = getattr(message, field.name)
        except AttributeError:  # betterproto: a member of a oneof that holds another one
            continue
        value = _value(field.name, raw)
        if value is not None:
            fields[field.name] = value
    return fields


class AuditLog:
    """Writes the audit line of each call; see the module documentation."""

    def __init__(self, logger: FilteringBoundLogger | None = None) -> None:
        self._log: FilteringBoundLogger = (
            logger if logger is not None else structlog.get_logger("pyspire.audit")
        )

    def record(
        self,
        method: str,
        caller: Mapping[str, Any],
        request: object | None,
        status: grpclib.const.Status,
        message: str | None,
    ) -> None:
        """One call to ``method`` by ``caller`` (the fields that say who called, see the module
        documentation) ended with ``status`` (and ``message``)."""
        fields: dict[str, Any] = {
            "type": "audit",
            "method": method,
            "service": method.lstrip("/").partition("/")[0],
            **caller,
            "request": request_fields(request) if request is not None else {},
        }
        if status is grpclib.const.Status.OK:
            fields["status"] = "success"
            fields["status_code"] = status.name
        else:
            fields["status"] = "error"
            fields["status_code"] = status.name
            fields["status_message"] = message or ""
        self._log.info(AUDIT_EVENT, **fields)
