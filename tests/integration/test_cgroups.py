"""pyrunc.cgroups against the real kernel (root only).

Every test works below its own ``/<TEST_PREFIX>cg-<random>`` parent (absolute cgroupsPath,
so nothing lands in the cgroups of whoever runs the tests), starts real ``sleep``
processes, and the fixture removes everything it made even when the test fails.

v1/hybrid tests run on a v1 or hybrid host.  ``test_v2_*`` run on a pure cgroup v2
host; elsewhere ``test_cgroup2_vm.py`` runs them inside ``cgroup2-vm``
(``<repo>/../shared/tools/cgroup2-vm``), a throwaway QEMU guest with a cgroup2-only
/sys/fs/cgroup:  cgroup2-vm .venv/bin/python -m pytest -q -k v2 tests/integration/test_cgroups.py
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from conftest import TEST_PREFIX, proc_cgroups
from pyrunc.cgroups import CgroupError, detect_layout, manager_for, manager_from_state
from pyrunc.cgroups.resources import shares_to_weight
from pyrunc.config import CPU, DeviceRule, Memory, Pids, Resources

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAYOUT = detect_layout()
IS_ROOT = os.geteuid() == 0
MiB = 1 << 20

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="cgroup integration tests need root")
v1_only = pytest.mark.skipif(LAYOUT not in ("v1", "hybrid"),
                             reason=f"needs a cgroup v1 or hybrid host (this one is {LAYOUT})")
_skip_unless_v2 = pytest.mark.skipif(LAYOUT != "v2", reason=f"needs a pure cgroup v2 host (this one is {LAYOUT}); "
                                     "test_cgroup2_vm.py runs these in cgroup2-vm")


def v2_only(fn):  # type: ignore[no-untyped-def]
    return pytest.mark.cgroup2(_skip_unless_v2(fn))


# ---------------------------------------------------------------------------- helpers


def cgroup_mounts() -> list[str]:
    """Mount points of every cgroup/cgroup2 filesystem (our own parse, not the package's)."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[0] in ("cgroup", "cgroup2"):
                out.append(left.split()[4])
    return out


def leftovers(name: str) -> list[str]:
    return [os.path.join(m, name) for m in cgroup_mounts() if os.path.lexists(os.path.join(m, name))]


def force_remove(top: str) -> None:
    """Kill whatever is in our test cgroup tree, thaw it, and rmdir it bottom-up."""
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        for fname, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
            try:
                with open(os.path.join(dirpath, fname), "w") as f:
                    f.write(value)
            except OSError:
                pass
        try:
            with open(os.path.join(dirpath, "cgroup.procs")) as f:
                for pid in f.read().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        except OSError:
            pass
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        for _ in range(100):
            try:
                os.rmdir(dirpath)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise
                time.sleep(0.02)


class Sandbox:
    """A unique parent cgroup name plus the processes a test starts."""

    def __init__(self) -> None:
        self.name = f"{TEST_PREFIX}cg-{uuid.uuid4().hex[:12]}"
        self.procs: list[subprocess.Popen] = []

    def path(self, *parts: str) -> str:
        return "/" + "/".join((self.name,) + parts)

    def sleeper(self) -> subprocess.Popen:
        p = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def cleanup(self) -> list[str]:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for top in leftovers(self.name):
            force_remove(top)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        return leftovers(self.name)


@pytest.fixture
def sandbox():
    box = Sandbox()
    yield box
    left = box.cleanup()
    assert not left, f"cgroups left behind: {left}"


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def wait_dead(p: subprocess.Popen) -> int:
    return p.wait(timeout=10)


def full_resources() -> Resources:
    return Resources(
        devices=[DeviceRule(False), DeviceRule(True, "c", 1, 3, "rwm"), DeviceRule(True, "c", 1, 5, "rw"),
                 DeviceRule(True, "c", None, None, "m"), DeviceRule(False, "c", 1, 3, "w")],
        memory=Memory(limit=64 * MiB, reservation=32 * MiB, swap=128 * MiB, swappiness=10,
                      disable_oom_killer=True),
        cpu=CPU(shares=512, quota=50000, period=100000, burst=10000, cpus="0", mems="0"),
        pids=Pids(limit=10),
    )


# ---------------------------------------------------------------------------- v1 / hybrid


@v1_only
def test_v1_full_cycle(sandbox):
    mgr = manager_for(sandbox.path("ct"), "ignored")
    state = json.loads(json.dumps(mgr.to_state()))  # what the state store keeps
    assert state["layout"] == LAYOUT
    assert not mgr.exists()
    res = full_resources()
    mgr.create(res)
    assert mgr.exists()
    mgr.apply(res)
    p = sandbox.sleeper()
    mgr.add(p.pid)

    paths = state["paths"]
    mem, cpu, cpuset = paths["memory"], paths["cpu"], paths["cpuset"]
    assert read(f"{mem}/memory.limit_in_bytes") == str(64 * MiB)
    assert read(f"{mem}/memory.memsw.limit_in_bytes") == str(128 * MiB)
    assert read(f"{mem}/memory.soft_limit_in_bytes") == str(32 * MiB)
    assert read(f"{mem}/memory.swappiness") == "10"
    assert "oom_kill_disable 1" in read(f"{mem}/memory.oom_control")
    assert read(f"{cpu}/cpu.shares") == "512"
    assert read(f"{cpu}/cpu.cfs_quota_us") == "50000"
    assert read(f"{cpu}/cpu.cfs_period_us") == "100000"
    if os.path.exists(f"{cpu}/cpu.cfs_burst_us"):
        assert read(f"{cpu}/cpu.cfs_burst_us") == "10000"
    assert read(f"{cpuset}/cpuset.cpus") == "0"
    assert read(f"{cpuset}/cpuset.mems") == "0"
    assert read(f"{paths['pids']}/pids.max") == "10"
    assert set(read(f"{paths['devices']}/devices.list").splitlines()) == {"c 1:3 rm", "c 1:5 rw", "c *:* m"}

    # the process is in the cgroup of every hierarchy, the cgroup2 one too on hybrid
    seen = proc_cgroups(p.pid)
    for ctl in paths:
        assert seen[ctl] == sandbox.path("ct"), (ctl, seen)
    if LAYOUT == "hybrid":
        assert "" in paths and seen[""] == sandbox.path("ct")
    assert mgr.pids() == [p.pid]

    mgr.kill_all(signal.SIGKILL)
    assert wait_dead(p) == -signal.SIGKILL
    mgr.destroy()
    assert not mgr.exists()
    assert not [d for d in paths.values() if os.path.exists(d)]
    mgr.destroy()  # idempotent


@v1_only
def test_v1_nested_parents_get_cpuset_and_join_without_apply(sandbox):
    mgr = manager_for(sandbox.path("a", "b", "ct"), "x")
    cpuset = mgr.to_state()["paths"]["cpuset"]
    # a parent made (but not yet initialised) by a concurrent creator: still empty
    top = os.path.dirname(os.path.dirname(os.path.dirname(cpuset)))
    os.mkdir(top)
    assert read(f"{top}/cpuset.cpus") == ""
    mgr.create()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(cpuset))))
    for d in (os.path.dirname(os.path.dirname(os.path.dirname(cpuset))),
              os.path.dirname(os.path.dirname(cpuset)), os.path.dirname(cpuset), cpuset):
        assert read(f"{d}/cpuset.cpus") == read(f"{root}/cpuset.cpus")
        assert read(f"{d}/cpuset.mems") == read(f"{root}/cpuset.mems")
    p = sandbox.sleeper()
    mgr.add(p.pid)  # would fail with ENOSPC on an uninitialised cpuset
    assert proc_cgroups(p.pid)["cpuset"] == sandbox.path("a", "b", "ct")
    mgr.kill_all(signal.SIGKILL)
    wait_dead(p)
    mgr.destroy()
    assert not mgr.exists()


@v1_only
def test_v1_pids_walks_the_tree_and_sigterm_goes_through_the_freezer(sandbox):
    mgr = manager_for(sandbox.path("ct"), "x")
    mgr.create()
    p1, p2 = sandbox.sleeper(), sandbox.sleeper()
    mgr.add(p1.pid)
    mgr.add(p2.pid)
    sub = mgr.path("memory") + "/sub"  # a sub-cgroup, as a nested runtime would make
    os.mkdir(sub)
    with open(sub + "/cgroup.procs", "w") as f:
        f.write(str(p2.pid))
    assert mgr.pids() == sorted([p1.pid, p2.pid])
    mgr.kill_all(signal.SIGTERM)
    assert wait_dead(p1) == -signal.SIGTERM
    assert wait_dead(p2) == -signal.SIGTERM
    assert read(mgr.path("freezer") + "/freezer.state") == "THAWED"
    mgr.destroy()  # removes memory/.../ct/sub first
    assert not mgr.exists()


@v1_only
def test_v1_sigkill_reaches_a_paused_container(sandbox):
    mgr = manager_for(sandbox.path("ct"), "x")
    mgr.create()
    p = sandbox.sleeper()
    mgr.add(p.pid)
    freezer = mgr.path("freezer")
    with open(freezer + "/freezer.state", "w") as f:
        f.write("FROZEN")
    mgr.kill_all(signal.SIGKILL)
    assert wait_dead(p) == -signal.SIGKILL
    mgr.destroy()


@v1_only
def test_v1_state_survives_a_killed_runtime(sandbox, tmp_path):
    """A pyrunc killed -9 right after add(): a later manager_from_state finds and removes everything."""
    p = sandbox.sleeper()
    state_file = tmp_path / "cgroup.json"
    script = f"""
import json, os, signal
from pyrunc.cgroups import manager_for
from pyrunc.config import Resources, Pids
mgr = manager_for({sandbox.path('ct')!r}, "x")
open({str(state_file)!r}, "w").write(json.dumps(mgr.to_state()))
mgr.create(); mgr.apply(Resources(pids=Pids(limit=5))); mgr.add({p.pid})
os.kill(os.getpid(), signal.SIGKILL)
"""
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=60, check=False)
    assert r.returncode == -signal.SIGKILL
    mgr = manager_from_state(json.loads(state_file.read_text()))
    assert mgr.exists() and mgr.pids() == [p.pid]
    mgr.kill_all(signal.SIGKILL)
    wait_dead(p)
    mgr.destroy()
    assert not mgr.exists()


@v1_only
def test_v1_state_before_create_is_harmless(sandbox):
    mgr = manager_from_state(manager_for(sandbox.path("ct"), "x").to_state())
    assert mgr.pids() == []
    mgr.kill_all(signal.SIGKILL)
    mgr.destroy()


@v1_only
def test_v1_zero_means_unset(sandbox):
    mgr = manager_for(sandbox.path("ct"), "x")
    mgr.create()
    mem, cpu = mgr.path("memory"), mgr.path("cpu")
    before = {f: read(f) for f in (f"{mem}/memory.limit_in_bytes", f"{mem}/memory.soft_limit_in_bytes",
                                   f"{mem}/memory.memsw.limit_in_bytes", f"{cpu}/cpu.shares",
                                   f"{cpu}/cpu.cfs_quota_us", f"{cpu}/cpu.cfs_period_us")}
    mgr.apply(Resources(memory=Memory(limit=0, reservation=0, swap=0),
                        cpu=CPU(shares=0, quota=0, period=0), block_io={"weight": 0}))
    assert {f: read(f) for f in before} == before
    mgr.destroy()


@v1_only
def test_v1_unlimited_and_update_order(sandbox):
    mgr = manager_for(sandbox.path("ct"), "x")
    mgr.create()
    mem = mgr.path("memory")
    mgr.apply(Resources(memory=Memory(limit=64 * MiB, swap=128 * MiB)))
    # growing: memsw has to go first, or the limit would exceed it
    mgr.apply(Resources(memory=Memory(limit=512 * MiB, swap=1024 * MiB)))
    assert read(f"{mem}/memory.limit_in_bytes") == str(512 * MiB)
    assert read(f"{mem}/memory.memsw.limit_in_bytes") == str(1024 * MiB)
    # shrinking: the limit has to go first
    mgr.apply(Resources(memory=Memory(limit=32 * MiB, swap=48 * MiB)))
    assert read(f"{mem}/memory.limit_in_bytes") == str(32 * MiB)
    assert read(f"{mem}/memory.memsw.limit_in_bytes") == str(48 * MiB)
    # -1 with swap unset: both unlimited
    mgr.apply(Resources(memory=Memory(limit=-1)))
    unlimited = read(f"{mem}/memory.limit_in_bytes")
    assert int(unlimited) > 1 << 60
    assert read(f"{mem}/memory.memsw.limit_in_bytes") == unlimited
    # quota -1 is unlimited on v1 too
    mgr.apply(Resources(cpu=CPU(quota=20000)))
    mgr.apply(Resources(cpu=CPU(quota=-1)))
    assert read(mgr.path("cpu") + "/cpu.cfs_quota_us") == "-1"
    mgr.apply(Resources(pids=Pids(limit=-1)))
    assert read(mgr.path("pids") + "/pids.max") == "max"
    mgr.apply(Resources(pids=Pids(limit=0)))
    assert read(mgr.path("pids") + "/pids.max") == "0"
    mgr.destroy()


@v1_only
def test_v1_cpu_idle(sandbox):
    mgr = manager_for(sandbox.path("ct"), "x")
    mgr.create()
    if not os.path.exists(mgr.path("cpu") + "/cpu.idle"):
        mgr.destroy()
        pytest.skip("kernel without cpu.idle on v1")
    mgr.apply(Resources(cpu=CPU(idle=1)))
    assert read(mgr.path("cpu") + "/cpu.idle") == "1"
    mgr.destroy()


@v1_only
def test_v1_devices_update_and_allow_all(sandbox):
    mgr = manager_for(sandbox.path("ct"), "x")
    mgr.create()
    dev = mgr.path("devices") + "/devices.list"
    assert read(dev) == "a *:* rwm"  # inherited from the root
    mgr.apply(Resources(devices=[DeviceRule(False), DeviceRule(True, "c", 1, 3, "rwm"),
                                 DeviceRule(True, "c", 1, 5, "rwm")]))
    assert set(read(dev).splitlines()) == {"c 1:3 rwm", "c 1:5 rwm"}
    # an update: only differences are written (no deny-all moment for a running container)
    mgr.apply(Resources(devices=[DeviceRule(False), DeviceRule(True, "c", 1, 3, "r"),
                                 DeviceRule(True, "b", 7, None, "r")]))
    assert set(read(dev).splitlines()) == {"c 1:3 r", "b 7:* r"}
    mgr.apply(Resources(devices=[DeviceRule(True)]))  # allow everything again
    assert read(dev) == "a *:* rwm"
    mgr.destroy()


@v1_only
def test_v1_refusals_leave_the_cgroup_untouched(sandbox):
    mgr = manager_for(sandbox.path("ct"), "x")
    mgr.create()
    limit_file = mgr.path("memory") + "/memory.limit_in_bytes"
    before = read(limit_file)
    with pytest.raises(CgroupError) as e:
        mgr.apply(Resources(memory=Memory(limit=64 * MiB), block_io={"weight": 5},
                            hugepage_limits=[{"pageSize": "2 MB", "limit": 0}]))
    assert "linux.resources.blockIO.weight: 5 is outside the kernel's range" in str(e.value)
    assert "linux.resources.hugepageLimits[0]" in str(e.value)
    assert read(limit_file) == before
    with pytest.raises(CgroupError, match=r"linux\.resources\.unified"):
        mgr.apply(Resources(unified={"memory.high": "1G"}))
    mgr.destroy()


@v1_only
def test_v1_host_refusal_names_resource_and_file(sandbox):
    mgr = manager_for(sandbox.path("ct"), "x")
    mgr.create()
    with pytest.raises(CgroupError) as e:
        mgr.apply(Resources(cpu=CPU(cpus="4095")))  # no such CPU here
    msg = str(e.value)
    assert "linux.resources.cpu.cpus" in msg and mgr.path("cpuset") + "/cpuset.cpus" in msg
    with pytest.raises(CgroupError, match=r"linux\.resources\.cpu\.shares: the maximum allowed cpu-shares is"):
        mgr.apply(Resources(cpu=CPU(shares=1 << 30)))
    mgr.destroy()


@v1_only
def test_v1_create_failure_removes_what_it_made(sandbox):
    mgr = manager_for(sandbox.path("ct"), "x")
    with pytest.raises(CgroupError, match=r"linux\.resources\.cpu\.cpus"):
        mgr.create(Resources(cpu=CPU(cpus="4095")))
    assert not mgr.exists()


# ---------------------------------------------------------------------------- v2


def _v2_abs(sandbox, *parts):
    return manager_for(sandbox.path(*parts), "x")


@v2_only
def test_v2_full_cycle(sandbox):
    mgr = _v2_abs(sandbox, "a", "ct")
    state = json.loads(json.dumps(mgr.to_state()))
    assert state["layout"] == "v2"
    d = state["path"]
    res = Resources(
        memory=Memory(limit=64 * MiB, reservation=16 * MiB, swap=96 * MiB),
        cpu=CPU(shares=512, quota=50000, period=100000, burst=1000, cpus="0", mems="0"),
        pids=Pids(limit=10),
        devices=[DeviceRule(True)],  # allow-all: nothing to enforce, accepted
    )
    mgr.create(res)
    mount = state["mount"]
    for parent in (mount, f"{mount}/{sandbox.name}", f"{mount}/{sandbox.name}/a"):
        enabled = read(f"{parent}/cgroup.subtree_control").split()
        for c in ("cpu", "memory", "pids", "cpuset"):
            assert c in enabled, (parent, enabled)
    mgr.apply(res)
    p = sandbox.sleeper()
    mgr.add(p.pid)
    assert read(f"{d}/memory.max") == str(64 * MiB)
    assert read(f"{d}/memory.low") == str(16 * MiB)
    if os.path.exists(f"{d}/memory.swap.max"):
        assert read(f"{d}/memory.swap.max") == str(32 * MiB)  # memory+swap 96M - memory 64M
    assert read(f"{d}/cpu.weight") == str(shares_to_weight(512)) == "59"
    assert read(f"{d}/cpu.max") == "50000 100000"
    assert read(f"{d}/cpu.max.burst") == "1000"
    assert read(f"{d}/cpuset.cpus") == "0"
    assert read(f"{d}/cpuset.mems") == "0"
    assert read(f"{d}/pids.max") == "10"
    assert proc_cgroups(p.pid)[""] == sandbox.path("a", "ct")
    assert mgr.pids() == [p.pid]
    mgr.kill_all(signal.SIGKILL)  # cgroup.kill
    assert wait_dead(p) == -signal.SIGKILL
    mgr.destroy()
    assert not mgr.exists()
    mgr.destroy()


@v2_only
def test_v2_values(sandbox):
    mgr = _v2_abs(sandbox, "ct")
    mgr.create()
    d = mgr.path()
    mgr.apply(Resources(cpu=CPU(quota=-1)))
    assert read(f"{d}/cpu.max") == "max 100000"
    mgr.apply(Resources(cpu=CPU(quota=30000, period=50000)))
    mgr.apply(Resources(cpu=CPU(period=200000)))  # keeps the quota
    assert read(f"{d}/cpu.max") == "30000 200000"
    mgr.apply(Resources(cpu=CPU(shares=1024)))
    assert read(f"{d}/cpu.weight") == "100"
    mgr.apply(Resources(cpu=CPU(idle=1)))
    assert read(f"{d}/cpu.idle") == "1"
    mgr.apply(Resources(memory=Memory(limit=32 * MiB, swap=32 * MiB)))
    if os.path.exists(f"{d}/memory.swap.max"):
        assert read(f"{d}/memory.swap.max") == "0"  # memory+swap == memory: no swap
    mgr.apply(Resources(memory=Memory(limit=-1)))
    assert read(f"{d}/memory.max") == "max"
    if os.path.exists(f"{d}/memory.swap.max"):
        assert read(f"{d}/memory.swap.max") == "max"
    mgr.apply(Resources(pids=Pids(limit=0)))
    assert read(f"{d}/pids.max") == "0"
    mgr.apply(Resources(pids=Pids(limit=-1)))
    assert read(f"{d}/pids.max") == "max"
    mgr.apply(Resources(memory=Memory(limit=0), cpu=CPU(shares=0, quota=0, period=0)))  # all unset
    assert read(f"{d}/memory.max") == "max"
    mgr.destroy()


@v2_only
def test_v2_refusals(sandbox):
    mgr = _v2_abs(sandbox, "ct")
    mgr.create()
    with pytest.raises(CgroupError, match=r"linux\.resources\.memory\.swappiness"):
        mgr.apply(Resources(memory=Memory(swappiness=10)))
    with pytest.raises(CgroupError, match=r"linux\.resources\.memory\.disableOOMKiller"):
        mgr.apply(Resources(memory=Memory(disable_oom_killer=True)))
    with pytest.raises(CgroupError, match=r"linux\.resources\.devices"):
        mgr.apply(Resources(devices=[DeviceRule(False), DeviceRule(True, "x", 1, 3, "rwm")]))
    with pytest.raises(CgroupError, match=r"linux\.resources\.memory\.swap: cannot set a swap limit without"):
        mgr.apply(Resources(memory=Memory(swap=64 * MiB)))
    # skip_devices: the caller enforces device rules some other way
    skipping = manager_for(sandbox.path("ct"), "x", skip_devices=True)
    skipping.apply(Resources(devices=[DeviceRule(False)]))
    mgr.destroy()


@v2_only
def test_v2_tree_pids_and_sigterm_through_the_freezer(sandbox):
    mgr = _v2_abs(sandbox, "ct")
    mgr.create()
    p1, p2 = sandbox.sleeper(), sandbox.sleeper()
    # v2 forbids processes in inner cgroups with controllers: both go to leaves
    os.mkdir(mgr.path() + "/sub")
    mgr.add(p1.pid)
    with open(mgr.path() + "/sub/cgroup.procs", "w") as f:
        f.write(str(p2.pid))
    assert mgr.pids() == sorted([p1.pid, p2.pid])
    mgr.kill_all(signal.SIGTERM)
    assert wait_dead(p1) == -signal.SIGTERM
    assert wait_dead(p2) == -signal.SIGTERM
    assert read(mgr.path() + "/cgroup.freeze") == "0"
    mgr.destroy()
    assert not mgr.exists()


@v2_only
def test_v2_state_survives_a_killed_runtime(sandbox, tmp_path):
    p = sandbox.sleeper()
    state_file = tmp_path / "cgroup.json"
    script = f"""
import json, os, signal
from pyrunc.cgroups import manager_for
from pyrunc.config import Resources, Pids
mgr = manager_for({sandbox.path('ct')!r}, "x")
open({str(state_file)!r}, "w").write(json.dumps(mgr.to_state()))
mgr.create(); mgr.apply(Resources(pids=Pids(limit=5))); mgr.add({p.pid})
os.kill(os.getpid(), signal.SIGKILL)
"""
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=120, check=False)
    assert r.returncode == -signal.SIGKILL
    mgr = manager_from_state(json.loads(state_file.read_text()))
    assert mgr.pids() == [p.pid]
    mgr.kill_all(signal.SIGKILL)
    wait_dead(p)
    mgr.destroy()
    assert not mgr.exists()


@v2_only
def test_v2_relative_path_is_below_the_parent_of_our_cgroup(sandbox):
    own = proc_cgroups(os.getpid())[""]
    mgr = manager_for(sandbox.name + "/ct", "x")  # relative
    mount = mgr.to_state()["mount"]
    base = os.path.dirname(own.rstrip("/")) or "/"
    assert mgr.path() == os.path.normpath(f"{mount}/{base}/{sandbox.name}/ct")
    if base != "/":
        pytest.skip("runs only where our parent is the root (the cgroup2-vm guest)")
    mgr.create()
    p = sandbox.sleeper()
    mgr.add(p.pid)
    assert proc_cgroups(p.pid)[""] == f"/{sandbox.name}/ct"
    mgr.kill_all(signal.SIGKILL)
    wait_dead(p)
    mgr.destroy()


@pytest.mark.cgroup2
def test_a_cgroup_that_existed_before_create_is_kept(sandbox):
    """runtime.md: delete must not delete resources the container did not create.  A cgroupsPath
    that already exists is kept by destroy (its sub-cgroups go), also from the persisted state."""
    first = manager_for(sandbox.path("ct"), "first")
    first.create(Resources())
    dirs = sorted(set(first.paths.values())) if hasattr(first, "paths") else [first.dir]
    assert first.kept == [] and "kept" not in first.to_state()
    second = manager_for(sandbox.path("ct"), "second")
    second.create(Resources())
    assert sorted(second.kept) == dirs
    for d in dirs:
        os.mkdir(os.path.join(d, "made-inside"))  # what the container's processes made
    manager_from_state(json.loads(json.dumps(second.to_state()))).destroy()
    for d in dirs:
        assert os.path.isdir(d) and not os.path.exists(os.path.join(d, "made-inside")), d
    first.destroy()
    assert not any(os.path.exists(d) for d in dirs)
