"""Declarative configuration: loading TOML tables, reporting every issue, documenting settings."""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import pytest

from pyspire_sdk.config import (
    SettingDoc,
    check_port,
    describe_config,
    issues_from,
    load_config,
    setting,
    settings_table,
    type_name,
)
from pyspire_sdk.errors import ConfigError, ConfigIssue
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain


class Mode(enum.Enum):
    FAST = "fast"
    SAFE = "safe"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclass(frozen=True, kw_only=True)
class Pool:
    size: int = setting(4, description="connections kept open")
    idle: timedelta = setting(timedelta(minutes=5), description="close after idle")


@dataclass(frozen=True, kw_only=True)
class Upstream:
    name: str = setting(description="upstream name")
    weight: float = setting(1.0, description="share of traffic")


@dataclass(frozen=True, kw_only=True)
class Everything:
    text: str = setting(description="a string")
    count: int = setting(description="an integer")
    ratio: float = setting(0.5, description="a float")
    enabled: bool = setting(False, description="a boolean")
    ttl: timedelta = setting(timedelta(hours=1), description="a duration")
    path: Path = setting(Path("/var/lib/x"), description="a path")
    spiffe_id: SpiffeId | None = setting(None, description="an optional SPIFFE ID")
    trust_domain: TrustDomain = setting(TrustDomain("example.org"), description="a td")
    mode: Mode = setting(Mode.SAFE, description="an enum")
    level: Level = setting(Level.LOW, description="an int enum")
    flavour: Literal["a", "b"] = setting("a", description="a literal")
    port_or_name: int | str = setting(0, description="a union")
    tags: tuple[str, ...] = setting((), description="an array")
    ports: list[int] = setting(default_factory=list, description="a list")
    labels: dict[str, int] = setting(default_factory=dict, description="a table")
    pool: Pool = setting(default_factory=Pool, description="a nested table")
    upstreams: tuple[Upstream, ...] = setting((), description="an array of tables")
    password: str = setting("", description="a secret", secret=True)


@dataclass(frozen=True, kw_only=True)
class Secrets:
    token: str = setting(description="api token", secret=True)
    ttl: timedelta = setting(timedelta(1), description="secret duration", secret=True)
    owner: SpiffeId | None = setting(None, description="secret id", secret=True)
    keys: tuple[str, ...] = setting((), description="secret keys", secret=True)
    mode: Literal["x"] = setting("x", description="secret literal", secret=True)


@dataclass(frozen=True, kw_only=True)
class Window:
    low: int = setting(description="lower bound")
    high: int = setting(description="upper bound")

    def validate(self) -> Iterator[ConfigIssue]:
        if self.low > self.high:
            yield ConfigIssue("low", "must not be greater than high")
        if self.low == self.high:
            yield ConfigIssue("", "the window is empty")


@dataclass(frozen=True, kw_only=True)
class Outer:
    window: Window = setting(description="a validated table")
    windows: tuple[Window, ...] = setting((), description="validated tables")
    calls: int = setting(0, description="validate sees this")

    def validate(self) -> list[ConfigIssue]:
        return issues_from([("calls", "outer validate ran")]) if self.calls < 0 else []


@dataclass(frozen=True, kw_only=True)
class Checked:
    size: int = setting(1, description="must be positive")

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise ValueError("size must be positive")


@dataclass(frozen=True, kw_only=True)
class Empty:
    pass


def issues_of(config_type: type[Any], data: Mapping[str, Any] | None, path: str = "") -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load_config(config_type, data, path=path)
    return [str(issue) for issue in raised.value.issues]


# -- loading ----------------------------------------------------------------------------------


def test_every_field_type_loads_from_toml() -> None:
    document = tomllib.loads(
        """
        text = "hello"
        count = 3
        ratio = 2
        enabled = true
        ttl = "1h30m"
        path = "/tmp/data"
        spiffe_id = "spiffe://example.org/web"
        trust_domain = "spiffe://other.org"
        mode = "fast"
        level = 2
        flavour = "b"
        port_or_name = "http"
        tags = ["x", "y"]
        ports = [80, 443]
        labels = { a = 1, "b.c" = 2 }
        password = "hunter2"

        [pool]
        size = 8

        [[upstreams]]
        name = "one"

        [[upstreams]]
        name = "two"
        weight = 0.25
        """
    )
    config = load_config(Everything, document)
    assert config == Everything(
        text="hello",
        count=3,
        ratio=2.0,
        enabled=True,
        ttl=timedelta(hours=1, minutes=30),
        path=Path("/tmp/data"),
        spiffe_id=SpiffeId.parse("spiffe://example.org/web"),
        trust_domain=TrustDomain("other.org"),
        mode=Mode.FAST,
        level=Level.HIGH,
        flavour="b",
        port_or_name="http",
        tags=("x", "y"),
        ports=[80, 443],
        labels={"a": 1, "b.c": 2},
        pool=Pool(size=8),
        upstreams=(Upstream(name="one"), Upstream(name="two", weight=0.25)),
        password="hunter2",
    )
    assert isinstance(config.ratio, float)
    assert isinstance(config.tags, tuple)
    assert isinstance(config.ports, list)


def test_defaults_fill_missing_optional_keys() -> None:
    config = load_config(Everything, {"text": "t", "count": 1})
    assert config.ttl == timedelta(hours=1)
    assert config.pool == Pool()
    assert config.spiffe_id is None
    assert config.ports == []
    assert load_config(Empty, None) == Empty()
    assert load_config(Pool, {}) == Pool()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("text", 1, "text: expected a string, found integer 1"),
        ("count", "3", "count: expected an integer, found string '3'"),
        ("count", True, "count: expected an integer, found boolean true"),
        ("count", 1.5, "count: expected an integer, found float 1.5"),
        ("ratio", "x", "ratio: expected a number, found string 'x'"),
        ("ratio", False, "ratio: expected a number, found boolean false"),
        ("enabled", 1, "enabled: expected a boolean, found integer 1"),
        ("enabled", "true", "enabled: expected a boolean, found string 'true'"),
        ("ttl", "soon", "ttl: invalid duration 'soon'"),
        ("ttl", True, "ttl: expected a duration like '1h30m', found boolean true"),
        ("ttl", [], "ttl: expected a duration like '1h30m', found an array"),
        ("path", "", "path: expected a file path, found an empty string"),
        ("path", 5, "path: expected a file path, found integer 5"),
        ("spiffe_id", "http://x", "spiffe_id: invalid SPIFFE ID 'http://x': scheme"),
        ("spiffe_id", 1, "spiffe_id: expected a SPIFFE ID, found integer 1"),
        ("trust_domain", "Bad", "trust_domain: invalid trust domain 'Bad': "),
        ("mode", "slow", "mode: expected one of 'fast', 'safe', found string 'slow'"),
        ("level", "2", "level: expected one of 1, 2, found string '2'"),
        ("level", True, "level: expected one of 1, 2, found boolean true"),
        ("flavour", "c", "flavour: expected one of 'a', 'b', found string 'c'"),
        ("port_or_name", 1.5, "port_or_name: expected an integer or a string, found float 1.5"),
        ("tags", "x", "tags: expected an array of strings, found string 'x'"),
        ("tags", ["x", 2], "tags[1]: expected a string, found integer 2"),
        ("ports", [80, "x"], "ports[1]: expected an integer, found string 'x'"),
        ("labels", [], "labels: expected a table of integers, found an array"),
        ("labels", {"a": "x"}, "labels.a: expected an integer, found string 'x'"),
        ("labels", {"a.b": "x"}, "labels.\"a.b\": expected an integer, found string 'x'"),
        ("pool", 3, "pool: expected a table, found integer 3"),
        ("pool", {"size": "x"}, "pool.size: expected an integer, found string 'x'"),
        ("pool", {"sizes": 1}, "pool.sizes: unknown key; known keys: idle, size"),
        ("upstreams", [{}], "upstreams[0].name: required key is missing (expected a string)"),
        ("upstreams", [{"name": "a"}, 1], "upstreams[1]: expected a table, found integer 1"),
        ("text", None, "text: expected a string, found nothing (null)"),
    ],
)
def test_each_wrong_value_is_reported_with_its_path(key: str, value: Any, message: str) -> None:
    data = {"text": "t", "count": 1, key: value}
    issues = issues_of(Everything, data)
    assert len(issues) == 1
    assert issues[0].startswith(message), issues[0]


def test_unknown_keys_list_the_known_keys() -> None:
    assert issues_of(Pool, {"size": 1, "colour": "red"}) == [
        "colour: unknown key; known keys: idle, size"
    ]
    assert issues_of(Empty, {"x": 1}) == [
        "x: unknown key; known keys: (none: this table takes no settings)"
    ]


def test_missing_required_keys_say_what_is_expected() -> None:
    assert issues_of(Upstream, {}) == ["name: required key is missing (expected a string)"]


def test_every_issue_is_reported_at_once_under_the_table_path() -> None:
    data = {
        "count": "many",
        "colour": "red",
        "tags": [1, "ok", 2],
        "pool": {"size": "big", "extra": True},
        "upstreams": [{"name": "a"}, {"weight": "heavy"}],
        "labels": {"x": 1, "y": "2"},
    }
    issues = issues_of(Everything, data, path="server.plugins.demo")
    assert issues == [
        "server.plugins.demo.colour: unknown key; known keys: count, enabled, flavour, labels, "
        "level, mode, password, path, pool, port_or_name, ports, ratio, spiffe_id, tags, text, "
        "trust_domain, ttl, upstreams",
        "server.plugins.demo.text: required key is missing (expected a string)",
        "server.plugins.demo.count: expected an integer, found string 'many'",
        "server.plugins.demo.tags[0]: expected a string, found integer 1",
        "server.plugins.demo.tags[2]: expected a string, found integer 2",
        "server.plugins.demo.labels.y: expected an integer, found string '2'",
        "server.plugins.demo.pool.extra: unknown key; known keys: idle, size",
        "server.plugins.demo.pool.size: expected an integer, found string 'big'",
        "server.plugins.demo.upstreams[1].name: required key is missing (expected a string)",
        "server.plugins.demo.upstreams[1].weight: expected a number, found string 'heavy'",
    ]


def test_config_error_carries_issue_objects_and_a_joined_message() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(Upstream, {"weight": "x"}, path="a")
    error = raised.value
    assert error.issues == (
        ConfigIssue("a.name", "required key is missing (expected a string)"),
        ConfigIssue("a.weight", "expected a number, found string 'x'"),
    )
    assert str(error) == (
        "a.name: required key is missing (expected a string); "
        "a.weight: expected a number, found string 'x'"
    )


def test_a_non_table_document_is_rejected() -> None:
    assert issues_of(Pool, [1, 2], path="x.y") == ["x.y: expected a table, found an array"]  # type: ignore[arg-type]


def test_load_config_needs_a_dataclass() -> None:
    with pytest.raises(TypeError, match="needs a dataclass type"):
        load_config(dict, {})


def test_unsupported_field_type_is_a_programming_error() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Odd:
        value: complex = setting(description="not supported")

    with pytest.raises(TypeError, match="is not supported"):
        load_config(Odd, {"value": 1})


def test_fixed_length_tuple_is_a_programming_error() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Pair:
        value: tuple[int, str] = setting(description="not supported")

    with pytest.raises(TypeError, match=r"use tuple\[X, \.\.\.\]"):
        load_config(Pair, {"value": [1, "a"]})


# -- secrets ----------------------------------------------------------------------------------

SECRET_VALUE = "s3cr3t-value-do-not-show"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("token", 12345, "token: expected a string, found a value (hidden)"),
        ("ttl", SECRET_VALUE, "ttl: expected a duration like '1h30m', found a value (hidden)"),
        ("owner", SECRET_VALUE, "owner: expected a SPIFFE ID, found a value (hidden)"),
        ("keys", ["ok", 7], "keys[1]: expected a string, found a value (hidden)"),
        ("mode", SECRET_VALUE, "mode: expected one of 'x', found a value (hidden)"),
    ],
)
def test_secret_values_never_appear_in_messages(key: str, value: Any, message: str) -> None:
    data = {"token": "fine", key: value}
    with pytest.raises(ConfigError) as raised:
        load_config(Secrets, data)
    assert [str(issue) for issue in raised.value.issues] == [message]
    assert SECRET_VALUE not in str(raised.value)
    assert "12345" not in str(raised.value)


def test_secret_values_stay_out_of_repr() -> None:
    config = load_config(Secrets, {"token": SECRET_VALUE})
    assert config.token == SECRET_VALUE
    assert SECRET_VALUE not in repr(config)
    assert "token" not in repr(config)


def test_setting_refuses_two_defaults() -> None:
    with pytest.raises(TypeError, match="not both"):
        setting(1, default_factory=int, description="x")


# -- validate() and __post_init__ -------------------------------------------------------------


def test_validate_issues_are_placed_under_the_table() -> None:
    assert issues_of(Window, {"low": 5, "high": 1}, path="agent.window") == [
        "agent.window.low: must not be greater than high"
    ]
    assert issues_of(Window, {"low": 1, "high": 1}, path="agent.window") == [
        "agent.window: the window is empty"
    ]
    assert issues_of(Window, {"low": 1, "high": 1}) == ["the window is empty"]
    assert load_config(Window, {"low": 1, "high": 2}) == Window(low=1, high=2)


def test_nested_validate_runs_per_table_and_paths_include_indexes() -> None:
    data = {
        "window": {"low": 3, "high": 1},
        "windows": [{"low": 0, "high": 1}, {"low": 2, "high": 2}],
    }
    assert issues_of(Outer, data, path="o") == [
        "o.window.low: must not be greater than high",
        "o.windows[1]: the window is empty",
    ]


def test_outer_validate_runs_only_when_everything_inside_is_valid() -> None:
    assert issues_of(Outer, {"window": {"low": 3, "high": 1}, "calls": -1}) == [
        "window.low: must not be greater than high"
    ]
    assert issues_of(Outer, {"window": {"low": 0, "high": 1}, "calls": -1}) == [
        "calls: outer validate ran"
    ]


def test_validate_does_not_run_when_a_field_failed() -> None:
    assert issues_of(Window, {"low": "x", "high": 1}) == [
        "low: expected an integer, found string 'x'"
    ]


def test_value_error_from_post_init_becomes_an_issue() -> None:
    assert issues_of(Checked, {"size": 0}, path="c") == ["c: size must be positive"]
    assert load_config(Checked, {"size": 2}) == Checked(size=2)


def test_validate_must_yield_config_issues() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Sloppy:
        def validate(self) -> list[str]:
            return ["not an issue"]

    with pytest.raises(TypeError, match="must yield ConfigIssue"):
        load_config(Sloppy, {})


# -- documentation ----------------------------------------------------------------------------


def test_describe_config_rows() -> None:
    rows = {row.key: row for row in describe_config(Everything)}
    assert rows["text"] == SettingDoc("text", "a string", True, "", "a string")
    assert rows["ratio"] == SettingDoc("ratio", "a number", False, "0.5", "a float")
    assert rows["enabled"].default == "false"
    assert rows["ttl"].default == "1h"
    assert rows["ttl"].type_name == "a duration like '1h30m'"
    assert rows["path"].default == "/var/lib/x"
    assert rows["spiffe_id"].default == "(unset)"
    assert rows["spiffe_id"].type_name == "a SPIFFE ID"
    assert rows["trust_domain"].default == "example.org"
    assert rows["mode"].default == "'safe'"
    assert rows["mode"].type_name == "one of 'fast', 'safe'"
    assert rows["flavour"].type_name == "one of 'a', 'b'"
    assert rows["port_or_name"].type_name == "an integer or a string"
    assert rows["tags"] == SettingDoc("tags", "an array of strings", False, "[]", "an array")
    assert rows["ports"].default == "[]"
    assert rows["labels"].default == "{}"
    assert rows["labels"].type_name == "a table of integers"
    assert rows["pool"].type_name == "a table"
    assert rows["pool.size"] == SettingDoc(
        "pool.size", "an integer", False, "4", "connections kept open"
    )
    assert rows["pool.idle"].default == "5m"
    assert rows["upstreams"].type_name == "an array of tables"
    assert rows["upstreams[].name"].required
    assert rows["upstreams[].weight"].default == "1.0"
    assert rows["password"].secret
    assert rows["password"].default == "''"
    assert list(rows)[:3] == ["text", "count", "ratio"]


def test_describe_config_lists_the_keys_of_a_table_of_named_tables() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Clusters:
        clusters: dict[str, Upstream] = setting(default_factory=dict, description="by name")

    rows = [(row.key, row.type_name, row.required) for row in describe_config(Clusters)]
    assert rows == [
        ("clusters", "a table of tables", False),
        ("clusters.<name>.name", "a string", True),
        ("clusters.<name>.weight", "a number", False),
    ]
    loaded = load_config(Clusters, {"clusters": {"a": {"name": "x"}}})
    assert loaded.clusters == {"a": Upstream(name="x")}
    with pytest.raises(ConfigError, match=r"clusters\.b\.name: required key is missing"):
        load_config(Clusters, {"clusters": {"b": {}}})


def test_describe_config_hides_secret_defaults() -> None:
    @dataclass(frozen=True, kw_only=True)
    class WithDefault:
        token: str = setting("built-in-token", description="x", secret=True)

    (row,) = describe_config(WithDefault)
    assert row.default == "(hidden)"
    assert row.secret


def test_type_name_phrases() -> None:
    assert type_name(int) == "an integer"
    assert type_name(tuple[SpiffeId, ...]) == "an array of SPIFFE IDs"
    assert type_name(dict[str, bool]) == "a table of booleans"
    assert type_name(TrustDomain | None) == "a trust domain name"


def test_settings_table_is_the_markdown_of_describe_config() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Table:
        path: Path = setting(description="where it goes")
        retries: int = setting(3, description="how often to try")

    assert settings_table(Table) == (
        "| key | type | required | default | description |\n"
        "|---|---|---|---|---|\n"
        "| `path` | a file path | yes |  | where it goes |\n"
        "| `retries` | an integer | no | 3 | how often to try |"
    )


def test_settings_table_escapes_what_markdown_would_swallow() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Table:
        path: str = setting("<data_dir>/x", description="as <namespace>:<name>, a|b")

    assert settings_table(Table).splitlines()[2] == (
        "| `path` | a string | no | '&lt;data_dir&gt;/x' | "
        "as &lt;namespace&gt;:&lt;name&gt;, a\\|b |"
    )


def test_check_port_names_the_key_and_the_range() -> None:
    assert list(check_port("port", 0, allow_zero=True)) == []
    assert list(check_port("port", 65535, allow_zero=False)) == []
    assert list(check_port("port", 0, allow_zero=False)) == [
        ConfigIssue("port", "must be between 1 and 65535, found 0")
    ]
    assert list(check_port("bind_port", 70000, allow_zero=True)) == [
        ConfigIssue("bind_port", "must be between 0 and 65535, found 70000")
    ]
