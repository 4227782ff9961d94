"""Metrics: one registry per process, counters and histograms made on first use.

Names are dotted as SPIRE's (``rpc.agent.v1.agent.attest_agent``); the Prometheus names are the
process prefix (``pyspire_server`` / ``pyspire_agent``) plus the dotted name with dots turned
into underscores. Label names are fixed by a metric's first use; a later use with other label
names is a programming error and raises, so dashboards never see a metric change shape.
"""

from __future__ import annotations

import re
import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

_INVALID = re.compile(r"[^a-zA-Z0-9_]")

# Names of metrics the kernel reports, in one place.
CA_X509_PREPARED = "ca.manager.x509_ca.prepare"
CA_X509_ACTIVATED = "ca.manager.x509_ca.activate"
CA_JWT_PREPARED = "ca.manager.jwt_key.prepare"
CA_JWT_ACTIVATED = "ca.manager.jwt_key.activate"
SVID_X509_SIGNED = "server_ca.sign.x509_svid"
SVID_JWT_SIGNED = "server_ca.sign.jwt_svid"
NODE_ATTESTED = "node.attestor.attested"
NOTIFIER_NOTIFIED = "notifier.notify"
BUNDLE_PUBLISHED = "bundle_publisher.publish"
RPC_CALL = "rpc.call"
RPC_ELAPSED = "rpc.call.elapsed_time"


class PrometheusMetrics:
    """A :class:`pyspire_sdk.plugin.Metrics` backed by a Prometheus registry."""

    def __init__(self, prefix: str, registry: CollectorRegistry | None = None) -> None:
        self.prefix = prefix
        self.registry = registry if registry is not None else CollectorRegistry()
        self._counters: dict[str, Counter] = {}
        self._histograms: dict[str, Histogram] = {}
        self._lock = threading.Lock()

    def _name(self, name: str) -> str:
        return _INVALID.sub("_", f"{self.prefix}.{name}")

    def increment(self, name: str, value: float = 1.0, **labels: str) -> None:
        with self._lock:
            counter = self._counters.get(name)
            if counter is None:
                counter = Counter(self._name(name), name, sorted(labels), registry=self.registry)
                self._counters[name] = counter
        (counter.labels(**labels) if labels else counter).inc(value)

    def observe(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            histogram = self._histograms.get(name)
            if histogram is None:
                histogram = Histogram(
                    self._name(name), name, sorted(labels), registry=self.registry
                )
                self._histograms[name] = histogram
        (histogram.labels(**labels) if labels else histogram).observe(value)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric so far."""
        return generate_latest(self.registry)
