"""Worker processes for the CPU-bound half of issuance: CSR signature checks and leaf signing.

A server process runs its event loop on one core: TLS, HTTP/2, decoding, authorization and
encoding all hold the GIL. Checking a CSR's self-signature (an ECDSA P-256 verify costs about
three P-256 signatures) and signing the leaf are the parts that need no server state, so they can
move to other cores whole. :class:`SigningPool` runs them in ``processes`` worker processes
(started fresh with ``spawn``: forking a process that runs an event loop and threads is unsafe).

CSR checks go to the workers whatever the key manager. Signing goes there only for keys the key
manager can hand over (:class:`~pyspire_sdk.plugins.key_manager.PrivateKeyExport`: the memory and
disk key managers): the key's PKCS#8 travels with each job over the pipe to the worker, which
caches it parsed. A key that stays in a KMS is signed through its key manager, as without a pool.

The pool is an async context manager: entering starts every worker and waits until each answers
(a worker that cannot start fails the server's start, not its first call); leaving cancels queued
jobs and waits until every worker has exited.
"""

from __future__ import annotations

__all__ = ["SigningPool"]

import asyncio
import concurrent.futures
import multiprocessing
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

from cryptography.hazmat.primitives import serialization

from pyspire.ca import worker_jobs
from pyspire.ca.key_export import ExportedKeys
from pyspire.ca.signing import ManagedKey
from pyspire.ca.x509svid import CheckedKey
from pyspire_sdk.errors import InvalidArgumentError, PyspireError, UnavailableError

CHUNK = 32
"""The most CSRs or leaves one job carries: a large batch is split so every worker helps, while
a job stays large enough that the pipe round trip is a small part of it."""

_T = TypeVar("_T")


class SigningPool:
    """``processes`` worker processes that check CSRs and sign with exportable CA keys."""

    def __init__(self, executor: concurrent.futures.ProcessPoolExecutor, processes: int) -> None:
        self._executor = executor
        self.processes = processes
        self.worker_pids: frozenset[int] = frozenset()
        self._exported = ExportedKeys()

    @classmethod
    @asynccontextmanager
    async def running(cls, processes: int) -> AsyncIterator[SigningPool]:
        """A pool of ``processes`` started workers, shut down and awaited on exit."""
        if processes < 1:
            raise InvalidArgumentError(f"signing processes must be at least 1, found {processes}")
        executor = concurrent.futures.ProcessPoolExecutor(
            processes, mp_context=multiprocessing.get_context("spawn")
        )
        try:
            pool = cls(executor, processes)
            await pool._start()
            yield pool
        finally:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)

    async def _start(self) -> None:
        # One job per worker, all at once: the executor starts a worker per queued job.
        pids = await asyncio.gather(*(self._run(worker_jobs.ready) for _ in range(self.processes)))
        self.worker_pids = frozenset(pids)

    async def _run(self, function: Callable[..., _T], *args: object) -> _T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, function, *args)
        except concurrent.futures.BrokenExecutor as error:
            raise UnavailableError(f"signing worker process failed: {error}") from None

    async def check_csrs(self, csrs: Sequence[bytes]) -> list[CheckedKey | PyspireError]:
        """The public key of each CSR whose self-signature holds, with its encoding (as
        :func:`~pyspire.ca.x509svid.checked_csr` finds them), or why it was refused."""
        chunks = [tuple(csrs[start : start + CHUNK]) for start in range(0, len(csrs), CHUNK)]
        answers = await asyncio.gather(
            *(self._run(worker_jobs.check_csrs, chunk) for chunk in chunks)
        )
        keys: list[CheckedKey | PyspireError] = []
        for answer in answers:
            for checked in answer:
                if isinstance(checked, str):
                    keys.append(InvalidArgumentError(checked))
                else:
                    public_key = serialization.load_der_public_key(checked)
                    keys.append(CheckedKey(public_key, checked))  # type: ignore[arg-type]
        return keys

    async def sign(self, key: ManagedKey, payloads: Sequence[bytes]) -> list[bytes] | None:
        """Each payload signed with ``key`` as its key manager would sign it, or None when the
        key manager cannot hand the key over (the caller then signs through it)."""
        pkcs8 = await self._exported.pkcs8(key)
        if pkcs8 is None:
            return None
        algorithm = key.hash_algorithm.value
        chunks = [
            tuple(payloads[start : start + CHUNK]) for start in range(0, len(payloads), CHUNK)
        ]
        answers = await asyncio.gather(
            *(self._run(worker_jobs.sign_payloads, pkcs8, algorithm, chunk) for chunk in chunks)
        )
        return [signature for answer in answers for signature in answer]
