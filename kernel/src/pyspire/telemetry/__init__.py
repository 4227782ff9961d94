"""Telemetry of the pyspire processes: structured logging, metrics, health checks, audit log."""

from __future__ import annotations

from pyspire.telemetry.logging import (
    LogFormat,
    configure_logging,
    parse_log_format,
    parse_log_level,
    redact_secrets,
)

__all__ = [
    "LogFormat",
    "configure_logging",
    "parse_log_format",
    "parse_log_level",
    "redact_secrets",
]
