"""Plugin distributions made on the fly, for tests of real entry-point discovery.

pyspire finds plugins through the ``pyspire.plugins`` entry points of installed distributions.
A test that wants that real path, in-process or in a real ``pyspire-server`` or
``pyspire-agent`` process, writes a distribution into a directory of its own the way pip leaves
one (the modules, plus a ``.dist-info`` with ``METADATA`` and ``entry_points.txt``) and puts the
directory on the search path: ``sys.path`` in the test process (the ``plugin_site`` fixture
gives a fresh directory already there, and forgets the modules imported from it afterwards),
``PYTHONPATH`` for a child process (:func:`environment_with_path`)::

    site = tmp_path / "site"
    install_distribution(
        site,
        "pyspire-svidstore-test",
        entry_points={"test_store": "pyspire_test_store"},
        modules={"pyspire_test_store": Path("my_store.py").read_text()},
    )
    subprocess.run([agent, "run", ...], env=environment_with_path(site))
"""

from __future__ import annotations

__all__ = ["environment_with_path", "install_distribution"]

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from pyspire_sdk.plugin import ENTRY_POINT_GROUP

_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def install_distribution(
    site: Path,
    name: str,
    entry_points: Mapping[str, str],
    *,
    modules: Mapping[str, str] | None = None,
    packages: Sequence[Path] = (),
    version: str = "1.0",
    group: str = ENTRY_POINT_GROUP,
) -> Path:
    """Write distribution ``name`` into ``site`` (created when missing); its ``.dist-info``.

    ``entry_points`` maps entry-point names to what they load (``"module"`` or
    ``"module:attribute"``) in ``group``; ``modules`` maps dotted module names to their source
    (``"pkg.plugin"`` makes the package ``pkg`` too); each of ``packages`` (a package
    directory) is copied in whole, under its own name. Raises ``FileExistsError`` when ``site``
    already holds that version of the distribution, and ``ValueError`` for a module name that
    Python could not import.
    """
    site.mkdir(parents=True, exist_ok=True)
    for module_name, source in (modules or {}).items():
        if not _MODULE_NAME.fullmatch(module_name):
            raise ValueError(f"modules: {module_name!r} is not a module name")
        *parents, leaf = module_name.split(".")
        folder = site
        for parent in parents:
            folder = folder / parent
            folder.mkdir(exist_ok=True)
            (folder / "__init__.py").touch()
        (folder / f"{leaf}.py").write_text(source)
    for package in packages:
        shutil.copytree(package, site / package.name, ignore=shutil.ignore_patterns("__pycache__"))
    info = site / f"{re.sub(r'[-_.]+', '_', name)}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}")
    return info


def environment_with_path(site: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (the process's environment by default) with ``site`` first on
    ``PYTHONPATH``, so a child Python process discovers what :func:`install_distribution` put
    there."""
    environment = dict(os.environ if environ is None else environ)
    existing = environment.get("PYTHONPATH")
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), existing]))
    return environment
