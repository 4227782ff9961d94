"""Container and pod identity from real-world ``/proc/<pid>/cgroup`` contents."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from pyspire_sdk.cgroups import (
    CgroupLine,
    ContainerConflictError,
    ContainerIdentity,
    ContainerIdMatchers,
    find_container,
    parse_cgroups,
)
from pyspire_sdk.errors import InvalidArgumentError, UnavailableError
from pyspire_sdk.procfs import ProcessReplacedError, read_cgroups

ID = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"
OTHER = "09bc3d7ade839efec32b6bec4ec79d099027a668ddba043083ec21d3c3b8f1e6"
NODE = "93529524695bb00d91c1f6dba692ea8d3550c3b94fb2463af7bc9ec82f992d26"
POD = "2c48913c-b29f-11e7-9350-020968147796"
POD_SYSTEMD = POD.replace("-", "_")


def v1(path: str, *extra: str) -> str:
    """A cgroup v1 file with every controller at ``path`` (and ``extra`` lines after)."""
    controllers = ["hugetlb", "devices", "pids", "memory", "cpu,cpuacct", "name=systemd"]
    lines = [f"{index}:{name}:{path}" for index, name in enumerate(controllers, start=1)]
    return "\n".join([*lines, *extra]) + "\n"


CASES = {
    # -- docker, no pod ------------------------------------------------------------------
    "docker v1 cgroupfs": (v1(f"/docker/{ID}"), ContainerIdentity(ID)),
    "docker v1 systemd": (v1(f"/system.slice/docker-{ID}.scope"), ContainerIdentity(ID)),
    "docker v2 systemd": (f"0::/system.slice/docker-{ID}.scope\n", ContainerIdentity(ID)),
    "docker v2 cgroupfs": (f"0::/docker/{ID}\n", ContainerIdentity(ID)),
    "docker v2 private namespace": (f"0::/../{ID}\n", ContainerIdentity(ID)),
    "docker hybrid, unified line at the daemon": (
        v1(f"/docker/{ID}", "0::/system.slice/containerd.service"),
        ContainerIdentity(ID),
    ),
    "docker hybrid, unified line at the root": (v1(f"/docker/{ID}", "0::/"), ContainerIdentity(ID)),
    "docker nested under a user's systemd": (
        f"0::/user.slice/user-1000.slice/user@1000.service/app.slice/docker-{ID}.scope/init\n",
        ContainerIdentity(ID),
    ),
    "podman v2": (
        f"0::/machine.slice/libpod-{ID}.scope/container\n",
        ContainerIdentity(ID),
    ),
    # -- kubernetes ------------------------------------------------------------------------
    "k8s v1 cgroupfs": (
        v1(f"/kubepods/burstable/pod{POD}/{ID}"),
        ContainerIdentity(ID, POD),
    ),
    "k8s v1 systemd docker": (
        v1(
            "/kubepods.slice/kubepods-burstable.slice/"
            f"kubepods-burstable-pod{POD_SYSTEMD}.slice/docker-{ID}.scope"
        ),
        ContainerIdentity(ID, POD),
    ),
    "k8s v1 systemd cri-o with an rdma root line and the runtime's unified line": (
        v1(
            "/kubepods.slice/kubepods-besteffort.slice/"
            f"kubepods-besteffort-pod{POD_SYSTEMD}.slice/crio-{ID}.scope",
            "3:rdma:/",
            "0::/system.slice/crio.service",
        ),
        ContainerIdentity(ID, POD),
    ),
    "k8s v2 systemd containerd": (
        "0::/kubepods.slice/kubepods-besteffort.slice/"
        f"kubepods-besteffort-pod{POD_SYSTEMD}.slice/cri-containerd-{ID}.scope\n",
        ContainerIdentity(ID, POD),
    ),
    "k8s v2 pod and container in one segment": (
        f"0::/kubepods-besteffort-pod{POD_SYSTEMD}.slice:cri-containerd:{ID}\n",
        ContainerIdentity(ID, POD),
    ),
    "k8s v2 guaranteed pod, cgroupfs": (
        f"0::/kubepods/pod{POD}/{ID}\n",
        ContainerIdentity(ID, POD),
    ),
    "k8s v2 cri-o inside its own namespace: no pod in sight": (
        f"0::/../crio-{OTHER}.scope\n",
        ContainerIdentity(OTHER),
    ),
    "kind node in docker: the pod line wins over the node's own": (
        v1(
            f"/docker/{NODE}/kubepods/besteffort/pod{POD}/{ID}",
            f"0::/docker/{NODE}/system.slice/containerd.service",
        ),
        ContainerIdentity(ID, POD),
    ),
    "the pod line wins when it comes after the node's": (
        f"1:cpuset:/docker/{NODE}\n0::/docker/{NODE}/kubepods/besteffort/pod{POD}/{ID}\n",
        ContainerIdentity(ID, POD),
    ),
    "container ID after more segments": (
        f"0::/kubepods/pod{POD}/{ID}/init.scope\n",
        ContainerIdentity(ID, POD),
    ),
    # -- not in a container ----------------------------------------------------------------
    "host process v1": (
        "10:devices:/user.slice\n1:name=systemd:/user.slice/user-1000.slice/session-2.scope\n",
        None,
    ),
    "host process v2": ("0::/user.slice/user-1000.slice/session-2.scope\n", None),
    "root cgroup": ("0::/\n", None),
    "63 hex digits are no container ID": (f"0::/docker/{ID[:63]}\n", None),
    "65 hex digits are no container ID": (f"0::/docker/{ID}a\n", None),
    "a pod UID without a container": (f"0::/kubepods/pod{POD}\n", None),
}


@pytest.mark.parametrize(("text", "expected"), list(CASES.values()), ids=list(CASES))
def test_container_and_pod_from_real_world_cgroups(
    text: str, expected: ContainerIdentity | None
) -> None:
    assert find_container(parse_cgroups(text), with_pod_uid=True) == expected
    if NODE in text:
        # Without pod UIDs nothing tells the pod's container from the kind node's: as SPIRE's
        # docker attestor, refuse rather than pick one.
        with pytest.raises(ContainerConflictError):
            find_container(parse_cgroups(text))
        return
    without_pod = None if expected is None else ContainerIdentity(expected.container_id)
    assert find_container(parse_cgroups(text)) == without_pod


CONFLICTS = {
    "two containers": (f"1:cpu:/docker/{ID}\n0::/docker/{OTHER}\n", "multiple container IDs"),
    "two pods": (
        f"1:cpu:/kubepods/pod{POD}/{ID}\n"
        f"0::/kubepods/pod00000000-1111-2222-3333-444444444444/{ID}\n",
        "multiple pod UIDs",
    ),
    "two containers of one pod": (
        f"1:cpu:/kubepods/pod{POD}/{ID}\n0::/kubepods/pod{POD}/{OTHER}\n",
        "multiple container IDs",
    ),
}


@pytest.mark.parametrize(("text", "message"), list(CONFLICTS.values()), ids=list(CONFLICTS))
def test_conflicting_lines_are_an_error_not_a_guess(text: str, message: str) -> None:
    with pytest.raises(ContainerConflictError, match=message):
        find_container(parse_cgroups(text), with_pod_uid=True)
    assert issubclass(ContainerConflictError, UnavailableError)


def test_parse_keeps_colons_in_paths_and_refuses_short_lines() -> None:
    assert parse_cgroups(f"0::/a:b:{ID}\n\n") == (CgroupLine("0", "", f"/a:b:{ID}"),)
    with pytest.raises(UnavailableError, match="cgroup line 'nonsense' is malformed"):
        parse_cgroups("nonsense")


MATCHERS = {
    "v1 docker": (["/docker/<id>"], v1(f"/docker/{ID}"), ID),
    "wildcards": (["/kubepods/*/*/<id>"], v1(f"/kubepods/burstable/pod{POD}/{ID}"), ID),
    "first matching pattern": (
        ["/docker/<id>", "/system.slice/<id>"],
        "0::/system.slice/anything-goes\n",
        "anything-goes",
    ),
    "no match is no container": (["/docker/<id>"], "0::/user.slice/session-1.scope\n", None),
    "the whole path must match": (["/docker/<id>"], f"0::/docker/{ID}/extra\n", None),
    "a wildcard is one segment": (["/*/<id>"], f"0::/a/b/{ID}\n", None),
    "dots are literal": (["/a.b/<id>"], f"0::/axb/{ID}\n", None),
}


@pytest.mark.parametrize(
    ("patterns", "text", "expected"), list(MATCHERS.values()), ids=list(MATCHERS)
)
def test_container_id_matchers(patterns: list[str], text: str, expected: str | None) -> None:
    assert ContainerIdMatchers(patterns).find(parse_cgroups(text)) == expected


def test_matchers_refuse_conflicts_and_empty_ids() -> None:
    matchers = ContainerIdMatchers(["/docker/<id>"])
    with pytest.raises(ContainerConflictError, match="multiple container IDs"):
        matchers.find(parse_cgroups(f"1:cpu:/docker/{ID}\n0::/docker/{OTHER}\n"))
    with pytest.raises(UnavailableError, match="no container id was found"):
        matchers.find(parse_cgroups("0::/docker/\n"))


BAD_PATTERNS = {
    "none": ([], "at least one pattern"),
    "no id": (["/docker/*"], "exactly once"),
    "two ids": (["/<id>/<id>"], "exactly once"),
    "ambiguous": (["/docker/<id>", "/*/<id>"], "must not be ambiguous"),
    "repeated": (["/docker/<id>", "/docker/<id>"], "must not be ambiguous"),
}


@pytest.mark.parametrize(
    ("patterns", "message"), list(BAD_PATTERNS.values()), ids=list(BAD_PATTERNS)
)
def test_bad_matcher_patterns_name_the_setting(patterns: list[str], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message) as caught:
        ContainerIdMatchers(patterns, key="container_id_cgroup_matchers")
    assert str(caught.value).startswith("container_id_cgroup_matchers: ")


def _fake_process(root: Path, cgroup: str, start_time: str) -> Path:
    """A procfs tree holding pid 4242 with ``cgroup`` and a ``stat`` giving ``start_time``."""
    process = root / "4242"
    process.mkdir(parents=True)
    (process / "cgroup").write_text(cgroup)
    fields = " ".join(["S", *["0"] * 18, start_time])
    (process / "stat").write_text(f"4242 (app) {fields}\n")
    return root


async def test_read_cgroups_reads_a_process_of_a_procfs_tree(tmp_path: Path) -> None:
    root = _fake_process(tmp_path, f"0::/docker/{ID}\n", "77")
    lines = await read_cgroups(4242, proc_root=root)
    assert find_container(lines) == ContainerIdentity(ID)
    assert lines[0].path == f"/docker/{ID}"


async def test_own_cgroups_read_and_a_vanished_process_is_unavailable(tmp_path: Path) -> None:
    assert await read_cgroups(os.getpid())
    with pytest.raises(UnavailableError, match="does not exist"):
        await read_cgroups(4242, proc_root=tmp_path)
    assert issubclass(ProcessReplacedError, UnavailableError)


async def test_a_pid_reused_while_its_cgroups_are_read_is_refused(tmp_path: Path) -> None:
    root = _fake_process(tmp_path, "", "77")
    cgroup = root / "4242" / "cgroup"
    cgroup.unlink()
    os.mkfifo(cgroup)

    def new_process_takes_the_pid() -> None:
        # Opening the FIFO waits for the reader, which has read the start time by then.
        with cgroup.open("w") as writer:
            fields = " ".join(["S", *["0"] * 18, "78"])
            (root / "4242" / "stat").write_text(f"4242 (other) {fields}\n")
            writer.write(f"0::/docker/{ID}\n")

    thread = threading.Thread(target=new_process_takes_the_pid)
    thread.start()
    try:
        with pytest.raises(ProcessReplacedError, match="replaced"):
            await read_cgroups(4242, proc_root=root)
    finally:
        thread.join(timeout=10)
