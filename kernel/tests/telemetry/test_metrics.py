"""The metrics registry: names as SPIRE's, call counters, gauges read at scrape time, and the
exposition a scraper parses."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyspire.telemetry.metrics import PrometheusMetrics, rpc_metric_name


def samples(metrics: PrometheusMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, parsed as Prometheus parses it."""
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


@pytest.mark.parametrize(
    ("method", "name"),
    [
        ("/spire.api.server.agent.v1.Agent/AttestAgent", "rpc.agent.v1.agent.attest_agent"),
        ("/spire.api.server.svid.v1.SVID/BatchNewX509SVID", "rpc.svid.v1.svid.batch_new_x509svid"),
        ("/spire.api.server.svid.v1.SVID/NewJWTSVID", "rpc.svid.v1.svid.new_jwtsvid"),
        (
            "/spire.api.server.entry.v1.Entry/GetAuthorizedEntries",
            "rpc.entry.v1.entry.get_authorized_entries",
        ),
        (
            "/spire.api.server.localauthority.v1.LocalAuthority/TaintX509UpstreamAuthority",
            "rpc.localauthority.v1.local_authority.taint_x509_upstream_authority",
        ),
        ("/SpiffeWorkloadAPI/FetchX509SVID", "rpc.workload_api.fetch_x509svid"),
        ("/SpiffeWorkloadAPI/FetchX509Bundles", "rpc.workload_api.fetch_x509_bundles"),
        ("/grpc.health.v1.Health/Check", "rpc.health.check"),
        ("/spire.api.server.debug.v1.Debug/GetInfo", "rpc.debug.v1.debug.get_info"),
    ],
)
def test_rpc_names_are_spires(method: str, name: str) -> None:
    # The expected names are those of SPIRE's pkg/common/api/middleware/names_test.go.
    assert rpc_metric_name(method) == name


def test_counters_and_histograms_reach_the_exposition() -> None:
    metrics = PrometheusMetrics("pyspire_server")
    metrics.increment("server_ca.sign.x509_svid")
    metrics.increment("server_ca.sign.x509_svid", 2)
    metrics.observe("some.latency", 0.25, method="GetBundle")
    found = samples(metrics)
    assert found[("pyspire_server_server_ca_sign_x509_svid_total", ())] == 3.0
    assert found[("pyspire_server_some_latency_count", (("method", "GetBundle"),))] == 1.0


def test_a_call_counter_counts_and_times_calls_by_status() -> None:
    metrics = PrometheusMetrics("pyspire_server")
    calls = metrics.call_counter("node.attestor.attest", attestor="join_token")
    calls.record("OK", 0.5)
    calls.record("OK", 1.5)
    calls.record("PERMISSION_DENIED", 0.1)
    found = samples(metrics)
    ok = (("attestor", "join_token"), ("status", "OK"))
    denied = (("attestor", "join_token"), ("status", "PERMISSION_DENIED"))
    assert found[("pyspire_server_node_attestor_attest_total", ok)] == 2.0
    assert found[("pyspire_server_node_attestor_attest_total", denied)] == 1.0
    assert found[("pyspire_server_node_attestor_attest_elapsed_time_count", ok)] == 2.0
    assert found[("pyspire_server_node_attestor_attest_elapsed_time_sum", ok)] == 2.0
    # The same counter asked for again is the same series.
    metrics.call_counter("node.attestor.attest", attestor="join_token").record("OK", 0.0)
    assert samples(metrics)[("pyspire_server_node_attestor_attest_total", ok)] == 3.0


def test_a_gauge_is_read_at_each_scrape() -> None:
    metrics = PrometheusMetrics("pyspire_agent")
    size = [3]
    metrics.gauge("lru_cache_svid_map_size", lambda: size[0])
    assert samples(metrics)[("pyspire_agent_lru_cache_svid_map_size", ())] == 3.0
    size[0] = 7
    assert samples(metrics)[("pyspire_agent_lru_cache_svid_map_size", ())] == 7.0


def test_openmetrics_is_served_when_asked_for() -> None:
    metrics = PrometheusMetrics("pyspire_agent")
    metrics.increment("x")
    body, content_type = metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_a_metric_keeps_its_label_names() -> None:
    metrics = PrometheusMetrics("pyspire_agent")
    metrics.increment("x", kind="a")
    with pytest.raises(ValueError):  # noqa: PT011 - prometheus_client raises a bare ValueError
        metrics.increment("x", other="b")
