"""The shared server context fixture builds a working server core."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from pyspire.server.context import ServerContext
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId


async def test_context_issues_svids_for_an_entry(server_context: ServerContext) -> None:
    entry = await server_context.datastore.create_entry(
        RegistrationEntry(
            spiffe_id=SpiffeId.parse("spiffe://example.org/web"),
            parent_id=SpiffeId.parse("spiffe://example.org/spire/agent/x"),
            selectors=(Selector("unix", "uid:1000"),),
            hint="web",
        )
    )
    svid = await server_context.issuer.workload_x509(
        entry, ec.generate_private_key(ec.SECP256R1()).public_key()
    )
    assert svid.spiffe_id == entry.spiffe_id
    assert svid.hint == "web"
    jwt = await server_context.issuer.workload_jwt(entry, ["aud"])
    assert jwt.token.count(".") == 2
    assert server_context.server_id == SpiffeId.parse("spiffe://example.org/spire/server")
