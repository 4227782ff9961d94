"""The agent's join token from ``join_token`` or from ``join_token_file``: a file that keeps the
token off the command line is read once, and refused when other users may read or change it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pyspire.config import AgentConfig, read_join_token, read_join_token_file
from pyspire.config.join_token import MAX_JOIN_TOKEN_FILE_BYTES
from pyspire_sdk.config import load_config
from pyspire_sdk.errors import ConfigError

TOKEN = "3f1c2a9e-5d4b-4c8a-9e1f-2b3c4d5e6f70"
BASE = {
    "trust_domain": "example.org",
    "server_address": "127.0.0.1",
    "server_port": 8081,
    "trust_bundle_path": "/etc/pyspire/bundle.pem",
}


def token_file(tmp_path: Path, content: bytes, mode: int = 0o600, name: str = "token") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    os.chmod(path, mode)
    return path


def refusal(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        read_join_token_file(path)
    [issue] = caught.value.issues
    assert issue.path == "join_token_file"
    return issue.message


def load(**table: Any) -> AgentConfig:
    return load_config(AgentConfig, {**BASE, **table}, path="agent")


def test_the_token_is_read_without_its_newline(tmp_path: Path) -> None:
    assert read_join_token_file(token_file(tmp_path, f"{TOKEN}\n".encode())) == TOKEN
    group_readable = token_file(tmp_path, TOKEN.encode(), mode=0o640, name="group")
    assert read_join_token_file(group_readable) == TOKEN


def test_a_link_to_a_private_file_is_followed(tmp_path: Path) -> None:
    target = token_file(tmp_path, TOKEN.encode())
    link = tmp_path / "link"
    link.symlink_to(target)
    assert read_join_token_file(link) == TOKEN


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o602, 0o666])
def test_a_file_others_may_read_or_change_is_refused(tmp_path: Path, mode: int) -> None:
    path = token_file(tmp_path, TOKEN.encode(), mode=mode)
    message = refusal(path)
    assert message == (
        f"{str(path)!r} has mode {mode:04o}: other users may read or change the join token; "
        f"restrict it (chmod o-rw {path})"
    )
    assert TOKEN not in message


def test_unusable_files_are_refused_with_the_reason(tmp_path: Path) -> None:
    assert refusal(tmp_path / "missing") == (
        f"cannot read {str(tmp_path / 'missing')!r}: no such file or directory"
    )
    folder = tmp_path / "folder"
    folder.mkdir(mode=0o700)
    assert refusal(folder) == f"{str(folder)!r} is not a regular file"
    assert refusal(token_file(tmp_path, b" \n", name="blank")).endswith("is empty")
    assert refusal(token_file(tmp_path, b"a b\n", name="two")).endswith(
        "holds more than one word; it must hold the token alone"
    )
    assert refusal(token_file(tmp_path, b"\xff\xfe", name="binary")).endswith("is not UTF-8 text")
    big = token_file(tmp_path, b"x" * (MAX_JOIN_TOKEN_FILE_BYTES + 1), name="big")
    assert refusal(big).endswith(
        f"larger than the {MAX_JOIN_TOKEN_FILE_BYTES} bytes a join token file may have"
    )


def test_the_configuration_gives_the_token_inline_or_from_its_file(tmp_path: Path) -> None:
    assert read_join_token(load()) is None
    assert read_join_token(load(join_token=TOKEN)) == TOKEN
    path = token_file(tmp_path, f"{TOKEN}\n".encode())
    config = load(join_token_file=str(path))
    assert config.join_token_file == path
    assert read_join_token(config) == TOKEN


def test_join_token_and_its_file_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(join_token=TOKEN, join_token_file=str(tmp_path / "token"))
    assert [(issue.path, issue.message) for issue in caught.value.issues] == [
        ("agent.join_token_file", "join_token and join_token_file exclude each other: set one")
    ]
    assert TOKEN not in str(caught.value)
