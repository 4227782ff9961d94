"""Atomic file writes: new content in one step, the requested mode from the start, no debris."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pyspire_sdk.files import PRIVATE_FILE_MODE, write_file_atomically


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_and_replaces_with_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "bundle.json"
    write_file_atomically(target, b"first")
    assert target.read_bytes() == b"first"
    assert mode_of(target) == PRIVATE_FILE_MODE
    write_file_atomically(target, b"second", mode=0o644)
    assert target.read_bytes() == b"second"
    assert mode_of(target) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["bundle.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "svid.pem"
    write_file_atomically(target, b"old")
    (tmp_path / "blocker").mkdir()
    with pytest.raises(IsADirectoryError):
        write_file_atomically(tmp_path / "blocker", b"new")
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["blocker", "svid.pem"]


def test_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_file_atomically(tmp_path / "absent" / "file", b"data")
