"""Agent path templates: SPIRE's templates render, anything beyond substitution is refused."""

from __future__ import annotations

import pytest

from pyspire_sdk.agent_path import AgentPathTemplate
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

TD = TrustDomain("example.org")
SHA1 = "0beec7b5ea3f0fdbc95d0dd47f3c5bc275da8a33"
FACTS = {
    "PluginName": "x509pop",
    "Fingerprint": SHA1,
    "Subject": {"CommonName": "node1"},
    "ValidPrincipals": ["host1.example.org", "host1"],
    "URISanSelectors": {"datacenter": "dc1"},
    "Serial": 42,
}


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("{{ .PluginName }}/{{ .Fingerprint }}", f"/x509pop/{SHA1}"),
        ("/{{ .PluginName}}/{{ .Fingerprint }}", f"/x509pop/{SHA1}"),
        ("/cn/{{ .Subject.CommonName }}", "/cn/node1"),
        ("static/{{ index .ValidPrincipals 0 }}", "/static/host1.example.org"),
        ('dc/{{ index .URISanSelectors "datacenter" }}', "/dc/dc1"),
        ("serial/{{.Serial}}", "/serial/42"),
        ("plain", "/plain"),
    ],
)
def test_spire_templates_render(template: str, path: str) -> None:
    parsed = AgentPathTemplate.parse(template)
    assert parsed.render(FACTS) == path
    assert parsed.agent_id(TD, FACTS) == SpiffeId.parse(f"spiffe://example.org/spire/agent{path}")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ .PluginName | upper }}", "'|' is not supported"),
        ('{{ printf "%s" .PluginName }}', "'printf' is not supported"),
        ("{{ }}", "is not supported"),
        ("{{ $x := .PluginName }}", "is not supported"),
        ('{{ "index" .ValidPrincipals 0 }}', "is not supported"),
        ("{{ index .ValidPrincipals }}", "is not supported"),
        ("{{ index 0 .ValidPrincipals }}", "is not supported"),
        ("{{ .PluginName", "unclosed action"),
        ("x}}/{{ .PluginName }}", "without"),
        ("{{ call .F }}", "is not supported"),
    ],
)
def test_anything_beyond_substitution_is_refused_when_parsed(template: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        AgentPathTemplate.parse(template)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ .Missing }}", "refers to .Missing, which is not known"),
        ("{{ .Subject.Organization }}", "refers to .Subject.Organization"),
        ("{{ .PluginName.Inner }}", "refers to .PluginName.Inner"),
        ("{{ index .ValidPrincipals 5 }}", "refers to index .ValidPrincipals 5"),
        ('{{ index .URISanSelectors "rack" }}', "refers to index .URISanSelectors 'rack'"),
        ("{{ .ValidPrincipals }}", "is not text or a number"),
    ],
)
def test_a_field_the_facts_lack_is_an_error_not_an_empty_string(
    template: str, message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        AgentPathTemplate.parse(template).render(FACTS)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("cn/{{ .Subject.CommonName }}/", "must not end with '/'"),
        ("cn//{{ .Subject.CommonName }}", "empty segment"),
        ("cn/{{ .Value }}", "forbidden character"),
        ("{{ .Dots }}", r"'\.\.'"),
    ],
)
def test_a_rendered_path_that_is_no_spiffe_path_is_refused(template: str, message: str) -> None:
    facts = {**FACTS, "Value": "a b", "Dots": ".."}
    with pytest.raises(InvalidArgumentError, match=message):
        AgentPathTemplate.parse(template).agent_id(TD, facts)


def test_index_takes_a_field_as_its_key() -> None:
    template = AgentPathTemplate.parse("{{ index .URISanSelectors .Key }}")
    assert template.render({**FACTS, "Key": "datacenter"}) == "/dc1"


FIELDS = ("PluginName", "ProjectID", "InstanceID")


def test_fields_named_by_the_plugin_and_trim_markers() -> None:
    template = AgentPathTemplate.parse(
        "/{{ .PluginName }}/{{.ProjectID}}/{{- .InstanceID -}}", FIELDS
    )
    assert template.fields == ("PluginName", "ProjectID", "InstanceID")
    values = {"PluginName": "gcp_iit", "ProjectID": "p-1", "InstanceID": "42"}
    assert template.render(values) == "/gcp_iit/p-1/42"
    assert template.agent_id(TD, values) == SpiffeId.parse(
        "spiffe://example.org/spire/agent/gcp_iit/p-1/42"
    )


def test_literal_text_is_kept() -> None:
    template = AgentPathTemplate.parse("/nodes/{{ .InstanceID }}-x", FIELDS)
    assert template.agent_id(TD, {"InstanceID": "7"}).path == "/spire/agent/nodes/7-x"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("/{{ .Zone }}", r"field \.Zone is unknown: use one of \.InstanceID, \.PluginName"),
        ("/{{ .InstanceID | lower }}", "is not supported"),
        ("/{{ if .X }}a{{ end }}", "is not supported"),
        ("/{{ .InstanceID", "unclosed"),
        ("/a }}", "without"),
    ],
)
def test_templates_beyond_fields_are_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        AgentPathTemplate.parse(text, FIELDS)


@pytest.mark.parametrize(
    ("text", "value", "message"),
    [
        ("/{{ .InstanceID }}", "a b", "is not a valid"),
        ("/{{ .InstanceID }}", "", "is not a valid"),
        ("/x/{{ .InstanceID }}", "../..", "is not a valid"),
    ],
)
def test_rendered_paths_must_be_valid_spiffe_paths(text: str, value: str, message: str) -> None:
    template = AgentPathTemplate.parse(text, FIELDS)
    with pytest.raises(InvalidArgumentError, match=message):
        template.agent_id(TD, {"InstanceID": value})


def test_the_leading_slash_is_optional() -> None:
    template = AgentPathTemplate.parse("{{ .InstanceID }}", FIELDS)
    assert template.agent_id(TD, {"InstanceID": "x"}).path == "/spire/agent/x"
