"""The rest of linux.resources against the real kernel: blockIO, hugepageLimits, network, rdma,
unified, cpu realtime and kernel memory (root only).

Manager-level tests work below their own ``/<TEST_PREFIX>cg-<random>`` parent, as in
``test_cgroups.py``; container tests use ``TEST_PREFIX`` cgroups paths.  What this host
lacks (hugetlb, net_cls, net_prio and rdma hierarchies on the hybrid test machine) must
be refused with a message naming the JSON path, leaving the cgroup untouched.  Tests
marked ``cgroup2`` run inside cgroup2-vm (see ``test_cgroup2_vm.py``):
  cgroup2-vm .venv/bin/python -m pytest -q -p no:cacheprovider -m cgroup2 tests/integration/test_cgroup_resources.py
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import TEST_PREFIX, new_id, proc_cgroups
from pyrunc.cgroups import CgroupError, manager_for
from pyrunc.cgroups.resources import blkio_to_io_weight, check_supported, ignored_warnings
from pyrunc.config import CPU, Memory, Pids, Resources
from test_cgroup_limits import limited_bundle
from test_cgroups import MiB, read, v1_only, v2_only
from test_cgroups import sandbox as _sandbox_fixture

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cgroup integration tests need root")
sandbox = _sandbox_fixture  # the same fixture as test_cgroups.py's (a pytest fixture is found by name)


def block_device() -> tuple[str, int, int]:
    """A real disk of this machine (name, major, minor): vda first, never loop/zram/ram."""
    names = sorted(os.listdir("/sys/block"), key=lambda n: (n != "vda", n))
    for name in names:
        if name.startswith(("loop", "zram", "ram", "nullb")):
            continue
        major, minor = Path(f"/sys/block/{name}/dev").read_text().strip().split(":")
        return name, int(major), int(minor)
    pytest.skip("no block device on this host")


def throttles(major: int, minor: int) -> dict:
    dev = {"major": major, "minor": minor}
    return {"throttleReadBpsDevice": [{**dev, "rate": 4 * MiB}],
            "throttleWriteBpsDevice": [{**dev, "rate": 2 * MiB}],
            "throttleReadIOPSDevice": [{**dev, "rate": 300}],
            "throttleWriteIOPSDevice": [{**dev, "rate": 200}]}


# ---------------------------------------------------------------------------- no kernel needed


def test_checks_refuse_what_v2_has_no_files_for() -> None:
    r = Resources(cpu=CPU(realtime_runtime=1000, realtime_period=100000), network={"classID": 0x100001},
                  block_io={"leafWeight": 500})
    with pytest.raises(CgroupError) as e:
        check_supported(r, "v2")
    lines = str(e.value).splitlines()
    assert any(line.startswith("linux.resources.cpu.realtimeRuntime: cgroup v2 has no realtime") for line in lines)
    assert any(line.startswith("linux.resources.cpu.realtimePeriod: cgroup v2 has no realtime") for line in lines)
    assert any(line.startswith("linux.resources.network: cgroup v2 has no net_cls/net_prio") for line in lines)
    assert any(line.startswith("linux.resources.blockIO.leafWeight: cgroup v2 has no leaf") for line in lines)
    with pytest.raises(CgroupError, match=r"linux\.resources\.unified\['\.\./x'\]: must be a file name"):
        check_supported(Resources(unified={"../x": "1"}), "v2")
    with pytest.raises(CgroupError, match=r"linux\.resources\.unified: invalid configuration: cannot use "
                                          r"unified on cgroup v1"):
        check_supported(Resources(unified={"memory.high": "1"}), "hybrid")
    with pytest.raises(CgroupError, match=r"linux\.resources\.hugepageLimits\[0\]\.pageSize"):
        check_supported(Resources(hugepage_limits=[{"pageSize": "2M", "limit": 0}]), "v2")
    with pytest.raises(CgroupError, match=r"linux\.resources\.blockIO\.weight: 5 is outside"):
        check_supported(Resources(block_io={"weight": 5}), "v1")
    # zero values are "unset", as engines send them; kernel memory is only a warning
    check_supported(Resources(block_io={"weight": 0, "leafWeight": 0}, network={"classID": 0},
                              cpu=CPU(realtime_runtime=0, realtime_period=0), memory=Memory(kernel=1 << 30)),
                    "v2", controllers=set())
    assert ignored_warnings(Resources(memory=Memory(kernel_tcp=1))) != []
    assert ignored_warnings(Resources(memory=Memory(limit=1))) == []
    assert blkio_to_io_weight(10) == 1 and blkio_to_io_weight(1000) == 10000 and blkio_to_io_weight(500) == 4950


# ---------------------------------------------------------------------------- v1 / hybrid


@v1_only
def test_v1_blkio_weight_and_throttles(sandbox) -> None:
    _, major, minor = block_device()
    mgr = manager_for(sandbox.path("ct"), "x")
    mgr.create()
    d = mgr.path("blkio")
    weight_file = "blkio.weight" if os.path.exists(d + "/blkio.weight") else "blkio.bfq.weight"
    mgr.apply(Resources(block_io={"weight": 300, **throttles(major, minor)}))
    assert read(f"{d}/{weight_file}").split()[-1] == "300"
    dev = f"{major}:{minor}"
    assert read(f"{d}/blkio.throttle.read_bps_device") == f"{dev} {4 * MiB}"
    assert read(f"{d}/blkio.throttle.write_bps_device") == f"{dev} {2 * MiB}"
    assert read(f"{d}/blkio.throttle.read_iops_device") == f"{dev} 300"
    assert read(f"{d}/blkio.throttle.write_iops_device") == f"{dev} 200"
    # a zero weight is "unset": nothing changes
    mgr.apply(Resources(block_io={"weight": 0}))
    assert read(f"{d}/{weight_file}").split()[-1] == "300"
    mgr.destroy()


@v1_only
def test_v1_blkio_weight_device_applies_or_names_the_entry(sandbox) -> None:
    name, major, minor = block_device()
    mgr = manager_for(sandbox.path("ct"), "x")
    mgr.create()
    d = mgr.path("blkio")
    prefix = "blkio" if os.path.exists(d + "/blkio.weight") else "blkio.bfq"
    scheduler = Path(f"/sys/block/{name}/queue/scheduler").read_text()
    wanted = "[cfq]" if prefix == "blkio" else "[bfq]"
    bio = {"weightDevice": [{"major": major, "minor": minor, "weight": 200}]}
    if wanted in scheduler:
        mgr.apply(Resources(block_io=bio))
        assert f"{major}:{minor} 200" in read(f"{d}/{prefix}.weight_device")
    else:  # the kernel refuses per-device weights for a device on another scheduler
        with pytest.raises(CgroupError, match=r"^linux\.resources\.blockIO\.weightDevice\[0\]\.weight: .*"
                                              r"(per-device weights need|is missing)"):
            mgr.apply(Resources(block_io=bio))
    mgr.destroy()


@v1_only
def test_v1_realtime_cpu(sandbox) -> None:
    mgr = manager_for(sandbox.path("ct"), "x")
    mgr.create()
    d = mgr.path("cpu")
    if not os.path.exists(d + "/cpu.rt_runtime_us"):
        pytest.skip("kernel without CONFIG_RT_GROUP_SCHED (no cpu.rt_* files)")
    rt = Resources(cpu=CPU(realtime_runtime=5000, realtime_period=100000))
    # our new parent has no realtime budget (0): the kernel refuses, and we say why
    with pytest.raises(CgroupError, match=r"^linux\.resources\.cpu\.realtimeRuntime: cannot write '5000' "
                                          r".*cpu\.rt_runtime_us: Invalid argument \(.*parent"):
        mgr.apply(rt)
    parent = os.path.dirname(d)
    with open(parent + "/cpu.rt_runtime_us", "w") as f:  # our own parent: give it a budget
        f.write("100000")  # 10% of its 1 s period: room for 5 ms per 100 ms
    mgr.apply(rt)
    assert read(d + "/cpu.rt_period_us") == "100000"
    assert read(d + "/cpu.rt_runtime_us") == "5000"
    mgr.destroy()  # (the sandbox removes the parent, budget and all)


@v1_only
def test_v1_missing_controllers_are_named_and_nothing_is_written(sandbox) -> None:
    mgr = manager_for(sandbox.path("ct"), "x")
    mgr.create()
    pids_file = mgr.path("pids") + "/pids.max"
    cases = [("hugetlb", Resources(hugepage_limits=[{"pageSize": "2MB", "limit": 4 * MiB}]),
              "linux.resources.hugepageLimits[0]: the hugetlb controller is not available on this host"),
             ("net_cls", Resources(network={"classID": 0x100001}),
              "linux.resources.network.classID: the net_cls controller is not available on this host"),
             ("net_prio", Resources(network={"priorities": [{"name": "lo", "priority": 5}]}),
              "linux.resources.network.priorities[0]: the net_prio controller is not available on this host"),
             ("rdma", Resources(rdma={"mlx5_0": {"hcaHandles": 3, "hcaObjects": 100}}),
              "linux.resources.rdma['mlx5_0']: the rdma controller is not available on this host")]
    tried = 0
    for controller, resources, message in cases:
        if mgr.path(controller):
            continue  # this host has it: nothing to refuse
        tried += 1
        resources.pids = Pids(limit=7)
        with pytest.raises(CgroupError) as e:
            mgr.apply(resources)
        assert message in str(e.value)
        assert read(pids_file) == "max"  # refused before any write
    if not tried:
        pytest.skip("this host mounts hugetlb, net_cls, net_prio and rdma")
    with pytest.raises(CgroupError, match=r"^linux\.resources\.unified: invalid configuration"):
        mgr.apply(Resources(unified={"pids.max": "7"}))
    assert read(pids_file) == "max"
    mgr.destroy()


# ---------------------------------------------------------------------------- containers


def _remove_parent(name: str) -> None:
    for top in ["/sys/fs/cgroup"] + [str(p) for p in Path("/sys/fs/cgroup").iterdir() if p.is_dir()]:
        if os.path.isdir(f"{top}/{name}"):
            os.rmdir(f"{top}/{name}")


@v1_only
def test_v1_container_blkio_and_update(pyrunc, make_bundle) -> None:
    _, major, minor = block_device()
    cid = new_id()
    path = f"/{TEST_PREFIX}res/{cid}"
    bundle = limited_bundle(make_bundle, path, {"blockIO": {"weight": 400, **throttles(major, minor)},
                                         "memory": {"kernel": 64 * MiB, "kernelTCP": 16 * MiB}})
    p = pyrunc("create", "-b", str(bundle), cid)
    assert "kernel memory settings are ignored" in p.stderr  # a warning, not an error
    pid = pyrunc.state(cid)["pid"]
    try:
        d = Path("/sys/fs/cgroup/blkio") / proc_cgroups(pid)["blkio"].lstrip("/")
        assert str(d).endswith(path)
        weight_file = d / ("blkio.weight" if (d / "blkio.weight").exists() else "blkio.bfq.weight")
        assert weight_file.read_text().split()[-1] == "400"
        assert (d / "blkio.throttle.read_bps_device").read_text().strip() == f"{major}:{minor} {4 * MiB}"
        pyrunc("update", "--blkio-weight", "250", cid)
        assert weight_file.read_text().split()[-1] == "250"
        cfg = json.loads((Path(pyrunc.root) / cid / "config.json").read_text())
        assert cfg["linux"]["resources"]["blockIO"]["weight"] == 250  # persisted once applied
    finally:
        pyrunc("delete", "--force", cid)
    _remove_parent(f"{TEST_PREFIX}res")


@v1_only
def test_v1_container_refused_resource_names_the_json_path(pyrunc, make_bundle) -> None:
    if os.path.isdir("/sys/fs/cgroup/hugetlb"):
        pytest.skip("this host mounts the v1 hugetlb hierarchy")
    cid = new_id()
    bundle = limited_bundle(make_bundle, f"/{TEST_PREFIX}res/{cid}",
                     {"hugepageLimits": [{"pageSize": "2MB", "limit": 4 * MiB}]})
    p = pyrunc("create", "-b", str(bundle), cid, check=False)
    assert p.returncode != 0
    assert "linux.resources.hugepageLimits[0]: the hugetlb controller is not available on this host" in p.stderr
    assert cid not in pyrunc.ids()
    _remove_parent(f"{TEST_PREFIX}res")


# ---------------------------------------------------------------------------- pure cgroup v2


def _null_blk() -> tuple[int, int]:
    if not os.path.exists("/dev/nullb0"):
        subprocess.run(["modprobe", "null_blk"], capture_output=True, check=False)
    if not os.path.exists("/sys/block/nullb0/dev"):
        pytest.skip("no null_blk device (modprobe null_blk failed): io.max untested")
    major, minor = Path("/sys/block/nullb0/dev").read_text().strip().split(":")
    return int(major), int(minor)


@v2_only
def test_v2_io_max_and_weight(sandbox) -> None:
    major, minor = _null_blk()
    mgr = manager_for(sandbox.path("ct"), "x")
    mgr.create()
    d = mgr.path()
    mgr.apply(Resources(block_io={"weight": 500, **throttles(major, minor)}))
    assert read(d + "/io.max") == f"{major}:{minor} rbps={4 * MiB} wbps={2 * MiB} riops=300 wiops=200"
    if os.path.exists(d + "/io.bfq.weight"):
        assert read(d + "/io.bfq.weight").splitlines()[0] == "default 500"
    else:
        assert read(d + "/io.weight").splitlines()[0] == f"default {blkio_to_io_weight(500)}"
    mgr.destroy()


@v2_only
def test_v2_hugetlb_max(sandbox) -> None:
    mgr = manager_for(sandbox.path("ct"), "x")
    mgr.create()
    d = mgr.path()
    if not os.path.exists(d + "/hugetlb.2MB.max"):
        pytest.skip("no hugetlb.2MB.max (hugetlb controller or 2MB pages missing)")
    mgr.apply(Resources(hugepage_limits=[{"pageSize": "2MB", "limit": 4 * MiB}]))
    assert read(d + "/hugetlb.2MB.max") == str(4 * MiB)
    if os.path.exists(d + "/hugetlb.2MB.rsvd.max"):
        assert read(d + "/hugetlb.2MB.rsvd.max") == str(4 * MiB)
    with pytest.raises(CgroupError, match=r"^linux\.resources\.hugepageLimits\[0\]\.pageSize: this host has "
                                          r"no 3MB huge pages"):
        mgr.apply(Resources(hugepage_limits=[{"pageSize": "3MB", "limit": 0}]))
    mgr.destroy()


@v2_only
def test_v2_rdma_is_written_or_names_the_device(sandbox) -> None:
    mgr = manager_for(sandbox.path("ct"), "x")
    mgr.create()
    d = mgr.path()
    if not os.path.exists(d + "/rdma.max"):
        pytest.skip("no rdma controller in the cgroup")
    devices = read(d + "/rdma.max").split()
    rdma = {"nosuchdev0": {"hcaHandles": 3, "hcaObjects": 100}}
    if devices:  # a real RDMA device: its limits land in rdma.max
        rdma = {devices[0]: {"hcaHandles": 3, "hcaObjects": 100}}
        mgr.apply(Resources(rdma=rdma))
        assert f"{devices[0]} hca_handle=3 hca_object=100" in read(d + "/rdma.max")
    else:
        with pytest.raises(CgroupError, match=r"^linux\.resources\.rdma\['nosuchdev0'\]: cannot write "
                                              r"'nosuchdev0 hca_handle=3 hca_object=100'"):
            mgr.apply(Resources(rdma=rdma))
    mgr.destroy()


@v2_only
def test_v2_unified_keys(sandbox) -> None:
    mgr = manager_for(sandbox.path("ct"), "x")
    mgr.create()
    d = mgr.path()
    mgr.apply(Resources(unified={"memory.high": str(48 * MiB), "pids.max": "7"}))
    assert read(d + "/memory.high") == str(48 * MiB)
    assert read(d + "/pids.max") == "7"
    # unified wins over the typed field it shadows (written last, as runc does)
    mgr.apply(Resources(unified={"pids.max": "9"}, pids=Pids(3)))
    assert read(d + "/pids.max") == "9"
    with pytest.raises(CgroupError, match=r"^linux\.resources\.unified\['memory\.nosuchfile'\]: no such cgroup file"):
        mgr.apply(Resources(unified={"memory.nosuchfile": "1"}))
    with pytest.raises(CgroupError, match=r"^linux\.resources\.unified\['memory\.high'\]: cannot write 'lots'"):
        mgr.apply(Resources(unified={"memory.high": "lots"}))
    with pytest.raises(CgroupError, match=r"must be a file name"):
        mgr.apply(Resources(unified={"x/memory.high": "1"}))
    assert not os.path.exists(d + "/x")
    mgr.destroy()


@v2_only
def test_v2_refusals_name_the_json_path(sandbox) -> None:
    mgr = manager_for(sandbox.path("ct"), "x")
    mgr.create()
    d = mgr.path()
    before = read(d + "/pids.max")
    with pytest.raises(CgroupError) as e:
        mgr.apply(Resources(pids=Pids(5),
                            cpu=CPU(realtime_runtime=1000), network={"priorities": [{"name": "lo", "priority": 1}]}))
    assert "linux.resources.cpu.realtimeRuntime: cgroup v2 has no realtime" in str(e.value)
    assert "linux.resources.network: cgroup v2 has no net_cls/net_prio" in str(e.value)
    assert read(d + "/pids.max") == before
    mgr.destroy()


@v2_only
def test_v2_container_unified_and_io(pyrunc, make_bundle) -> None:
    cid = new_id()
    path = f"/{TEST_PREFIX}res/{cid}"
    bundle = limited_bundle(make_bundle, path, {"unified": {"pids.max": "11", "memory.high": str(64 * MiB)},
                                         "blockIO": {"weight": 0}})
    pyrunc("create", "-b", str(bundle), cid)
    pid = pyrunc.state(cid)["pid"]
    try:
        d = Path("/sys/fs/cgroup") / proc_cgroups(pid)[""].lstrip("/")
        assert str(d).endswith(path)
        assert (d / "pids.max").read_text().strip() == "11"
        assert (d / "memory.high").read_text().strip() == str(64 * MiB)
    finally:
        pyrunc("delete", "--force", cid)
    _remove_parent(f"{TEST_PREFIX}res")

