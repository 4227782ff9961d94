"""The server's ID: made once in the data directory, the same at every start after."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyspire.server.instance import SERVER_ID_FILE, load_server_id
from pyspire_sdk.errors import ConfigError


async def test_the_id_is_made_once_and_kept_private(tmp_path: Path) -> None:
    first = await load_server_id(tmp_path)
    assert len(first) == 32
    assert (tmp_path / SERVER_ID_FILE).stat().st_mode & 0o777 == 0o600
    assert await load_server_id(tmp_path) == first
    (tmp_path / "other").mkdir()
    assert await load_server_id(tmp_path / "other") != first


async def test_a_file_that_is_not_an_id_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / SERVER_ID_FILE).write_text("../../etc\n")
    with pytest.raises(ConfigError, match=r"^data_dir: .*server-id: not a server ID"):
        await load_server_id(tmp_path)
