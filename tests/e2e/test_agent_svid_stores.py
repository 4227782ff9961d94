"""A real agent with a third-party SVID store plugin, found through its entry point, and its
admin socket.

The plugin (:mod:`svidstore_directory`) is written as a distribution into a directory of the
test's own (:func:`pyspire_sdk.testing.distributions.install_distribution`) that only the agent
process has on its ``PYTHONPATH``. Entries marked ``store_svid`` reach it as PEM files, are
rewritten when the SVID rotates, wait while the store is unavailable and arrive once it is back,
and are removed when the entry is deleted, also when that happens while the agent is stopped.
The admin socket answers the Debug API's GetInfo. Only the stored entries have 16-second SVIDs:
the agent's own lasts an hour, so a restart on a busy machine never outlives it.

One server and one agent serve the module; the tests run in file order.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpclib.client import Channel
from processes import (
    HERE,
    TRUST_DOMAIN,
    AgentProcess,
    AgentSettings,
    Deployment,
    ProcessError,
    ServerProcess,
    ServerSettings,
    free_port,
    join_token_agent_id,
    short_temp_dir,
    wait_for,
)

from pyspire.proto.gen.spire.agent.debug import v1 as debug_pb
from pyspire_sdk.testing.distributions import environment_with_path, install_distribution

pytestmark = pytest.mark.slow

STORED = f"spiffe://{TRUST_DOMAIN}/stored/web"
SERVED = f"spiffe://{TRUST_DOMAIN}/served"
SVID_TTL_SECONDS = 16
WAIT = 30.0


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    root = short_temp_dir()
    site = root / "site"
    install_distribution(
        site,
        "pyspire-svidstore-directory",
        entry_points={"directory": "pyspire_svidstore_directory"},
        modules={
            "pyspire_svidstore_directory": (HERE.parent / "svidstore_directory.py").read_text()
        },
    )
    server = ServerProcess(ServerSettings(root=root, port=free_port()))
    agent = AgentProcess(
        AgentSettings(
            root=root,
            server_port=server.settings.port,
            bootstrap_bundle=root / "bootstrap.pem",
            admin_socket=True,
            plugins_toml=f'[agent.plugins.svid_store.directory]\ndirectory = "{root / "stored"}"\n',
            environment=environment_with_path(site),
        )
    )
    deployed = Deployment(root=root, server=server, agent=agent, token="", agent_id="")
    try:
        server.start()
        server.write_bundle(root / "bootstrap.pem")
        deployed.token = server.generate_token()
        deployed.agent_id = join_token_agent_id(deployed.token)
        server.create_entry(SERVED, deployed.agent_id, f"unix:uid:{os.getuid()}")
        create_stored_entry(server, deployed.agent_id, "web")
        agent.start(join_token=deployed.token)
    except ProcessError as error:
        logs = deployed.logs()
        deployed.stop()
        pytest.fail(f"the deployment did not start: {str(error).splitlines()[0]}\n{logs}")
    except BaseException:
        deployed.stop()
        raise
    try:
        yield deployed
    finally:
        deployed.stop()


def create_stored_entry(server: ServerProcess, agent_id: str, name: str) -> None:
    server.cli(
        "entry",
        "create",
        "-entryID",
        f"stored-{name}",
        "-spiffeID",
        f"spiffe://{TRUST_DOMAIN}/stored/{name}",
        "-parentID",
        agent_id,
        "-selector",
        f"directory:name:{name}",
        "-storeSVID",
        "-x509SVIDTTL",
        str(SVID_TTL_SECONDS),
    )


def stored_folder(deployment: Deployment, name: str) -> Path:
    return deployment.root / "stored" / name


def stored_serial(deployment: Deployment, name: str) -> int | None:
    """The serial of the leaf stored under ``name``, None while there is none."""
    path = stored_folder(deployment, name) / "svid.pem"
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())[0].serial_number
    except (FileNotFoundError, ValueError):
        return None


def get_info(deployment: Deployment) -> debug_pb.GetInfoResponse:
    async def call() -> debug_pb.GetInfoResponse:
        channel = Channel(path=str(deployment.agent.settings.admin_socket_path))
        try:
            return await debug_pb.DebugStub(channel, timeout=10).get_info(debug_pb.GetInfoRequest())
        finally:
            channel.close()

    return asyncio.run(call())


def test_the_stored_svid_is_written_by_the_plugin(deployment: Deployment) -> None:
    wait_for(
        "the stored svid",
        lambda: stored_serial(deployment, "web"),
        WAIT,
        deployment.agent.log(),
    )
    folder = stored_folder(deployment, "web")
    chain = x509.load_pem_x509_certificates((folder / "svid.pem").read_bytes())
    roots = x509.load_pem_x509_certificates((folder / "bundle.pem").read_bytes())
    key = serialization.load_pem_private_key((folder / "key.pem").read_bytes(), None)
    assert (folder / "spiffe_id").read_text() == STORED
    assert key.public_key() == chain[0].public_key()
    assert any(_signed_by(chain[-1], root) for root in roots)
    assert stat.S_IMODE((folder / "key.pem").stat().st_mode) == 0o600


def _signed_by(certificate: x509.Certificate, root: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(root)
    except Exception:
        return False
    return True


def test_get_info_on_the_admin_socket(deployment: Deployment) -> None:
    admin = deployment.agent.settings.admin_socket_path
    assert stat.S_IMODE(admin.parent.stat().st_mode) == 0o700
    info = wait_for(
        "the served and the stored svid",
        lambda: (
            found
            if (found := get_info(deployment)).cached_x509_svids_count == 1
            and found.cached_svidstore_x509_svids_count == 1
            else None
        ),
        WAIT,
        deployment.agent.log(),
    )
    leaf = info.svid_chain[0]
    assert f"spiffe://{leaf.id.trust_domain}{leaf.id.path}" == deployment.agent_id
    assert info.svid_chain[-1].id.path == ""  # the root of our bundle
    assert info.last_sync_success > 0
    assert info.uptime >= 0


def test_rotation_rewrites_the_stored_svid(deployment: Deployment) -> None:
    first = stored_serial(deployment, "web")
    wait_for(
        "the stored svid to rotate",
        lambda: True if stored_serial(deployment, "web") not in (None, first) else None,
        WAIT,
        deployment.agent.log(),
    )


def test_an_unavailable_store_gets_the_svid_once_it_is_back(deployment: Deployment) -> None:
    marker = deployment.root / "stored" / "UNAVAILABLE"
    marker.touch()
    create_stored_entry(deployment.server, deployment.agent_id, "db")
    wait_for(
        "the agent to meet the unavailable store",
        lambda: True if "svid store call failed" in deployment.agent.log() else None,
        WAIT,
        deployment.agent.log(),
    )
    assert stored_serial(deployment, "db") is None
    marker.unlink()
    wait_for("the svid stored after the outage", lambda: stored_serial(deployment, "db"), WAIT)


def test_deleting_the_entry_removes_the_stored_svid(deployment: Deployment) -> None:
    deployment.server.cli("entry", "delete", "-entryID", "stored-db")
    wait_for(
        "the stored svid to be removed",
        lambda: True if not stored_folder(deployment, "db").exists() else None,
        WAIT,
        deployment.agent.log(),
    )


def test_an_entry_deleted_while_the_agent_is_stopped_is_removed_after_restart(
    deployment: Deployment,
) -> None:
    # Alone, this test stops the agent right after its first sync, maybe mid-put.
    wait_for("the stored svid", lambda: stored_serial(deployment, "web"), WAIT)
    assert deployment.agent.terminate() == 0
    deployment.server.cli("entry", "delete", "-entryID", "stored-web")
    assert stored_folder(deployment, "web").exists()
    deployment.agent.start()
    wait_for(
        "the svid of the deleted entry to be removed",
        lambda: True if not stored_folder(deployment, "web").exists() else None,
        WAIT,
        deployment.agent.log(),
    )
    assert deployment.agent.terminate() == 0
    assert not deployment.agent.settings.admin_socket_path.exists()
