"""Benchmark of workload attestation by the ``unix``, ``docker`` and ``k8s`` attestors against an
empty Workload API call, measured in the same run.

Run from the repository root: ``.venv/bin/python tests/bench/bench_workload_attestors.py``
(``--calls`` per kind, 300 by default). Root is needed for the ``docker`` row (a private
``dockerd`` is started, as the attestor's tests start it); without it that row is left out.

What one sample is:

- **floor**: an empty call on a unix socket, a grpclib health ``Check``: what every Workload API
  call costs before any attestation;
- **unix**: ``attest`` of a real ``sleep`` process (``/proc`` reads and name lookups);
- **docker**: ``attest`` of the first process of a real container: its cgroups from ``/proc``,
  then the container and image inspections over the engine's socket;
- **k8s (list reused)**: ``attest`` of a process whose cgroups (in a procfs tree) name a pod of
  a loopback HTTPS kubelet listing 30 pods, with the default ``poll_retry_interval``: attestations
  within 500 ms of a fetch share its list, as on a busy node;
- **k8s (list fetched)**: the same with every attestation fetching and parsing the pod list.

Kinds take turns call by call so machine noise falls on all alike. Prints p50 and p99 of each and
their ratios to the floor's. Nothing is asserted: benchmarks print, tests assert.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpclib.server
import structlog
from grpclib.client import Channel
from grpclib.health.service import Health
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest
from pyspire_workloadattestor_docker import DockerAttestor, DockerAttestorConfig
from pyspire_workloadattestor_docker.testing import DockerDaemon, engine_unavailable_reason
from pyspire_workloadattestor_k8s import K8sAttestor, K8sAttestorConfig
from pyspire_workloadattestor_unix import UnixAttestor, UnixAttestorConfig

from pyspire_sdk.clock import SystemClock
from pyspire_sdk.config import load_config
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing.host import make_host_services
from pyspire_sdk.testing.loopback import serve_loopback
from pyspire_sdk.testing.pki import TestAuthority

PID = 4242
PODS = 30
WARM_UP = 10


def _pod(number: int) -> dict[str, Any]:
    uid = f"{number:08x}-0000-4000-8000-{number:012x}"
    container = f"{number:064x}"
    return {
        "metadata": {
            "name": f"app-{number}",
            "namespace": "bench",
            "uid": uid,
            "labels": {"app": f"app-{number}", "tier": "web"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": f"app-{number}-rs", "uid": uid}],
        },
        "spec": {"serviceAccountName": "app", "nodeName": "node-1"},
        "status": {
            "containerStatuses": [
                {
                    "name": "app",
                    "image": "registry.example/app:1",
                    "imageID": "registry.example/app@sha256:" + "ab" * 32,
                    "containerID": f"containerd://{container}",
                }
            ]
        },
    }


def _host(directory: Path) -> HostServices:
    return make_host_services(directory, clock=SystemClock())


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def _timed(call: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await call()
    return time.perf_counter() - start


async def _k8s_attestor(root: Path, port: int, ca_file: Path, interval: str) -> K8sAttestor:
    proc = root / f"proc-{interval}" / str(PID)
    proc.mkdir(parents=True)
    target = PODS // 2
    (proc / "cgroup").write_text(
        "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"
        f"{_pod(target)['metadata']['uid'].replace('-', '_')}.slice/"
        f"cri-containerd-{target:064x}.scope\n"
    )
    (proc / "stat").write_text(f"{PID} (app) S {' '.join(['0'] * 18)} 99\n")
    token = root / "token"
    token.write_text("bench-token")
    attestor = K8sAttestor(proc_root=proc.parent, environ={}.get)
    config = load_config(
        K8sAttestorConfig,
        {
            "kubelet_secure_port": port,
            "kubelet_ca_path": str(ca_file),
            "token_path": str(token),
            "poll_retry_interval": interval,
        },
        path="k8s",
    )
    await attestor.configure(config, _host(root))
    return attestor


async def run(calls: int, root: Path, daemon: DockerDaemon | None) -> dict[str, list[float]]:
    floor_server = grpclib.server.Server([Health()])
    await floor_server.start(path=str(root / "floor.sock"))
    channel = Channel(path=str(root / "floor.sock"))
    health = HealthStub(channel)
    sleeper = await asyncio.create_subprocess_exec("sleep", "600")
    unix = UnixAttestor()
    await unix.configure(UnixAttestorConfig(), _host(root))
    kinds: dict[str, Callable[[], Awaitable[object]]] = {
        "floor": lambda: health.Check(HealthCheckRequest()),
        "unix": lambda: unix.attest(sleeper.pid),
    }
    closers: list[Callable[[], Awaitable[None]]] = [unix.close]
    container = None
    if daemon is not None:
        container = daemon.run_detached(labels={"app": "bench"}, env={"MODE": "bench"})
        container_pid = daemon.pid_of(container)
        docker = DockerAttestor()
        await docker.configure(
            DockerAttestorConfig(docker_socket_path=daemon.endpoint), _host(root)
        )
        kinds["docker"] = lambda: docker.attest(container_pid)
        closers.append(docker.close)

    async def pods(request: Any) -> Any:
        from aiohttp import web

        return web.json_response({"kind": "PodList", "items": [_pod(n) for n in range(PODS)]})

    authority = TestAuthority(TrustDomain("kubelet.bench"))
    timings: dict[str, list[float]] = {}
    try:
        async with serve_loopback(
            [("GET", "/pods", pods)], tls=authority, directory=root / "kubelet"
        ) as kubelet:
            port = int(kubelet.url.rsplit(":", 1)[1])
            assert kubelet.ca_file is not None
            reused = await _k8s_attestor(root, port, kubelet.ca_file, "500ms")
            fetched = await _k8s_attestor(root, port, kubelet.ca_file, "1ms")
            closers += [reused.close, fetched.close]
            kinds["k8s (list reused)"] = lambda: reused.attest(PID)
            kinds["k8s (list fetched)"] = lambda: fetched.attest(PID)
            timings = {name: [] for name in kinds}
            for number in range(WARM_UP + calls):
                for name, call in kinds.items():
                    elapsed = await _timed(call)
                    if number >= WARM_UP:
                        timings[name].append(elapsed)
    finally:
        for close in closers:
            await close()
        channel.close()
        floor_server.close()
        await floor_server.wait_closed()
        sleeper.kill()
        await sleeper.wait()
        if daemon is not None and container is not None:
            daemon.remove(container)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    root = Path(tempfile.mkdtemp(prefix="pyspire-bench-"))
    reason = engine_unavailable_reason()
    daemon = None if reason is not None else DockerDaemon()
    try:
        if daemon is not None:
            try:
                daemon.start()
            except RuntimeError as error:
                reason, daemon = f"dockerd did not start: {str(error)[:200]}", None
        timings = asyncio.run(run(args.calls, root, daemon))
    finally:
        if daemon is not None:
            daemon.stop()
        shutil.rmtree(root, ignore_errors=True)
    floor = timings["floor"]
    floor_p50, floor_p99 = percentile(floor, 0.5), percentile(floor, 0.99)
    print(f"workload attestation, {args.calls} calls per kind (after {WARM_UP} warm-up)")
    print(f"{'kind':20} {'p50 ms':>8} {'p99 ms':>8} {'p50 ratio':>10} {'p99 ratio':>10}")
    for name, samples in timings.items():
        p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
        print(
            f"{name:20} {p50 * 1e3:8.3f} {p99 * 1e3:8.3f} "
            f"{p50 / floor_p50:9.1f}x {p99 / floor_p99:9.1f}x"
        )
    print("floor: an empty grpclib health Check on a unix socket, in this run")
    if reason is not None:
        print(f"docker left out: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
