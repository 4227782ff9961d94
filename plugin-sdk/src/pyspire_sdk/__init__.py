"""pyspire plugin SDK: SPIFFE types, the registry's records, plugin interfaces, contract tests.

A plugin depends on this distribution alone, never on the ``pyspire`` kernel.
"""

from pyspire_sdk._duration import format_duration, parse_duration
from pyspire_sdk.bundle import Bundle, JwtAuthority, X509Authority
from pyspire_sdk.clock import Clock, SystemClock
from pyspire_sdk.config import describe_config, load_config, setting
from pyspire_sdk.errors import (
    AlreadyExistsError,
    ConfigError,
    ConfigIssue,
    InvalidArgumentError,
    InvalidSelectorError,
    InvalidSpiffeIdError,
    NotFoundError,
    PermissionDeniedError,
    PluginError,
    PyspireError,
    UnavailableError,
)
from pyspire_sdk.model import (
    AttestationResult,
    AttestedNode,
    FederationRelationship,
    JoinToken,
    JwtSvid,
    RegistrationEntry,
    X509Svid,
)
from pyspire_sdk.plugin import (
    HostServices,
    NoConfig,
    Plugin,
    PluginRegistration,
    hookimpl,
    hookspec,
)
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

__all__ = [
    "AlreadyExistsError",
    "AttestationResult",
    "AttestedNode",
    "Bundle",
    "Clock",
    "ConfigError",
    "ConfigIssue",
    "FederationRelationship",
    "HostServices",
    "InvalidArgumentError",
    "InvalidSelectorError",
    "InvalidSpiffeIdError",
    "JoinToken",
    "JwtAuthority",
    "JwtSvid",
    "NoConfig",
    "NotFoundError",
    "PermissionDeniedError",
    "Plugin",
    "PluginError",
    "PluginRegistration",
    "PyspireError",
    "RegistrationEntry",
    "Selector",
    "SpiffeId",
    "SystemClock",
    "TrustDomain",
    "UnavailableError",
    "X509Authority",
    "X509Svid",
    "describe_config",
    "format_duration",
    "hookimpl",
    "hookspec",
    "load_config",
    "parse_duration",
    "setting",
]
