"""The catalog's getters are typed by kind: mypy sees each plugin boundary's interface."""

from __future__ import annotations

import textwrap
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[3]

SNIPPET = textwrap.dedent(
    """
    from pyspire.catalog import (
        AGENT_NODE_ATTESTOR, DATASTORE, UPSTREAM_AUTHORITY, WORKLOAD_ATTESTORS, Catalog,
    )

    def check(catalog: Catalog) -> None:
        reveal_type(catalog.one(DATASTORE))
        reveal_type(catalog.optional(UPSTREAM_AUTHORITY))
        reveal_type(catalog.chain(WORKLOAD_ATTESTORS)[0].instance)
        reveal_type(catalog.one_named(AGENT_NODE_ATTESTOR).instance)
        catalog.one(WORKLOAD_ATTESTORS)
    """
)


def test_getters_return_the_kinds_interface_and_refuse_the_wrong_arity(tmp_path: Path) -> None:
    module = tmp_path / "uses_catalog.py"
    module.write_text(SNIPPET)
    stdout, _, _ = api.run(
        [
            "--strict",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / "cache"),
            str(module),
        ]
    )
    revealed = [
        line.split("Revealed type is ")[1] for line in stdout.splitlines() if "Revealed" in line
    ]
    assert revealed == [
        '"pyspire_sdk.plugins.datastore.DataStore"',
        '"pyspire_sdk.plugins.upstream_authority.UpstreamAuthority | None"',
        '"pyspire_sdk.plugins.workload_attestor.WorkloadAttestor"',
        '"pyspire_sdk.plugins.node_attestor.AgentNodeAttestor"',
    ]
    assert 'Argument 1 to "one" of "Catalog" has incompatible type' in stdout
