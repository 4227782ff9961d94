"""User and group names for numeric IDs: the seam and the system databases behind it."""

from __future__ import annotations

__all__ = ["AccountDirectory", "SystemAccounts"]

import grp
import pwd
from typing import Protocol, runtime_checkable


@runtime_checkable
class AccountDirectory(Protocol):
    """Names users and groups by ID. Lookups may block (NSS may ask LDAP or SSSD), so the
    attestor calls them in a worker thread; they must be safe to call from several threads."""

    def user_name(self, uid: int) -> str | None:
        """The name of user ``uid``, or ``None`` when the user has no name."""
        ...

    def group_name(self, gid: int) -> str | None:
        """The name of group ``gid``, or ``None`` when the group has no name."""
        ...


class SystemAccounts:
    """The system's user and group databases (``/etc/passwd``, ``/etc/group`` and whatever
    else NSS is configured with), asked on every call so renamed accounts show at once."""

    def user_name(self, uid: int) -> str | None:
        try:
            return pwd.getpwuid(uid).pw_name or None
        except (KeyError, OverflowError):
            return None

    def group_name(self, gid: int) -> str | None:
        try:
            return grp.getgrgid(gid).gr_name or None
        except (KeyError, OverflowError):
            return None
