"""Metrics: one registry per process, counters, histograms and gauges made on first use.

Names are dotted as SPIRE's (``rpc.agent.v1.agent.attest_agent``); the Prometheus names are the
process prefix (``pyspire_server`` / ``pyspire_agent``) plus the dotted name with dots turned
into underscores (counters get Prometheus' ``_total`` suffix). Label names are fixed by a
metric's first use; a later use with other label names is a programming error and raises, so
dashboards never see a metric change shape.

Every name the kernel records is declared here, with where it is recorded. A **call counter**
(SPIRE's term) is a pair: a counter ``<name>`` and a histogram ``<name>.elapsed_time`` (in
seconds), both labelled with ``status``, the gRPC status code name of the call (``OK``,
``PERMISSION_DENIED``, ...).
"""

from __future__ import annotations

__all__ = [
    "AGENT_SYNC",
    "CACHE_ENTRIES",
    "CACHE_X509_SVIDS",
    "CA_JWT_ACTIVATED",
    "CA_JWT_PREPARED",
    "CA_X509_ACTIVATED",
    "CA_X509_PREPARED",
    "ELAPSED_TIME",
    "NODE_ATTESTATION",
    "SVID_JWT_SIGNED",
    "SVID_X509_SIGNED",
    "CallCounter",
    "PrometheusMetrics",
    "rpc_metric_name",
]

import re
import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

# -- names of the metrics the kernel records ------------------------------------------------

CA_X509_PREPARED = "ca.manager.x509_ca.prepare"
"""Counter: an X.509 CA was prepared (``ca/manager.py``)."""
CA_X509_ACTIVATED = "ca.manager.x509_ca.activate"
"""Counter: an X.509 CA became the signing one (``ca/manager.py``)."""
CA_JWT_PREPARED = "ca.manager.jwt_key.prepare"
"""Counter: a JWT key was prepared (``ca/manager.py``)."""
CA_JWT_ACTIVATED = "ca.manager.jwt_key.activate"
"""Counter: a JWT key became the signing one (``ca/manager.py``)."""
SVID_X509_SIGNED = "server_ca.sign.x509_svid"
"""Counter: X509-SVIDs signed, workload and agent ones (``server/issuer.py``)."""
SVID_JWT_SIGNED = "server_ca.sign.jwt_svid"
"""Counter: JWT-SVIDs signed (``server/issuer.py``)."""
NODE_ATTESTATION = "node.attestor.attest"
"""Call counter, labelled ``attestor`` too: agent attestations and how each ended
(``server/api/agent.py``)."""
AGENT_SYNC = "manager.sync"
"""Call counter: the agent's syncs with the server (``agent/sync.py``)."""
CACHE_X509_SVIDS = "lru_cache_svid_map_size"
"""Gauge: X509-SVIDs the agent holds for workloads (read from ``agent/cache.py``)."""
CACHE_ENTRIES = "lru_cache_record_map_size"
"""Gauge: registration entries the agent holds (read from ``agent/cache.py``)."""
RPC_PREFIX = "rpc"
"""Call counters of every RPC a server or agent serves: ``rpc.<service>.<method>``
(:func:`rpc_metric_name`; ``transport/calls.py``)."""
ELAPSED_TIME = "elapsed_time"
"""The suffix of a call counter's histogram."""
NOTIFIER_NOTIFIED = "notifier.notify"
"""Counter, labelled ``notifier``, ``event`` and ``status``: events delivered to notifiers
(``server/notifications.py``)."""
BUNDLE_PUBLISHED = "bundle_publisher.publish"
"""Counter, labelled ``publisher`` and ``status``: bundle publications
(``server/publishing.py``)."""

_INVALID = re.compile(r"[^a-zA-Z0-9_]")
_SERVICE_SHORT_NAMES = (
    ("spire.api.server.", ""),
    ("SpiffeWorkloadAPI", "WorkloadAPI"),
    ("grpc.health.v1.Health", "Health"),
)


def _snake(part: str) -> str:
    """SPIRE's metric key of one name: PascalCase to snake_case, other characters to ``_``.

    An underscore goes before an upper-case letter (not the first or last one) that follows or
    precedes a lower-case one: ``BatchNewX509SVID`` is ``batch_new_x509svid`` as in SPIRE.
    """
    out: list[str] = []
    last = len(part) - 1
    for index, char in enumerate(part):
        if not char.isalnum():
            out.append("_")
            continue
        lower = char.lower()
        if (
            char != lower
            and 0 < index < last
            and (part[index + 1].islower() or part[index - 1].islower())
            and out[-1] != "_"
        ):
            out.append("_")
        out.append(lower)
    return "".join(out)


def rpc_metric_name(full_method: str) -> str:
    """The call counter name of a gRPC method, as SPIRE names it:
    ``/spire.api.server.agent.v1.Agent/AttestAgent`` is ``rpc.agent.v1.agent.attest_agent``,
    ``/SpiffeWorkloadAPI/FetchX509SVID`` is ``rpc.workload_api.fetch_x509svid``."""
    service, _, method = full_method.lstrip("/").partition("/")
    for long_name, short_name in _SERVICE_SHORT_NAMES:
        service = service.replace(long_name, short_name)
    parts = [*service.split("."), method]
    return ".".join([RPC_PREFIX, *(_snake(part) for part in parts)])


class CallCounter:
    """One call counter with fixed labels: counts calls and their durations by status.

    The labelled series are looked up once per status and kept, so recording a call costs two
    increments: cheap enough for every RPC.
    """

    def __init__(self, counter: Counter, histogram: Histogram, labels: dict[str, str]) -> None:
        self._counter = counter
        self._histogram = histogram
        self._labels = labels
        self._series: dict[str, tuple[Counter, Histogram]] = {}

    def record(self, status: str, elapsed: float) -> None:
        """One call that ended with ``status`` after ``elapsed`` seconds."""
        series = self._series.get(status)
        if series is None:
            labels = {**self._labels, "status": status}
            series = (self._counter.labels(**labels), self._histogram.labels(**labels))
            self._series[status] = series
        series[0].inc()
        series[1].observe(elapsed)


class PrometheusMetrics:
    """The process's metrics, in a Prometheus registry of its own.

    It is also the :class:`pyspire_sdk.plugin.Metrics` plugins record to (their names are
    theirs, under the same prefix).
    """

    def __init__(self, prefix: str, registry: CollectorRegistry | None = None) -> None:
        self.prefix = prefix
        self.registry = registry if registry is not None else CollectorRegistry()
        self._counters: dict[str, Counter] = {}
        self._histograms: dict[str, Histogram] = {}
        self._gauges: dict[str, Gauge] = {}
        self._lock = threading.Lock()

    def _name(self, name: str) -> str:
        return _INVALID.sub("_", f"{self.prefix}.{name}")

    def _counter(self, name: str, label_names: list[str]) -> Counter:
        with self._lock:
            counter = self._counters.get(name)
            if counter is None:
                counter = Counter(self._name(name), name, label_names, registry=self.registry)
                self._counters[name] = counter
        return counter

    def _histogram(self, name: str, label_names: list[str]) -> Histogram:
        with self._lock:
            histogram = self._histograms.get(name)
            if histogram is None:
                histogram = Histogram(self._name(name), name, label_names, registry=self.registry)
                self._histograms[name] = histogram
        return histogram

    def increment(self, name: str, value: float = 1.0, **labels: str) -> None:
        counter = self._counter(name, sorted(labels))
        (counter.labels(**labels) if labels else counter).inc(value)

    def observe(self, name: str, value: float, **labels: str) -> None:
        histogram = self._histogram(name, sorted(labels))
        (histogram.labels(**labels) if labels else histogram).observe(value)

    def call_counter(self, name: str, **labels: str) -> CallCounter:
        """The call counter ``name`` (a count and ``name.elapsed_time``) with these labels."""
        label_names = sorted([*labels, "status"])
        return CallCounter(
            self._counter(name, label_names),
            self._histogram(f"{name}.{ELAPSED_TIME}", label_names),
            labels,
        )

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        """The gauge ``name``, whose value is ``read()`` at each scrape (so keeping it current
        costs nothing); a second call for the same name replaces the reader."""
        with self._lock:
            gauge = self._gauges.get(name)
            if gauge is None:
                gauge = Gauge(self._name(name), name, registry=self.registry)
                self._gauges[name] = gauge
        gauge.set_function(read)

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """Every metric so far, in the format the ``Accept`` header asks for (the Prometheus
        text format unless OpenMetrics is asked for), with its content type."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type
