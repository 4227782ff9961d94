"""``pyspire-plugin new``: write a ready-to-install plugin package of any plugin type.

A plugin author depends on the SDK only, so the scaffold ships with it. The package it writes
builds with hatchling, declares its entry point, configuration dataclass and a working minimal
implementation, documents its settings in its README (the table comes from the declaration) and
tests itself with the SDK's contract suite of its type, in pytest-asyncio's strict mode. The
templates live in ``templates/``: ``common/`` for every package, one folder per plugin type.
"""
