"""Containers in their cgroup, with memory, cpu, cpuset and pids limits, on this host's layout.

These run wherever the suite runs: on the hybrid host they check the v1 files, and
``test_cgroup2_vm.py`` runs this same module inside cgroup2-vm to check the v2 ones.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from conftest import TEST_PREFIX, edit_config, needs_root, new_id, proc_cgroups
from pyrunc.cgroups import detect_layout

pytestmark = [needs_root, pytest.mark.cgroup2]
LAYOUT = detect_layout()
MiB = 1 << 20


def cgroup_file(pid: int, controller: str, name: str) -> str:
    """Read a cgroup file of the container's cgroup from the host's view."""
    if LAYOUT == "v2":
        base = Path("/sys/fs/cgroup") / proc_cgroups(pid)[""].lstrip("/")
    else:
        base = Path("/sys/fs/cgroup") / controller / proc_cgroups(pid)[controller].lstrip("/")
    return (base / name).read_text().strip()


def limited_bundle(make_bundle, cgroups_path: str, resources: dict):  # type: ignore[no-untyped-def]
    bundle = make_bundle(["sleep", "100"])

    def edit(c: dict) -> None:
        c["linux"]["cgroupsPath"] = cgroups_path
        c["linux"]["resources"].update(resources)
    edit_config(bundle, edit)
    return bundle


def test_container_joins_its_cgroup_and_limits_apply(pyrunc, make_bundle) -> None:
    cid = new_id()
    path = f"/{TEST_PREFIX}limits/{cid}"
    bundle = limited_bundle(make_bundle, path, {
        "memory": {"limit": 64 * MiB},
        "cpu": {"shares": 512, "quota": 20000, "period": 100000, "cpus": "0"},
        "pids": {"limit": 20},
    })
    pyrunc("create", "-b", str(bundle), cid)
    pid = pyrunc.state(cid)["pid"]
    try:
        if LAYOUT == "v2":
            assert proc_cgroups(pid)[""] == path
            assert cgroup_file(pid, "", "memory.max") == str(64 * MiB)
            assert cgroup_file(pid, "", "cpu.max") == "20000 100000"
            assert cgroup_file(pid, "", "cpuset.cpus") == "0"
            assert cgroup_file(pid, "", "pids.max") == "20"
            assert int(cgroup_file(pid, "", "cpu.weight")) < 100  # shares 512 < the default 1024
        else:
            for controller in ("memory", "cpu", "cpuset", "pids", "devices"):
                assert proc_cgroups(pid)[controller] == path, controller
            assert cgroup_file(pid, "memory", "memory.limit_in_bytes") == str(64 * MiB)
            assert cgroup_file(pid, "cpu", "cpu.shares") == "512"
            assert cgroup_file(pid, "cpu", "cpu.cfs_quota_us") == "20000"
            assert cgroup_file(pid, "cpu", "cpu.cfs_period_us") == "100000"
            assert cgroup_file(pid, "cpuset", "cpuset.cpus") == "0"
            assert cgroup_file(pid, "pids", "pids.max") == "20"
        pyrunc("start", cid)
        # inside, the cgroup namespace makes the container's cgroup its root
        assert proc_cgroups(pid)  # still alive
    finally:
        pyrunc("delete", "--force", cid)
    gone = [m for m in ("/sys/fs/cgroup", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids")
            if os.path.exists(f"{m}{path}")]
    assert gone == [], f"cgroup left after delete: {gone}"
    # pyrunc removes the container's cgroup, not the parents it had to create (as runc does)
    for top in ["/sys/fs/cgroup"] + [str(p) for p in Path("/sys/fs/cgroup").iterdir() if p.is_dir()]:
        parent = f"{top}/{TEST_PREFIX}limits"
        if os.path.isdir(parent):
            os.rmdir(parent)


def test_pids_limit_stops_forks_inside(pyrunc, make_bundle) -> None:
    cid = new_id()
    bundle = make_bundle(["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 5 & done; wait; echo done"])
    edit_config(bundle, lambda c: c["linux"]["resources"].update(pids={"limit": 4}))
    p = pyrunc("run", "-b", str(bundle), cid, check=False, timeout=60)
    assert "can't fork" in p.stderr or "Resource temporarily unavailable" in p.stderr, p.stderr


def test_memory_limit_kills_a_hog(pyrunc, make_bundle) -> None:
    cid = new_id()
    # busybox has no stress tool: a shell variable doubling in size eats memory fast
    bundle = make_bundle(["sh", "-c", "x=aaaaaaaaaaaaaaaa; while :; do x=$x$x; done"])
    edit_config(bundle, lambda c: c["linux"]["resources"].update(memory={"limit": 32 * MiB, "swap": 32 * MiB}))
    started = time.monotonic()
    p = pyrunc("run", "-b", str(bundle), cid, check=False, timeout=120)
    assert p.returncode == 128 + 9, (p.returncode, p.stderr)  # the OOM killer's SIGKILL
    assert time.monotonic() - started < 60


def test_cgroup_namespace_hides_the_host_path(pyrunc, make_bundle) -> None:
    cid = new_id()
    bundle = make_bundle(["cat", "/proc/self/cgroup"])
    p = pyrunc("run", "-b", str(bundle), cid)
    paths = {line.split(":", 2)[2] for line in p.stdout.splitlines()}
    assert paths == {"/"}, p.stdout
