"""A new attested node written in one statement: the writer's thread does the whole write in one
trip.

Every statement the store sends is a trip to its connection's thread (a queue put, a thread
wake, and a wake of the event loop with the result), and a thousand agents attesting at once
make :meth:`~pyspire_datastore_sqlite.store.SqliteDataStore.create_attested_node` a hot path.
A transaction of its own would take five trips (``BEGIN``, the node, its selectors, its change
event, ``COMMIT``). Instead the writer connection gets, for its lifetime only, a temporary view
whose ``INSTEAD OF INSERT`` trigger writes the node, replaces its selectors when some are given
and writes its change event; one ``INSERT`` into the view, a transaction by itself, does all of
it or nothing (a duplicate node rolls the whole statement back), and returns the node's
selectors as stored. Nothing is added to the database file: other connections and tools never
see the view.

The statement decides nothing: the store passes the deduplicated selectors (or none, to leave
stored ones in place), the change event's kind and its time.
"""

from __future__ import annotations

__all__ = ["CREATE_NODE_SQL", "NODE_CREATION_SCRIPT", "selectors_json", "stored_selectors"]

import json
from collections.abc import Sequence

from pyspire_sdk.selector import Selector
from pyspire_sdk.stored_records import Decoder

NODE_CREATION_SCRIPT = """
CREATE TEMP VIEW node_creation (
    spiffe_id, attestation_type, serial_number, expires_at, new_serial_number, new_expires_at,
    banned, can_reattest, agent_version, selectors, event_kind, event_created_at
) AS SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL;

CREATE TEMP TRIGGER node_creation_write INSTEAD OF INSERT ON node_creation BEGIN
    INSERT INTO attested_nodes (spiffe_id, attestation_type, serial_number, expires_at,
        new_serial_number, new_expires_at, banned, can_reattest, agent_version)
    VALUES (NEW.spiffe_id, NEW.attestation_type, NEW.serial_number, NEW.expires_at,
        NEW.new_serial_number, NEW.new_expires_at, NEW.banned, NEW.can_reattest,
        NEW.agent_version);
    DELETE FROM node_selectors WHERE NEW.selectors IS NOT NULL AND spiffe_id = NEW.spiffe_id;
    INSERT INTO node_selectors (spiffe_id, position, type, value)
    SELECT NEW.spiffe_id, key, json_extract(value, '$[0]'), json_extract(value, '$[1]')
    FROM json_each(NEW.selectors);
    INSERT INTO change_events (kind, object_id, created_at)
    VALUES (NEW.event_kind, NEW.spiffe_id, NEW.event_created_at);
END;
"""
"""Run once on the writer connection, after the schema is migrated."""

CREATE_NODE_SQL = (
    "INSERT INTO node_creation VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "RETURNING (SELECT json_group_array(json_array(type, value)) FROM "
    "(SELECT type, value FROM node_selectors WHERE spiffe_id = node_creation.spiffe_id "
    "ORDER BY position))"
)
"""The node's SPIFFE ID, its columns in ``node_columns`` order, :func:`selectors_json`, the
change event's kind and time; returns one row: the node's selectors as stored, in JSON."""


def selectors_json(selectors: Sequence[Selector]) -> str | None:
    """The selectors to store as the statement takes them; ``None`` for none (stored ones stay)."""
    if not selectors:
        return None
    return json.dumps([[selector.type, selector.value] for selector in selectors])


def stored_selectors(decoder: Decoder, stored: str) -> tuple[Selector, ...]:
    """The selectors the statement returned."""
    return tuple(decoder.selector(kind, value) for kind, value in json.loads(stored))
