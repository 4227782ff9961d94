"""Private directories and atomic private files: modes whatever the umask, no torn writes."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyspire_sdk.files import (
    LooseFileModeError,
    make_private_directory,
    read_private_file,
    write_file_atomically,
    write_private_file,
)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("permissive_umask")
def test_missing_directories_are_created_owner_only(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c"
    make_private_directory(target)
    for folder in (tmp_path / "a", tmp_path / "a" / "b", target):
        assert mode_of(folder) == 0o700, folder


def test_existing_directory_is_kept_unless_asked_to_tighten(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    make_private_directory(shared)
    assert mode_of(shared) == 0o755
    make_private_directory(shared, tighten=True)
    assert mode_of(shared) == 0o700


def test_a_file_in_the_way_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("not a directory")
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        make_private_directory(blocker)


@pytest.mark.usefixtures("permissive_umask")
def test_file_is_written_owner_only_and_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "secret.json"
    assert write_private_file(target, b"first") is True
    assert mode_of(target) == 0o600
    target.chmod(0o644)
    write_private_file(target, b"second")
    assert target.read_bytes() == b"second"
    assert mode_of(target) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "secret.json"
    write_private_file(target, b"old")

    def refuse(_src: object, _dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        write_private_file(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.json"]


@pytest.mark.usefixtures("permissive_umask")
def test_a_file_for_others_gets_its_mode_from_the_start(tmp_path: Path) -> None:
    target = tmp_path / "bundle.json"
    write_file_atomically(target, b"public", mode=0o644)
    assert target.read_bytes() == b"public"
    assert mode_of(target) == 0o644
    write_file_atomically(target, b"still public", mode=0o644)
    assert target.read_bytes() == b"still public"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.json"]


def test_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_file_atomically(tmp_path / "absent" / "file", b"data", mode=0o644)


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_read_private_file_reads_an_owner_only_file(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(b"secret")
    path.chmod(mode)
    assert read_private_file(path) == b"secret"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o610, 0o601, 0o620, 0o602, 0o666])
def test_read_private_file_refuses_any_access_by_group_or_others(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(b"secret")
    path.chmod(mode)
    with pytest.raises(LooseFileModeError, match=rf"{path} has mode {mode:04o}"):
        read_private_file(path)


def test_read_private_file_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(OSError, match=r"(?i)directory|not a regular file"):
        read_private_file(tmp_path)
