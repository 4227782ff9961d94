"""The keys file: its JSON format, strict reading, and atomic, durable writing.

Format (version 1)::

    {
      "version": 1,
      "keys": [
        {"id": "x509-CA-A", "type": "ec-p256", "pkcs8": "<base64 of the PKCS#8 DER>"}
      ]
    }

Reading is strict: a file that is not exactly this shape, holds a key that does not parse, or
whose key does not match its declared type is refused with a message naming the file and the
offending entry, because silently dropping a CA key would mint a new CA. Messages never quote
key material.

Writing replaces the file atomically (a temporary file in the same directory, flushed and
fsynced, renamed over the old one, then the directory fsynced), so a crash leaves either the
old or the new file, never a mix, and never a file readable by others. Every function here
blocks; callers run them in a thread.
"""

from __future__ import annotations

__all__ = [
    "FILE_MODE",
    "FORMAT_VERSION",
    "decode_keys",
    "encode_keys",
    "ensure_private_directory",
    "read_keys_file",
    "write_keys_file",
]

import base64
import binascii
import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pyspire_sdk.errors import InvalidArgumentError, PluginError
from pyspire_sdk.files import PRIVATE_FILE_MODE, make_private_directory, write_private_file
from pyspire_sdk.keys import KeyRecord, private_key_from_pkcs8, private_key_to_pkcs8
from pyspire_sdk.plugins.key_manager import KeyType, validate_key_id

FORMAT_VERSION = 1
"""The version this module writes and the only one it reads."""

FILE_MODE = PRIVATE_FILE_MODE
"""The keys file's mode; a file granting anything more is refused."""

_ENTRY_FIELDS = ("id", "type", "pkcs8")


def encode_keys(records: Iterable[KeyRecord]) -> bytes:
    """The keys file content holding ``records``, ordered by key ID. The result is secret."""
    entries = [
        {
            "id": record.key_id,
            "type": record.key_type.value,
            "pkcs8": base64.b64encode(private_key_to_pkcs8(record.private_key)).decode("ascii"),
        }
        for record in sorted(records, key=lambda record: record.key_id)
    ]
    document = {"version": FORMAT_VERSION, "keys": entries}
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"


def decode_keys(data: bytes, path: Path) -> list[KeyRecord]:
    """Parse keys file content read from ``path``; PluginError naming ``path`` and the problem."""

    def fail(problem: str) -> PluginError:
        return PluginError(f"keys file {path}: {problem}")

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise fail("not UTF-8 text; expected a JSON document") from None
    try:
        document: Any = json.loads(text)
    except json.JSONDecodeError as error:
        raise fail(
            f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    if not isinstance(document, dict):
        raise fail(f"expected a JSON object with 'version' and 'keys', found {_kind(document)}")
    unknown = sorted(set(document) - {"version", "keys"})
    if unknown:
        raise fail(f"unknown field {unknown[0]!r}; known fields: 'keys', 'version'")
    version = document.get("version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise fail(f"version: expected {FORMAT_VERSION}, found {json.dumps(version)[:20]}")
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise fail(f"keys: expected an array, found {_kind(entries)}")
    records: list[KeyRecord] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"keys[{index}]"
        if not isinstance(entry, dict):
            raise fail(f"{where}: expected an object, found {_kind(entry)}")
        for name in _ENTRY_FIELDS:
            if not isinstance(entry.get(name), str):
                raise fail(f"{where}.{name}: expected a string, found {_kind(entry.get(name))}")
        extra = sorted(set(entry) - set(_ENTRY_FIELDS))
        if extra:
            raise fail(f"{where}: unknown field {extra[0]!r}; known fields: 'id', 'pkcs8', 'type'")
        try:
            key_id = validate_key_id(entry["id"])
            key_type = KeyType.parse(entry["type"])
        except InvalidArgumentError as error:
            raise fail(f"{where}: {error}") from None
        if key_id in seen:
            raise fail(f"{where}.id: key_id {key_id!r} appears more than once")
        seen.add(key_id)
        try:
            der = base64.b64decode(entry["pkcs8"], validate=True)
        except (binascii.Error, ValueError):
            raise fail(f"{where}.pkcs8: not valid base64") from None
        try:
            record = KeyRecord.of(key_id, private_key_from_pkcs8(der))
        except InvalidArgumentError as error:
            raise fail(f"{where}.pkcs8: {error}") from None
        if record.key_type is not key_type:
            raise fail(
                f"{where}: type says {key_type.value!r} but the key is {record.key_type.value!r}"
            )
        records.append(record)
    return records


def read_keys_file(path: Path) -> list[KeyRecord]:
    """The keys stored at ``path``; none when the file does not exist.

    Refuses (PluginError) a path that is not a regular file, a file whose mode grants more than
    owner read and write, and content :func:`decode_keys` refuses.
    """
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return []
    except OSError as error:
        raise PluginError(f"cannot read keys file {path}: {error.strerror or error}") from None
    if not stat.S_ISREG(status.st_mode):
        raise PluginError(f"keys file {path} is not a regular file")
    mode = stat.S_IMODE(status.st_mode)
    if mode & ~FILE_MODE:
        raise PluginError(
            f"keys file {path} has mode {mode:04o}, looser than {FILE_MODE:04o}: "
            f"it holds private keys; run chmod 600 {path}"
        )
    try:
        data = path.read_bytes()
    except OSError as error:
        raise PluginError(f"cannot read keys file {path}: {error.strerror or error}") from None
    return decode_keys(data, path)


def ensure_private_directory(directory: Path) -> None:
    """Create ``directory`` and any missing parents with mode 0700; existing ones are kept as
    they are. PluginError when that fails or a path component is not a directory."""
    try:
        make_private_directory(directory)
    except NotADirectoryError:
        raise PluginError(f"{directory} must be a directory to hold the keys file") from None
    except OSError as error:
        raise PluginError(
            f"cannot create directory {directory} for the keys file: {error.strerror or error}"
        ) from None


def write_keys_file(path: Path, data: bytes) -> bool:
    """Replace the file at ``path`` with ``data``, atomically, with mode 0600.

    On failure the old file is untouched, no temporary file is left behind, and PluginError
    names the path and the reason. Returns whether the rename was also made durable by syncing
    the directory (see :func:`pyspire_sdk.files.write_private_file`).
    """
    try:
        return write_private_file(path, data)
    except OSError as error:
        raise PluginError(f"cannot write keys file {path}: {error.strerror or error}") from None
