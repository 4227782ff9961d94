"""The workload attestor interface, its selector helper and its hook."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from pyspire_sdk.errors import InvalidSelectorError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins import workload_attestor
from pyspire_sdk.plugins.workload_attestor import WorkloadAttestor, workload_selectors
from pyspire_sdk.selector import Selector


def test_workload_selectors_are_typed_sorted_and_unique() -> None:
    assert workload_selectors("unix", ["uid:1000", "gid:1000", "uid:1000"]) == (
        Selector("unix", "gid:1000"),
        Selector("unix", "uid:1000"),
    )
    assert workload_selectors("docker", ()) == ()


def test_workload_selectors_refuse_an_empty_value() -> None:
    with pytest.raises(InvalidSelectorError):
        workload_selectors("unix", ["uid:1", ""])


def test_protocol_is_runtime_checkable() -> None:
    class Attestor:
        async def configure(self, config: Any, host: HostServices) -> None:
            return None

        async def close(self) -> None:
            return None

        async def attest(self, pid: int) -> Sequence[str]:
            return []

    class NotAnAttestor:
        async def configure(self, config: Any, host: HostServices) -> None:
            return None

        async def close(self) -> None:
            return None

    assert isinstance(Attestor(), WorkloadAttestor)
    assert not isinstance(NotAnAttestor(), WorkloadAttestor)


def test_hookspec_is_documented() -> None:
    hook = workload_attestor.pyspire_workload_attestors
    assert hasattr(hook, "pyspire_spec")
    assert hook.__doc__ and "Return" in hook.__doc__
