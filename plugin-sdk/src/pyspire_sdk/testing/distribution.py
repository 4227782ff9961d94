"""Installing a plugin distribution for a test, as pip would leave it, without pip.

pyspire finds plugins only through the entry points of installed distributions (group
``pyspire.plugins``). To test that a plugin really is found that way, write it into a directory
as an installed distribution (its modules or packages, and a ``.dist-info`` with ``METADATA``
and ``entry_points.txt``), then put the directory on the search path:

- in the test process, with the ``plugin_site`` fixture, which puts a fresh directory on
  ``sys.path`` for one test and forgets the modules imported from it afterwards;
- for a server or agent started as a process, by naming the directory in ``PYTHONPATH``.

Either way ``importlib.metadata`` discovers the distribution exactly as an installed one::

    def test_my_notifier_is_found(plugin_site):
        install_distribution(
            plugin_site,
            "pyspire-notifier-mine",
            {"mine": "my_notifier.plugin"},
            packages=[Path(__file__).parent / "my_notifier"],
        )
        discovery = Discovery.load()
"""

from __future__ import annotations

__all__ = ["install_distribution"]

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from pyspire_sdk.plugin import ENTRY_POINT_GROUP


def install_distribution(
    site: Path,
    name: str,
    entry_points: Mapping[str, str],
    *,
    modules: Mapping[str, str] | None = None,
    packages: Sequence[Path] = (),
    version: str = "1.0",
) -> Path:
    """Write the distribution ``name`` into ``site``; return its ``.dist-info`` directory.

    ``entry_points`` maps entry-point names to the modules they name (in the group
    ``pyspire.plugins``); ``modules`` maps top-level module names to their source; each of
    ``packages`` (a package directory) is copied in whole, under its own name.
    """
    for module_name, source in (modules or {}).items():
        (site / f"{module_name}.py").write_text(source)
    for package in packages:
        shutil.copytree(package, site / package.name, ignore=shutil.ignore_patterns("__pycache__"))
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
    return info
