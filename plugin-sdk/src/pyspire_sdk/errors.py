"""Exception types shared by the kernel and every plugin.

Messages are lower-case, carry no trailing period and name the field and the reason, so that an
operator reading one line of log knows what to fix.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExistsError",
    "ConfigError",
    "ConfigIssue",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "InvalidSelectorError",
    "InvalidSpiffeIdError",
    "NotFoundError",
    "PermissionDeniedError",
    "PluginError",
    "PyspireError",
    "UnavailableError",
]

from dataclasses import dataclass


class PyspireError(Exception):
    """Base of every error pyspire raises on purpose."""


class InvalidArgumentError(PyspireError, ValueError):
    """A value given by a caller breaks a rule; the message says which."""


class InvalidSpiffeIdError(InvalidArgumentError):
    """A string is not a SPIFFE ID (or trust domain) under the SPIFFE-ID standard."""


class InvalidSelectorError(InvalidArgumentError):
    """A selector is not of the form ``type:value`` with both parts non-empty."""


class NotFoundError(PyspireError, LookupError):
    """The named object does not exist."""


class AlreadyExistsError(PyspireError):
    """An object with the same identity already exists."""


class FailedPreconditionError(PyspireError):
    """The stored state forbids the change: a bundle that entries still federate with cannot be
    deleted in RESTRICT mode, and a prune may not remove every authority of a bundle."""

    grpc_status = "FAILED_PRECONDITION"


class PermissionDeniedError(PyspireError):
    """The caller is known but not allowed to do this; the message gives the reason."""


class UnavailableError(PyspireError):
    """A dependency (server, database, KMS) cannot be reached now; retrying may succeed."""


class PluginError(PyspireError):
    """A plugin failed to load, configure or run; the message names the plugin."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration document, located by its dotted key path."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(PyspireError):
    """A configuration document has one or more problems; all of them are reported at once."""

    def __init__(self, issues: list[ConfigIssue] | tuple[ConfigIssue, ...]) -> None:
        self.issues: tuple[ConfigIssue, ...] = tuple(issues)
        super().__init__("; ".join(str(issue) for issue in self.issues))
