"""pyrunc.cgroups without root: value conversions, checks, layouts and cgroupsPath rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pyrunc.cgroups import CgroupError, manager_from_state
from pyrunc.cgroups import paths as P
from pyrunc.cgroups.resources import (
    DeviceState,
    check_supported,
    cpu_max,
    device_target,
    device_transition,
    parse_devices_list,
    pids_max,
    shares_to_weight,
    swap_to_v2,
    v2_number,
)
from pyrunc.config import CPU, DeviceRule, Memory, Pids, Resources
from pyrunc.errors import PyruncError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# ---------------------------------------------------------------------------- fake hosts

HYBRID_MOUNTINFO = """\
22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

HYBRID_SELF = """\
9:name=systemd:/user.slice/session-1.scope
8:pids:/user.slice
7:blkio:/
6:freezer:/
5:devices:/user.slice
4:memory:/process_api/abc
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/user.slice/session-1.scope
"""

V2_MOUNTINFO = """\
25 18 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
30 25 0:26 / /sys/fs/bpf rw,relatime - bpf bpf rw
"""

V1_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:10 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset,clone_children
35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd,release_agent=/x
"""


def mounts(text: str) -> P.Mounts:
    return P.parse_mountinfo(text)


# ---------------------------------------------------------------------------- layout


def test_layout_hybrid():
    m = mounts(HYBRID_MOUNTINFO)
    assert m.layout == "hybrid"
    assert m.unified == P.Mount("/sys/fs/cgroup/unified", "/")
    assert set(m.v1) == {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
                         "name=systemd"}
    assert m.v1["cpu"].mountpoint == "/sys/fs/cgroup/cpu"


def test_layout_v2_and_v1_and_none():
    v2 = mounts(V2_MOUNTINFO)
    assert v2.layout == "v2" and v2.unified.mountpoint == "/sys/fs/cgroup" and not v2.v1
    v1 = mounts(V1_MOUNTINFO)
    assert v1.layout == "v1" and v1.unified is None
    assert v1.v1["cpu"] == v1.v1["cpuacct"] == P.Mount("/sys/fs/cgroup/cpu,cpuacct", "/")
    assert v1.v1["memory"].root == "/docker/abc"
    assert "clone_children" not in v1.v1 and "xattr" not in v1.v1 and "name=systemd" in v1.v1
    assert mounts("22 1 0:21 / /sys rw - sysfs sysfs rw\n").layout == "none"


def test_mountinfo_escapes_and_unusual_places():
    text = "50 1 0:40 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n"
    m = mounts(text)
    assert m.layout == "v2" and m.unified.mountpoint == "/mnt/my cgroups"


def test_detect_layout_on_this_host_is_known():
    assert P.detect_layout() in ("v1", "v2", "hybrid", "none")


def test_parse_proc_cgroup():
    own = P.parse_proc_cgroup(HYBRID_SELF + "10:cpu,cpuacct:/a (deleted)\n")
    assert own[""] == "/user.slice/session-1.scope"
    assert own["name=systemd"] == "/user.slice/session-1.scope"
    assert own["cpu"] == own["cpuacct"] == "/a"


# ---------------------------------------------------------------------------- cgroupsPath


@pytest.mark.parametrize("given,want", [
    ("/a/b", "/a/b"), ("/a/../../b", "/b"), ("//a//b/", "/a/b"),
    ("a/b", "a/b"), ("../../x", "x"), ("a/./b/..", "a"), ("", ""),
])
def test_clean_path(given, want):
    assert P.clean_path(given) == want


def test_inner_path_defaults_to_the_container_id_and_rejects_the_root():
    assert P.inner_path("", "ctr1") == "ctr1"
    assert P.inner_path("/x/y", "ctr1") == "/x/y"
    for bad in ("/", "/..", ".", "a/.."):
        with pytest.raises(CgroupError, match="linux.cgroupsPath"):
            P.inner_path(bad, "c")


def test_v1_absolute_paths_are_below_each_hierarchy_root():
    paths = P.v1_paths("/pod/ct", mounts(HYBRID_MOUNTINFO), None)
    assert paths["memory"] == "/sys/fs/cgroup/memory/pod/ct"
    assert paths["name=systemd"] == "/sys/fs/cgroup/systemd/pod/ct"
    assert paths[""] == "/sys/fs/cgroup/unified/pod/ct"  # hybrid: the cgroup2 one too
    v1 = P.v1_paths("/pod/ct", mounts(V1_MOUNTINFO), None)
    assert v1["cpu"] == v1["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct/pod/ct"
    assert "" not in v1


def test_v1_relative_paths_are_below_our_own_cgroups():
    own = P.parse_proc_cgroup(HYBRID_SELF)
    paths = P.v1_paths("ct", mounts(HYBRID_MOUNTINFO), own)
    assert paths["memory"] == "/sys/fs/cgroup/memory/process_api/abc/ct"
    assert paths["pids"] == "/sys/fs/cgroup/pids/user.slice/ct"
    assert paths["cpu"] == "/sys/fs/cgroup/cpu/ct"
    assert paths["name=systemd"] == "/sys/fs/cgroup/systemd/user.slice/session-1.scope/ct"
    assert paths[""] == "/sys/fs/cgroup/unified/user.slice/session-1.scope/ct"


def test_v1_relative_paths_respect_the_mount_root():
    own = {"memory": "/docker/abc/sub", "cpu": "/", "cpuacct": "/", "cpuset": "/", "devices": "/",
           "name=systemd": "/"}
    paths = P.v1_paths("ct", mounts(V1_MOUNTINFO), own)
    assert paths["memory"] == "/sys/fs/cgroup/memory/sub/ct"  # the mount shows /docker/abc as its root
    with pytest.raises(CgroupError, match="cannot locate our own cgroup"):
        P.v1_paths("ct", mounts(V1_MOUNTINFO), dict(own, memory="/elsewhere"))


def test_v1_relative_path_skips_hierarchies_we_are_not_in():
    paths = P.v1_paths("ct", mounts(HYBRID_MOUNTINFO), {"memory": "/", "devices": "/"})
    assert set(paths) == {"memory", "devices"}


def test_v2_paths():
    m = mounts(V2_MOUNTINFO)
    assert P.v2_path("/pod/ct", m, None) == "/sys/fs/cgroup/pod/ct"
    # relative: below the PARENT of our own cgroup (ours holds processes)
    own = {"": "/user.slice/user-0.slice/session-3.scope"}
    assert P.v2_path("ct", m, own) == "/sys/fs/cgroup/user.slice/user-0.slice/ct"
    assert P.v2_path("a/ct", m, {"": "/"}) == "/sys/fs/cgroup/a/ct"
    assert P.v2_path("ct", m, {"": "/init.scope"}) == "/sys/fs/cgroup/ct"
    with pytest.raises(CgroupError, match="0::"):
        P.v2_path("ct", m, {"memory": "/"})


# ---------------------------------------------------------------------------- values


@pytest.mark.parametrize("shares,weight", [
    (0, 0), (1, 1), (2, 1), (3, 2), (512, 59), (1024, 100), (2048, 174), (262143, 10000),
    (262144, 10000), (262145, 10000),
])
def test_shares_to_weight_is_runcs_quadratic(shares, weight):
    assert shares_to_weight(shares) == weight


@pytest.mark.parametrize("swap,limit,want", [
    (0, 0, 0), (-1, 0, -1), (300, -1, 300), (-1, -1, -1), (-1, 1000, -1), (1000, 1000, 0),
    (1500, 1000, 500), (0, -1, -1), (0, 1000, 0),
])
def test_swap_to_v2(swap, limit, want):
    assert swap_to_v2(swap, limit) == want


@pytest.mark.parametrize("swap,limit,msg", [
    (-2, 0, "without a memory limit"), (500, 1000, "smaller than the memory limit"),
    (100, 0, "without a memory limit"), (100, -5, "invalid value"),
])
def test_swap_to_v2_errors(swap, limit, msg):
    with pytest.raises(CgroupError, match=msg):
        swap_to_v2(swap, limit)


def test_small_values():
    assert [pids_max(x) for x in (-1, -7, 0, 1, 32771)] == ["max", "max", "0", "1", "32771"]
    assert v2_number(-1) == "max" and v2_number(4096) == "4096"
    assert cpu_max(50000, 0) == "50000 100000"
    assert cpu_max(-1, 0) == "max 100000"
    assert cpu_max(0, 200000) == "max 200000"
    assert cpu_max(0, 200000, "30000 100000") == "30000 200000"
    assert cpu_max(20000, 0, "30000 50000") == "20000 50000"


def test_cgroup_error_is_a_pyrunc_error():
    e = CgroupError("x", 16)
    assert isinstance(e, PyruncError) and e.errno == 16 and str(e) == "x"


# ---------------------------------------------------------------------------- devices


def test_device_target_follows_the_list_order():
    t = device_target([DeviceRule(False), DeviceRule(True, "c", 1, 3, "rwm"), DeviceRule(True, "c", 1, 3, "r"),
                       DeviceRule(False, "c", 1, 3, "w"), DeviceRule(True, "b", None, None, "m")])
    assert t == DeviceState(False, {("c", 1, 3): "rm", ("b", -1, -1): "m"})
    assert device_target([]).is_allow_all()
    assert device_target([DeviceRule(False), DeviceRule(True)]).is_allow_all()
    # "a" resets everything whatever its numbers say (the kernel's rule)
    assert device_target([DeviceRule(False, "c", 1, 3, "rwm"), DeviceRule(False, "a", 5, 1, "r")]) \
        == DeviceState(False, {})
    # allow-by-default: exceptions are denials
    assert device_target([DeviceRule(False, "b", 8, None, "w")]) == DeviceState(True, {("b", 8, -1): "w"})


@pytest.mark.parametrize("rule,msg", [
    (DeviceRule(True, "u", 1, 3, "rwm"), "type"), (DeviceRule(True, "c", 1, 3, "x"), "access"),
    (DeviceRule(True, "c", 1, 3, ""), None),  # empty access in the record means the default rwm
])
def test_device_rule_errors(rule, msg):
    if msg is None:
        assert device_target([rule]).is_allow_all()
        return
    with pytest.raises(CgroupError, match=rf"linux\.resources\.devices\[0\]\.{msg}"):
        device_target([rule])


def test_parse_devices_list():
    assert parse_devices_list("a *:* rwm\n") is None
    assert parse_devices_list("c 1:3 rwm\nc *:* m\nb 7:* r\n") == DeviceState(
        False, {("c", 1, 3): "rwm", ("c", -1, -1): "m", ("b", 7, -1): "r"})
    assert parse_devices_list("") == DeviceState(False, {})


def test_device_transition_from_fresh_cgroup_is_disruptive():
    target = device_target([DeviceRule(False), DeviceRule(True, "c", 1, 3, "rwm")])
    assert device_transition(None, target) == [("devices.deny", "a *:* rwm"), ("devices.allow", "c 1:3 rwm")]
    assert device_transition(None, DeviceState()) == [("devices.allow", "a *:* rwm")]


def test_device_transition_between_allowlists_writes_only_differences():
    cur = DeviceState(False, {("c", 1, 3): "rwm", ("c", 1, 5): "rwm"})
    target = DeviceState(False, {("c", 1, 3): "r", ("b", 7, -1): "r"})
    assert device_transition(cur, target) == [
        ("devices.deny", "c 1:3 wm"), ("devices.deny", "c 1:5 rwm"), ("devices.allow", "b 7:* r")]
    assert device_transition(target, target) == []


# ---------------------------------------------------------------------------- checks


def res(**kw) -> Resources:
    return Resources(**kw)


@pytest.mark.parametrize("kw,layouts,message", [
    ({"block_io": {"weight": 5}}, ("v1", "hybrid", "v2"), "blockIO.weight: 5 is outside the kernel's range"),
    ({"block_io": {"throttleReadBpsDevice": [{"major": 8, "rate": 100}]}}, ("v1", "v2"),
     "blockIO.throttleReadBpsDevice[0]: major and minor must be device numbers"),
    ({"block_io": {"leafWeight": 500}}, ("v2",), "blockIO.leafWeight: cgroup v2 has no leaf weights"),
    ({"hugepage_limits": [{"pageSize": "2mb", "limit": 0}]}, ("v1", "v2"), "hugepageLimits[0].pageSize"),
    ({"hugepage_limits": [{"pageSize": "2MB", "limit": -1}]}, ("v1", "v2"), "hugepageLimits[0].limit"),
    ({"network": {"classID": 7}}, ("v2",), "network: cgroup v2 has no net_cls/net_prio controllers"),
    ({"rdma": {"mlx5_1": {"hcaHandles": -3}}}, ("v1", "v2"), "rdma['mlx5_1'].hcaHandles"),
    ({"unified": {"memory.high": "1G"}}, ("v1", "hybrid"), "unified: invalid configuration: cannot use unified"),
    ({"unified": {"../memory.high": "1G"}}, ("v2",), "unified['../memory.high']: must be a file name"),
    ({"unified": {"memoryhigh": "1G"}}, ("v2",), "unified['memoryhigh']: must be in the form CONTROLLER.PARAMETER"),
    ({"cpu": CPU(realtime_runtime=950000)}, ("v2",), "cpu.realtimeRuntime: cgroup v2 has no realtime"),
    ({"cpu": CPU(realtime_period=1000000)}, ("v2",), "cpu.realtimePeriod: cgroup v2 has no realtime"),
])
def test_refusals_name_their_json_path(kw, layouts, message):
    for layout in layouts:
        with pytest.raises(CgroupError) as e:
            check_supported(res(**kw), layout)
        assert f"linux.resources.{message}" in str(e.value)


@pytest.mark.parametrize("kw,controller,path", [
    ({"block_io": {"weight": 500}}, "blkio", "blockIO"),
    ({"hugepage_limits": [{"pageSize": "2MB", "limit": 0}]}, "hugetlb", "hugepageLimits[0]"),
    ({"network": {"classID": 7}}, "net_cls", "network.classID"),
    ({"rdma": {"mlx5_1": {"hcaHandles": 3}}}, "rdma", "rdma['mlx5_1']"),
    ({"cpu": CPU(realtime_runtime=950000)}, "cpu", "cpu.realtimeRuntime"),
])
def test_missing_controllers_are_refused(kw, controller, path):
    check_supported(res(**kw), "v1", controllers={controller})
    with pytest.raises(CgroupError) as e:
        check_supported(res(**kw), "v1", controllers={"memory"})
    assert f"linux.resources.{path}: the {controller} controller is not available on this host" in str(e.value)


def test_supported_groups_pass_the_check():
    for layout in ("v1", "hybrid", "v2"):
        check_supported(res(block_io={"weight": 500, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1}]},
                            hugepage_limits=[{"pageSize": "2MB", "limit": 0}], rdma={"mlx5_1": {"hcaHandles": 3}},
                            memory=Memory(kernel=1 << 20, kernel_tcp=1 << 20)), layout)
    check_supported(res(network={"classID": 7}, cpu=CPU(realtime_runtime=950000, realtime_period=1000000)), "v1")
    check_supported(res(unified={"memory.high": "1G", "cgroup.max.depth": "3"}), "v2")


def test_writes_are_runcs():
    from pyrunc.cgroups.resources import blkio_v1_writes, io_v2_writes, net_writes, rdma_lines

    bio = {"weight": 300, "leafWeight": 200, "weightDevice": [{"major": 8, "minor": 0, "weight": 100}],
           "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 10}],
           "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 20}]}
    assert blkio_v1_writes(bio, "blkio.bfq") == [
        ("blkio.bfq.weight", "300", "linux.resources.blockIO.weight"),
        ("blkio.leaf_weight", "200", "linux.resources.blockIO.leafWeight"),
        ("blkio.bfq.weight_device", "8:0 100", "linux.resources.blockIO.weightDevice[0].weight"),
        ("blkio.throttle.read_bps_device", "8:0 10", "linux.resources.blockIO.throttleReadBpsDevice[0]"),
        ("blkio.throttle.write_iops_device", "8:16 20", "linux.resources.blockIO.throttleWriteIOPSDevice[0]")]
    bio.pop("leafWeight")
    assert [w[:2] for w in io_v2_writes(bio, bfq=False)] == [
        ("io.weight", "2930"), ("io.bfq.weight", "8:0 100"), ("io.max", "8:0 rbps=10"), ("io.max", "8:16 wiops=20")]
    assert io_v2_writes(bio, bfq=True)[0][:2] == ("io.bfq.weight", "300")
    assert rdma_lines({"b": {"hcaObjects": 2}, "a": {"hcaHandles": 1, "hcaObjects": 0}, "c": {}}) == [
        ("a hca_handle=1 hca_object=0", "linux.resources.rdma['a']"),
        ("b hca_object=2", "linux.resources.rdma['b']")]
    assert net_writes({"classID": 0x100001, "priorities": [{"name": "eth0", "priority": 5}]}) == [
        ("net_cls", "net_cls.classid", "1048577", "linux.resources.network.classID"),
        ("net_prio", "net_prio.ifpriomap", "eth0 5", "linux.resources.network.priorities[0]")]


def test_every_problem_is_listed_at_once():
    with pytest.raises(CgroupError) as e:
        check_supported(res(block_io={"weight": 5}, rdma={"x": {"hcaObjects": -1}}), "v1")
    assert str(e.value).splitlines() == ["linux.resources.blockIO.weight: 5 is outside the kernel's range [10, 1000]",
                                         "linux.resources.rdma['x'].hcaObjects: -1 is not a count"]


def test_zero_and_empty_are_unset():
    check_supported(res(block_io={"weight": 0}, hugepage_limits=[], network={}, rdma=None, unified={},
                        memory=Memory(kernel=0, limit=0), cpu=CPU(realtime_runtime=0, shares=0),
                        pids=Pids(limit=0)), "v2")


def test_v2_only_refusals():
    swappy = res(memory=Memory(swappiness=60))
    check_supported(swappy, "v1")
    check_supported(swappy, "hybrid")
    with pytest.raises(CgroupError, match=r"memory\.swappiness: cgroup v2 has no per-cgroup swappiness"):
        check_supported(swappy, "v2")
    with pytest.raises(CgroupError, match=r"memory\.disableOOMKiller"):
        check_supported(res(memory=Memory(disable_oom_killer=True)), "v2")
    check_supported(res(memory=Memory(disable_oom_killer=False)), "v2")
    with pytest.raises(CgroupError, match=r"memory\.swap: cannot set a swap limit without a memory limit"):
        check_supported(res(memory=Memory(swap=100)), "v2")
    with pytest.raises(CgroupError, match=r"swappiness: invalid value 101"):
        check_supported(res(memory=Memory(swappiness=101)), "v1")
    with pytest.raises(CgroupError, match=r"useHierarchy"):
        check_supported(res(memory=Memory(use_hierarchy=False)), "v1")
    with pytest.raises(CgroupError, match=r"burst: 5000 is larger than the quota 1000"):
        check_supported(res(cpu=CPU(quota=1000, burst=5000)), "v1")


def test_v2_device_rules():
    deny = res(devices=[DeviceRule(False), DeviceRule(True, "c", 1, 3, "rwm")])
    check_supported(deny, "v1")
    check_supported(deny, "hybrid")
    with pytest.raises(CgroupError, match=r"^linux\.resources\.devices: the cgroup v2 device controller "
                                          r"\(eBPF\) is not supported by pyrunc yet$"):
        check_supported(deny, "v2")
    check_supported(deny, "v2", skip_devices=True)
    check_supported(res(devices=[DeviceRule(True)]), "v2")  # allows everything: nothing to enforce
    check_supported(res(devices=[]), "v2")


# ---------------------------------------------------------------------------- state


def test_state_round_trip_needs_no_host():
    v1 = {"layout": "hybrid", "paths": {"memory": "/sys/fs/cgroup/memory/a", "": "/sys/fs/cgroup/unified/a"},
          "skip_devices": False}
    m = manager_from_state(json.loads(json.dumps(v1)))
    assert m.to_state() == v1 and m.layout == "hybrid" and m.path("memory") == "/sys/fs/cgroup/memory/a"
    v2 = {"layout": "v2", "path": "/sys/fs/cgroup/a/b", "mount": "/sys/fs/cgroup", "skip_devices": True}
    m2 = manager_from_state(v2)
    assert m2.to_state() == v2 and m2.path() == "/sys/fs/cgroup/a/b"
    for bad in ({}, {"layout": "v3"}, None):
        with pytest.raises(CgroupError, match="unknown cgroup state"):
            manager_from_state(bad)  # type: ignore[arg-type]
    with pytest.raises(CgroupError, match="not below the cgroup2 mount"):
        manager_from_state({"layout": "v2", "path": "/sys/fs/cgroup", "mount": "/sys/fs/cgroup"})


def test_missing_cgroup_is_fine_for_pids_kill_and_destroy(tmp_path):
    m = manager_from_state({"layout": "v1", "paths": {"memory": str(tmp_path / "gone" / "ct")}})
    assert m.pids() == [] and not m.exists()
    m.kill_all(9)
    m.destroy()
    m2 = manager_from_state({"layout": "v2", "path": "/sys/fs/cgroup/pyrunc-unit-nonexistent/ct"})
    assert m2.pids() == [] and not m2.exists()
    m2.destroy()


# ---------------------------------------------------------------------------- hot path


def test_no_heavy_imports():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "import pyrunc.cgroups, pyrunc.cgroups.v1, pyrunc.cgroups.v2, pyrunc.cgroups.resources; "
            "heavy = ('re', 'typing', 'dataclasses', 'enum', 'pathlib', 'subprocess', 'inspect'); "
            "print(','.join(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, REPO], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ""
