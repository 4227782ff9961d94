"""Workload attestation: the configured chain of workload attestors, run for one process.

Every attestor is asked about the pid at the same time, each under its own deadline. Their
values become selectors typed by the attestor's plugin name and are merged. The outcome is all
or nothing: an identity is handed out on the strength of these facts, so when any attestor
fails (says it cannot tell, rejects the pid, runs past its deadline, or breaks) the whole
attestation fails with :class:`WorkloadAttestationError` rather than answering with the facts
of the attestors that happened to succeed.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_ATTESTOR_TIMEOUT",
    "WorkloadAttestation",
    "WorkloadAttestationError",
]

from collections.abc import Sequence

import anyio
import structlog
from structlog.typing import FilteringBoundLogger

from pyspire_sdk.errors import InvalidArgumentError, PyspireError, UnavailableError
from pyspire_sdk.plugins.workload_attestor import WorkloadAttestor, workload_selectors
from pyspire_sdk.selector import Selector

DEFAULT_ATTESTOR_TIMEOUT = 5.0
"""Seconds one attestor may take for one pid before the attestation fails."""


class WorkloadAttestationError(UnavailableError):
    """The chain could not establish the caller's selectors; the message names the attestor.

    A subclass of :class:`~pyspire_sdk.errors.UnavailableError`: the condition is usually
    temporary (the process was replaced, a runtime did not answer) and a client retries.
    """

    def __init__(self, attestor: str, reason: str) -> None:
        super().__init__(f"workload attestor {attestor!r} failed: {reason}")
        self.attestor = attestor
        self.reason = reason


class WorkloadAttestation:
    """Runs a chain of workload attestors for a pid and merges what they find.

    ``attestors`` is the configured chain as ``(plugin name, attestor)`` pairs; the names must
    be distinct, since each becomes the type of the selectors its attestor produces.
    ``timeout`` is in real seconds (it bounds I/O, not agent time) and applies to each
    attestor separately.
    """

    def __init__(
        self,
        attestors: Sequence[tuple[str, WorkloadAttestor]],
        *,
        timeout: float = DEFAULT_ATTESTOR_TIMEOUT,
        logger: FilteringBoundLogger | None = None,
    ) -> None:
        if not attestors:
            raise InvalidArgumentError("attestors must name at least one workload attestor")
        names = [name for name, _ in attestors]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise InvalidArgumentError(
                "attestors must have distinct names, repeated: " + ", ".join(duplicates)
            )
        if not timeout > 0:
            raise InvalidArgumentError(f"timeout must be positive, got {timeout}")
        self._attestors = tuple(attestors)
        self._timeout = timeout
        self._log: FilteringBoundLogger = (
            logger if logger is not None else structlog.get_logger("pyspire.agent.workload")
        )

    @property
    def names(self) -> tuple[str, ...]:
        """The attestors' plugin names, in configured order."""
        return tuple(name for name, _ in self._attestors)

    async def attest(self, pid: int) -> frozenset[Selector]:
        """The merged selectors of process ``pid``.

        Raises :class:`WorkloadAttestationError` naming the first failing attestor (in
        configured order) when any of them fails; the others are cancelled.
        """
        if len(self._attestors) == 1:
            # The common case, on every Workload API call: no task group to set up.
            [(name, attestor)] = self._attestors
            return frozenset(await self._attest_one(name, attestor, pid))
        found: dict[str, tuple[Selector, ...]] = {}
        failed: dict[str, WorkloadAttestationError] = {}
        async with anyio.create_task_group() as group:

            async def attest_one(name: str, attestor: WorkloadAttestor) -> None:
                try:
                    found[name] = await self._attest_one(name, attestor, pid)
                except WorkloadAttestationError as error:
                    failed[name] = error
                    group.cancel_scope.cancel()

            for name, attestor in self._attestors:
                group.start_soon(attest_one, name, attestor, name=f"attest-{name}")
        if failed:
            first = next(name for name in self.names if name in failed)
            raise failed[first]
        return frozenset(selector for selectors in found.values() for selector in selectors)

    async def _attest_one(
        self, name: str, attestor: WorkloadAttestor, pid: int
    ) -> tuple[Selector, ...]:
        try:
            with anyio.fail_after(self._timeout):
                values = await attestor.attest(pid)
            return workload_selectors(name, values)
        except TimeoutError:
            reason = f"no answer within {self._timeout:g}s"
        except PyspireError as error:
            reason = str(error) or type(error).__name__
        except Exception as error:  # a broken plugin fails the attestation, never the agent
            self._log.exception("workload attestor raised", attestor=name, pid=pid)
            reason = f"unexpected {type(error).__name__}"
        self._log.warning("workload attestor failed", attestor=name, pid=pid, reason=reason)
        raise WorkloadAttestationError(name, reason)
