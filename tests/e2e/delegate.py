"""A delegate process for end-to-end tests of the agent's Delegated Identity API.

The agent tells a delegate from other processes of the same user by the binary it runs (the
unix attestor's ``unix:path`` selector), so :func:`delegate_interpreter` makes an interpreter
of its own: a copy of this one's binary (the kernel reports the path a process runs from, and
follows symbolic links, hence a copy) in a virtual environment that shares this one's packages.

Run as a script, this module is the delegate: ``python delegate.py <admin socket> <action> ...``
calls the API with grpclib and prints JSON (see :func:`delegate_main`). Nothing here imports
pytest.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
CALL_TIMEOUT = 10.0
RUN_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class DelegateError(Exception):
    """The delegate process failed or printed something unexpected."""


def delegate_interpreter(root: Path) -> Path:
    """A Python interpreter at its own path under ``root`` with this interpreter's packages:
    ``root/delegate-venv/bin/python``, a copy of the running binary, beside a ``pyvenv.cfg``
    like this environment's and a ``site-packages`` that is a link to this one's."""
    venv = root / "delegate-venv"
    binary = venv / "bin" / "python"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True)
    shutil.copy2(os.path.realpath(sys.executable), binary)
    config = Path(sys.prefix) / "pyvenv.cfg"
    if config.exists():
        shutil.copy2(config, venv / "pyvenv.cfg")
    else:  # this interpreter is no virtual environment: point the copy at its home
        home = Path(os.path.realpath(sys.executable)).parent
        (venv / "pyvenv.cfg").write_text(f"home = {home}\ninclude-system-site-packages = true\n")
    purelib = Path(sysconfig.get_path("purelib"))
    target = venv / purelib.relative_to(sys.prefix)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(purelib, target_is_directory=True)
    return binary


def run_delegate(
    interpreter: Path | str, socket: Path, action: str, *args: str, timeout: float = RUN_TIMEOUT
) -> dict[str, Any]:
    """Run the delegate with ``interpreter`` and return the JSON object it prints."""
    command = [str(interpreter), str(HERE), str(socket), action, *args]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, cwd="/"
        )
    except subprocess.TimeoutExpired:
        raise DelegateError(f"delegate {action!r} did not finish within {timeout:g}s") from None
    if result.returncode != 0:
        raise DelegateError(
            f"delegate {action!r} exited {result.returncode}\nstdout: {result.stdout}\n"
            f"stderr: {result.stderr}"
        )
    try:
        answer: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise DelegateError(f"delegate {action!r} printed no JSON: {result.stdout!r}") from None
    return answer


class DelegateWatch:
    """A delegate process holding a SubscribeToX509SVIDs stream open: every update it prints
    is read in a thread as it arrives."""

    def __init__(self, interpreter: Path, socket: Path, *workload: str) -> None:
        self.updates: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - kept open for the process
        self.process = subprocess.Popen(
            [str(interpreter), str(HERE), str(socket), "watch", *workload],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd="/",
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            update = json.loads(line)
            with self._changed:
                self.updates.append(update)
                self._changed.notify_all()

    def wait_for(
        self, what: str, check: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        """The first update for which ``check`` holds; raises :class:`DelegateError` naming
        ``what`` (with the updates so far and the process's errors) after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for update in self.updates:
                    if "error" in update:
                        raise DelegateError(f"the stream failed: {update['error']}")
                    if check(update):
                        return update
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.process.poll() is not None:
                    stderr = self._errors()
                    raise DelegateError(
                        f"no update with {what} within {timeout:g}s; updates: "
                        f"{self.updates[-5:]}\n{stderr[-2000:]}"
                    )
                self._changed.wait(min(remaining, 0.5))

    def _errors(self) -> str:
        """What the process wrote to standard error, once it has ended (it is killed)."""
        self._end()
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def _end(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        """Kill the process; safe to call more than once."""
        self._end()
        self._reader.join(timeout=STOP_TIMEOUT)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()


# -- the delegate ----------------------------------------------------------------------------


def _workload(args: Sequence[str]) -> dict[str, Any]:
    """``selectors <type:value>...`` or ``pid <pid>`` as request fields."""
    from pyspire.proto.gen.spire.api import types as types_pb

    kind, *values = args
    if kind == "pid":
        return {"pid": int(values[0])}
    selectors = []
    for text in values:
        selector_type, _, value = text.partition(":")
        selectors.append(types_pb.Selector(type=selector_type, value=value))
    return {"selectors": selectors}


def _svid_id(svid: Any) -> str:
    return f"spiffe://{svid.id.trust_domain}{svid.id.path}"


def _verified(item: Any, roots: Sequence[Any]) -> bool:
    """Whether the SVID's leaf was signed by one of ``roots`` and its key is the leaf's."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_der_private_key,
    )

    leaf = x509.load_der_x509_certificate(item.x509_svid.cert_chain[0])
    signed = False
    for root in roots:
        try:
            leaf.verify_directly_issued_by(root)
        except Exception:  # noqa: S112 - not this root; try the next one
            continue
        signed = True
    spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    key = load_der_private_key(item.x509_svid_key, None)
    return signed and key.public_key().public_bytes(*spki) == leaf.public_key().public_bytes(*spki)


async def _watch(stub: Any, *workload: str) -> dict[str, Any]:
    """Stream the workload's X509-SVIDs, each checked against the X.509 bundles the API
    streams; print a JSON line per update; runs until killed."""
    from cryptography import x509
    from spiffe import TrustDomain, X509Bundle

    from pyspire.proto.gen.spire.api.agent.delegatedidentity import v1 as pb

    bundles = stub.subscribe_to_x509_bundles(pb.SubscribeToX509BundlesRequest())
    first_bundles = (await anext(bundles)).ca_certificates
    await bundles.aclose()
    # py-spiffe reads the concatenated DER as any SPIFFE client would
    roots = [
        cert
        for key, der in first_bundles.items()
        for cert in X509Bundle.parse_raw(
            TrustDomain(key.removeprefix("spiffe://")), der
        ).x509_authorities
    ]
    request = pb.SubscribeToX509SviDsRequest(**_workload(workload))
    try:
        async for update in stub.subscribe_to_x509_svi_ds(request):
            line = {
                "at": time.time(),
                "spiffe_ids": [_svid_id(item.x509_svid) for item in update.x509_svids],
                "serials": [
                    str(x509.load_der_x509_certificate(item.x509_svid.cert_chain[0]).serial_number)
                    for item in update.x509_svids
                ],
                "verified": [_verified(item, roots) for item in update.x509_svids],
                "federates_with": list(update.federates_with),
            }
            print(json.dumps(line), flush=True)
    except Exception as error:
        print(json.dumps({"at": time.time(), "error": repr(error)}), flush=True)
    return {}


async def _jwt(stub: Any, audience: str, *workload: str) -> dict[str, Any]:
    """FetchJWTSVIDs for ``audience``, each token validated (with py-spiffe) against the first
    message of SubscribeToJWTBundles."""
    from spiffe import JwtBundle, JwtSvid, TrustDomain

    from pyspire.proto.gen.spire.api.agent.delegatedidentity import v1 as pb

    answer = await stub.fetch_jwtsvi_ds(
        pb.FetchJwtsviDsRequest(audience=[audience], **_workload(workload))
    )
    stream = stub.subscribe_to_jwt_bundles(pb.SubscribeToJwtBundlesRequest())
    bundles = (await anext(stream)).bundles
    await stream.aclose()
    validated = []
    for svid in answer.svids:
        domain = TrustDomain(svid.id.trust_domain)
        bundle = JwtBundle.parse(domain, bundles[f"spiffe://{svid.id.trust_domain}"])
        checked = JwtSvid.parse_and_validate(svid.token, bundle, {audience})
        validated.append(str(checked.spiffe_id))
    return {
        "spiffe_ids": [_svid_id(svid) for svid in answer.svids],
        "validated": validated,
        "bundle_trust_domains": sorted(bundles),
    }


async def _denied(stub: Any) -> dict[str, Any]:
    """How every method answers this caller: status name and message."""
    from grpclib.exceptions import GRPCError

    from pyspire.proto.gen.spire.api import types as types_pb
    from pyspire.proto.gen.spire.api.agent.delegatedidentity import v1 as pb

    selectors = [types_pb.Selector(type="unix", value="uid:0")]
    calls: dict[str, Callable[[], Any]] = {
        "x509_svids": lambda: anext(
            stub.subscribe_to_x509_svi_ds(pb.SubscribeToX509SviDsRequest(selectors=selectors))
        ),
        "x509_bundles": lambda: anext(
            stub.subscribe_to_x509_bundles(pb.SubscribeToX509BundlesRequest())
        ),
        "jwt_svids": lambda: stub.fetch_jwtsvi_ds(
            pb.FetchJwtsviDsRequest(audience=["db"], selectors=selectors)
        ),
        "jwt_bundles": lambda: anext(
            stub.subscribe_to_jwt_bundles(pb.SubscribeToJwtBundlesRequest())
        ),
    }
    outcome: dict[str, Any] = {}
    for name, call in calls.items():
        try:
            await call()
            outcome[name] = ["OK", ""]
        except GRPCError as error:
            outcome[name] = [error.status.name, error.message]
    return outcome


async def _main(socket: str, action: str, args: Sequence[str]) -> dict[str, Any]:
    from grpclib.client import Channel

    from pyspire.proto.gen.spire.api.agent.delegatedidentity import v1 as pb

    actions: dict[str, Callable[..., Any]] = {"watch": _watch, "jwt": _jwt, "denied": _denied}
    channel = Channel(path=socket)
    try:
        stub = pb.DelegatedIdentityStub(
            channel, timeout=None if action == "watch" else CALL_TIMEOUT
        )
        result: dict[str, Any] = await actions[action](stub, *args)
        return result
    finally:
        channel.close()


def delegate_main(argv: Sequence[str]) -> int:
    """``<admin socket> <action> <args>`` with the actions ``watch (selectors S... | pid P)``
    (a JSON line per update, until killed), ``jwt <audience> (selectors S... | pid P)`` and
    ``denied``: print the outcome as one JSON object."""
    socket, action, *args = argv
    print(json.dumps(asyncio.run(_main(socket, action, args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(delegate_main(sys.argv[1:]))
