"""One JSON object per line appended to a file: how the test plugins report what they saw."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from pyspire_sdk.bundle import Bundle


def bundle_facts(bundle: Bundle) -> dict[str, Any]:
    """What a test compares about a bundle: its sequence number and authority count."""
    return {
        "sequence": bundle.sequence_number,
        "x509_authorities": len(bundle.x509_authorities),
        "jwt_authorities": len(bundle.jwt_authorities),
    }


def _append(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


async def record(path: Path, **fields: Any) -> None:
    """Append ``fields`` as one line to ``path`` (off the event loop)."""
    await asyncio.to_thread(_append, path, fields)
