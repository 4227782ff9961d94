"""The formats bundle publishers write a trust bundle in, as SPIRE's publishers name them.

- ``spiffe``: the SPIFFE bundle document (:meth:`Bundle.to_spiffe_json`): X.509 and JWT
  authorities with their ``use``, ``spiffe_sequence`` and ``spiffe_refresh_hint``.
- ``jwks``: the same keys as a plain RFC 7517 JWK Set, without the SPIFFE parameters (no
  ``use``, no ``spiffe_*`` member): X.509 authorities keep their certificate in ``x5c``, JWT
  authorities their ``kid``.
- ``pem``: the X.509 authorities as PEM certificates (:meth:`Bundle.to_pem`); JWT authorities
  have no PEM form and are left out.

One home for these encodings, so every publisher (a file, an object store, a config map)
writes the same bytes for the same bundle.
"""

from __future__ import annotations

__all__ = ["BundleFormat", "encode_bundle"]

import enum
import json
from typing import Any

from pyspire_sdk.bundle import Bundle

_SPIFFE_MEMBERS = ("spiffe_sequence", "spiffe_refresh_hint")


class BundleFormat(enum.Enum):
    """A format a bundle publisher writes; the value is how configuration names it."""

    SPIFFE = "spiffe"
    JWKS = "jwks"
    PEM = "pem"


def _jwks_document(bundle: Bundle) -> dict[str, Any]:
    document = bundle.to_spiffe_document()
    keys = [
        {name: value for name, value in key.items() if name != "use"} for key in document["keys"]
    ]
    plain = {name: value for name, value in document.items() if name not in _SPIFFE_MEMBERS}
    plain["keys"] = keys
    return plain


def encode_bundle(bundle: Bundle, bundle_format: BundleFormat) -> bytes:
    """``bundle`` in ``bundle_format``, as UTF-8 bytes ending with a newline.

    The same bundle always encodes to the same bytes. Raises
    :class:`~pyspire_sdk.errors.InvalidArgumentError` naming the authority when one cannot be
    expressed (see :meth:`Bundle.to_spiffe_json`).
    """
    if bundle_format is BundleFormat.PEM:
        return bundle.to_pem().encode("ascii")
    if bundle_format is BundleFormat.JWKS:
        return json.dumps(_jwks_document(bundle), indent=2).encode() + b"\n"
    return bundle.to_spiffe_json(indent=2).encode() + b"\n"
