"""Agent path templates: SPIRE's field syntax, and refusals at parse time."""

from __future__ import annotations

import pytest

from pyspire_sdk.agent_path import AgentPathTemplate
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

FIELDS = ("PluginName", "ProjectID", "InstanceID")
TD = TrustDomain("example.org")


def test_spire_default_template_renders_the_agent_id() -> None:
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
        ("/a }}", "stray"),
    ],
)
def test_templates_beyond_fields_are_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        AgentPathTemplate.parse(text, FIELDS)


@pytest.mark.parametrize(
    ("text", "value", "message"),
    [
        ("{{ .InstanceID }}", "x", "does not start with '/'"),
        ("/{{ .InstanceID }}", "a b", "is not valid"),
        ("/{{ .InstanceID }}", "", "is not valid"),
        ("/x/{{ .InstanceID }}", "../..", "is not valid"),
    ],
)
def test_rendered_paths_must_be_valid_spiffe_paths(text: str, value: str, message: str) -> None:
    template = AgentPathTemplate.parse(text, FIELDS)
    with pytest.raises(InvalidArgumentError, match=message):
        template.agent_id(TD, {"InstanceID": value})
