"""JWT claims on the wire: the ``google.protobuf.Struct`` of ``ValidateJWTSVIDResponse``."""

from __future__ import annotations

__all__ = ["claims_from_struct", "encode_claims"]

from collections.abc import Mapping
from typing import Any

from pyspire.proto.gen.codec.google_protobuf import (
    Struct,
    Value,
    write_ListValue,
    write_Struct,
    write_Value,
)
from pyspire_sdk.errors import InvalidArgumentError


def encode_claims(claims: Mapping[str, Any]) -> bytes:
    """The encoding of JSON-like ``claims`` as a ``google.protobuf.Struct`` (numbers become
    doubles, as JSON's are)."""
    return write_Struct(fields={str(name): _value(value) for name, value in claims.items()})


def _value(value: Any) -> bytes:
    if value is None:
        return write_Value(null_value=0)
    if isinstance(value, bool):
        return write_Value(bool_value=value)
    if isinstance(value, int | float):
        return write_Value(number_value=float(value))
    if isinstance(value, str):
        return write_Value(string_value=value)
    if isinstance(value, Mapping):
        return write_Value(struct_value=encode_claims(value))
    if isinstance(value, list | tuple):
        return write_Value(list_value=write_ListValue(values=[_value(item) for item in value]))
    raise InvalidArgumentError(f"claim value of type {type(value).__name__} is not JSON")


def claims_from_struct(struct: Struct | None) -> dict[str, Any]:
    """The JSON-like claims a decoded ``Struct`` holds (an empty dict for none)."""
    if struct is None:
        return {}
    return {name: _python(value) for name, value in sorted(struct.fields.items())}


def _python(value: Value) -> Any:
    if value.struct_value is not None:
        return claims_from_struct(value.struct_value)
    if value.list_value is not None:
        return [_python(item) for item in value.list_value.values]
    if value.string_value is not None:
        return value.string_value
    if value.bool_value is not None:
        return value.bool_value
    if value.number_value is not None:
        number = value.number_value
        return int(number) if number.is_integer() else number
    return None
