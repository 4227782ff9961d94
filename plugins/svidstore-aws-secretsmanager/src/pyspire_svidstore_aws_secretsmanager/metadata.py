"""What an entry's ``aws_secretsmanager`` selectors say: which secret, and its KMS key.

SPIRE's keys: ``secretname:<name>`` (the secret's friendly name; needed to create it),
``arn:<arn>`` (the secret's ARN, used in preference to the name to find it) and
``kmskeyid:<key>`` (the KMS key a new secret is encrypted with). Every value is
``<key>:<value>``.
"""

from __future__ import annotations

__all__ = ["SecretOptions"]

import re
from collections.abc import Iterable
from dataclasses import dataclass

from pyspire_sdk.errors import InvalidArgumentError

_KEYS = ("secretname", "arn", "kmskeyid")
_SECRET_NAME = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}")
"""The characters and length AWS allows in a secret's name."""


@dataclass(frozen=True)
class SecretOptions:
    """The secret one stored SVID lives in."""

    name: str = ""
    arn: str = ""
    kms_key_id: str = ""

    @property
    def secret_id(self) -> str:
        """How the secret is looked up: its ARN when given, else its name (SPIRE's rule)."""
        return self.arn or self.name

    @classmethod
    def parse(cls, metadata: Iterable[str]) -> SecretOptions:
        """Read selector values; :class:`InvalidArgumentError` naming the value for anything
        this store cannot use."""
        found: dict[str, str] = {}
        for value in metadata:
            key, colon, argument = value.partition(":")
            if not colon:
                raise InvalidArgumentError(f"metadata {value!r} does not contain a colon")
            if key not in _KEYS:
                raise InvalidArgumentError(
                    f"metadata {value!r}: unknown key {key!r}, expected secretname, arn or kmskeyid"
                )
            if not argument:
                raise InvalidArgumentError(f"metadata {value!r}: {key} is empty")
            if found.setdefault(key, argument) != argument:
                raise InvalidArgumentError(
                    f"metadata: {key} is given twice ({found[key]!r} and {argument!r})"
                )
        options = cls(
            name=found.get("secretname", ""),
            arn=found.get("arn", ""),
            kms_key_id=found.get("kmskeyid", ""),
        )
        if not options.secret_id:
            raise InvalidArgumentError("metadata: either the secret name or ARN is required")
        if options.name and not _SECRET_NAME.fullmatch(options.name):
            raise InvalidArgumentError(
                f"metadata secretname:{options.name!r}: a secret name is 1 to 512 ASCII letters, "
                "digits and /_+=.@- characters"
            )
        return options
