"""``pyspire-plugin new``: the names it derives and how it refuses bad input, leaving nothing
behind. (That what it writes installs, passes its tests and is discovered is checked end to end
in ``tests/authoring/test_scaffold.py``.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyspire_sdk._scaffold.cli import main
from pyspire_sdk._scaffold.naming import PluginNames
from pyspire_sdk._scaffold.writer import ScaffoldError, write_plugin_package
from pyspire_sdk.plugin import distribution_name


def test_names_follow_the_distribution_convention() -> None:
    names = PluginNames("node_attestor", "join_token")
    assert names.distribution == "pyspire-nodeattestor-join-token"
    assert names.distribution == distribution_name("node_attestor", "join_token")
    assert names.package == "pyspire_nodeattestor_join_token"
    assert names.prefix == "JoinToken"
    assert names.module == "join_token_node_attestor"
    assert PluginNames("workload_attestor", "k8s-psat").prefix == "K8sPsat"


@pytest.mark.parametrize("name", ["Session", "1st", "has space", "a__b", "trailing_", "", "ä"])
def test_an_unusable_name_is_refused_with_the_rule(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["new", "--type", "notifier", "--name", name, "--dir", str(tmp_path / "p")])
    assert exited.value.code == 2
    assert "use lower-case letters and digits, starting with a letter" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_an_unknown_type_lists_the_types(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["new", "--type", "workload_atestor", "--name", "x"])
    assert exited.value.code == 2
    assert "invalid choice: 'workload_atestor'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown plugin type 'workload_atestor'; known types"):
        write_plugin_package("workload_atestor", "x", Path("unused"))


def test_an_existing_folder_is_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "mine.txt").write_text("keep")
    status = main(["new", "--type", "notifier", "--name", "audit", "--dir", str(target)])
    assert status == 1
    assert "taken already exists and is not an empty directory" in capsys.readouterr().err
    assert os.listdir(target) == ["mine.txt"]
    assert sorted(os.listdir(tmp_path)) == ["taken"]


def test_an_empty_folder_is_filled(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    assert main(["new", "--type", "notifier", "--name", "audit", "--dir", str(target)]) == 0
    assert (target / "src" / "pyspire_notifier_audit" / "py.typed").is_file()
    assert sorted(os.listdir(tmp_path)) == ["empty"]


def test_a_parent_that_is_not_a_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ScaffoldError, match="is not a directory"):
        write_plugin_package("notifier", "audit", tmp_path / "file" / "package")


def test_the_readme_shows_the_settings_table_of_the_declaration(tmp_path: Path) -> None:
    write_plugin_package("bundle_publisher", "web", tmp_path / "web")
    readme = (tmp_path / "web" / "README.md").read_text()
    assert "| `path` | a file path | yes |  | the file to write the trust bundle to" in readme
    assert "[server.plugins.bundle_publisher.web]" in readme
    assert "`pyspire-server plugins` lists it once installed" in readme
