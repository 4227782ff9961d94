"""The settings of the ``disk`` upstream authority, with SPIRE's keys."""

from __future__ import annotations

__all__ = ["PLUGIN_NAME", "DiskUpstreamConfig"]

from dataclasses import dataclass
from pathlib import Path

from pyspire_sdk.config import setting

PLUGIN_NAME = "disk"


@dataclass(frozen=True, kw_only=True)
class DiskUpstreamConfig:
    """``[server.plugins.upstream_authority.disk]``."""

    cert_file_path: Path = setting(
        description="PEM certificates: the upstream CA that signs the server's CA first, then "
        "the intermediates between it and the roots of `bundle_file_path`"
    )
    key_file_path: Path = setting(
        description="the PEM private key of the first certificate (PKCS#8, PKCS#1 or SEC 1, "
        "unencrypted); refused unless its mode grants nothing to group and others (0600)"
    )
    bundle_file_path: Path | None = setting(
        None,
        description="PEM certificates of the upstream roots, which become the trust bundle's "
        "X.509 authorities; unset means `cert_file_path` holds one self-signed CA, which is "
        "then the root",
    )
