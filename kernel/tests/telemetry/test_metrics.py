from __future__ import annotations

import pytest

from pyspire.telemetry.metrics import PrometheusMetrics


def test_counters_and_histograms_reach_the_exposition() -> None:
    metrics = PrometheusMetrics("pyspire_server")
    metrics.increment("server_ca.sign.x509_svid", status="ok")
    metrics.increment("server_ca.sign.x509_svid", 2, status="ok")
    metrics.observe("rpc.call.elapsed_time", 0.25, method="GetBundle")
    text = metrics.exposition().decode()
    assert 'pyspire_server_server_ca_sign_x509_svid_total{status="ok"} 3.0' in text
    assert 'pyspire_server_rpc_call_elapsed_time_count{method="GetBundle"} 1.0' in text


def test_a_metric_keeps_its_label_names() -> None:
    metrics = PrometheusMetrics("pyspire_agent")
    metrics.increment("x", kind="a")
    with pytest.raises(ValueError):  # noqa: PT011 - prometheus_client raises a bare ValueError
        metrics.increment("x", other="b")
