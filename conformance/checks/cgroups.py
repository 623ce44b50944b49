"""config-linux.md#control-groups: cgroupsPath and linux.resources, read from the container's cgroup files."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable

from ..harness import Ctx, Fail, Skip, cgroup_mounts, check, host_has_controller, proc_cgroup

CL = "config-linux.md"


def _v1(controller: str) -> bool:
    return controller in cgroup_mounts()


def _file(pid: int, controller: str, v1: str, v2: str | None) -> Path:
    mounts = cgroup_mounts()
    cg = proc_cgroup(pid)
    if controller in mounts:
        p = Path(mounts[controller] + cg[controller]) / v1
    elif "" in mounts and v2:
        p = Path(mounts[""] + cg[""]) / v2
    else:
        raise Skip(f"host has no {controller} cgroup controller")
    return p


_PROBED: dict[tuple[str, str], bool] = {}


def _probe(controller: str, v1: str, v2: str | None) -> None:
    """Skip when the host's hierarchy does not have this file in a new cgroup (some files, such as
    blkio.bfq.weight, exist in non-root cgroups only)."""
    mounts = cgroup_mounts()
    if controller in mounts:
        key = (controller, v1)
        if key not in _PROBED:
            probe = Path(mounts[controller]) / f"oci-conf-probe-{os.getpid()}-{threading.get_ident()}"
            probe.mkdir()
            try:
                _PROBED[key] = (probe / v1).exists()
            finally:
                probe.rmdir()
        if not _PROBED[key]:
            raise Skip(f"host's {controller} hierarchy has no {v1}")
    elif "" in mounts and v2 and host_has_controller(controller):
        return
    else:
        raise Skip(f"host has no {controller} cgroup controller")


def _res(row: str, controller: str, resources: dict[str, Any],
         files: list[tuple[str, str | None, Callable[[str, bool], bool]]], ref: str) -> None:
    """files: (v1 file, v2 file, predicate(text, is_v1))."""
    def fn(c: Ctx) -> None:
        for v1, v2, _ in files:
            _probe(controller, v1, v2)
        cfg = c.config()
        cfg["linux"]["resources"].update(resources)
        k = c.run(cfg)
        for v1, v2, ok in files:
            f = _file(k.pid, controller, v1, v2)
            text = f.read_text().strip()
            if not ok(text, _v1(controller)):
                raise Fail(f"{f.name} = {text[:120]!r}")
    fn.__name__ = "res_" + row
    check(row, ref)(fn)


def eq(v: str, v2: str | None = None) -> Callable[[str, bool], bool]:
    return lambda t, is_v1: t == (v if is_v1 or v2 is None else v2)


def has(v: str) -> Callable[[str, bool], bool]:
    return lambda t, is_v1: v in t


MIB = 1024 * 1024


@check("linux.cgroupsPath (absolute)", f"{CL}#cgroups-path")
def cgroups_path(c: Ctx) -> None:
    cfg = c.config()
    cid = c.new_id()
    cfg["linux"]["cgroupsPath"] = f"/{cid}/inner"
    k = c.create(cfg, cid=cid)
    c.cleanups.append(lambda: _rmdir_all(f"/{cid}"))
    cg = proc_cgroup(k.pid)
    mounts = cgroup_mounts()
    checked = [ctl for ctl in ("memory", "pids", "cpu", "") if ctl in mounts and ctl in cg
               and (ctl or not any(x in mounts for x in ("memory", "pids")))]
    for ctl in checked:
        if cg[ctl] != f"/{cid}/inner":
            raise Fail(f"{ctl or 'cgroup2'} cgroup is {cg[ctl]}, want /{cid}/inner")
    if not checked:
        raise Skip("host has no memory, pids or cpu controller")


def _rmdir_all(rel: str) -> None:
    for m in set(cgroup_mounts().values()):
        p = Path(m + rel)
        if p.is_dir():
            try:
                p.rmdir()
            except OSError:
                pass


_res("linux.resources.memory.limit", "memory", {"memory": {"limit": 64 * MIB}},
     [("memory.limit_in_bytes", "memory.max", eq(str(64 * MIB)))], f"{CL}#memory")
_res("linux.resources.memory.reservation", "memory", {"memory": {"limit": 64 * MIB, "reservation": 32 * MIB}},
     [("memory.soft_limit_in_bytes", "memory.low", eq(str(32 * MIB)))], f"{CL}#memory")
_res("linux.resources.memory.swap", "memory", {"memory": {"limit": 64 * MIB, "swap": 96 * MIB}},
     [("memory.memsw.limit_in_bytes", "memory.swap.max", eq(str(96 * MIB), str(32 * MIB)))], f"{CL}#memory")
_res("linux.resources.memory.swappiness", "memory", {"memory": {"swappiness": 37}},
     [("memory.swappiness", None, eq("37"))], f"{CL}#memory")
_res("linux.resources.memory.disableOOMKiller", "memory", {"memory": {"limit": 64 * MIB, "disableOOMKiller": True}},
     [("memory.oom_control", None, has("oom_kill_disable 1"))], f"{CL}#memory")


@check("linux.resources.memory.kernel", f"{CL}#memory")
def memory_kernel(c: Ctx) -> None:
    mounts = cgroup_mounts()
    if "memory" not in mounts or not Path(mounts["memory"], "memory.kmem.limit_in_bytes").exists():
        raise Skip("host has no memory.kmem.limit_in_bytes")
    probe = Path(mounts["memory"], c.session.new_id("kmem-probe"))
    probe.mkdir()
    try:
        (probe / "memory.kmem.limit_in_bytes").write_text(str(64 * MIB))
        works = (probe / "memory.kmem.limit_in_bytes").read_text().strip() == str(64 * MIB)
    except OSError:
        works = False
    finally:
        probe.rmdir()
    if not works:
        raise Skip("host kernel ignores kernel memory limits (memory.kmem.limit_in_bytes, gone since 5.16)")
    cfg = c.config()
    cfg["linux"]["resources"]["memory"] = {"kernel": 64 * MIB}
    k = c.run(cfg)
    text = _file(k.pid, "memory", "memory.kmem.limit_in_bytes", None).read_text().strip()
    if text != str(64 * MIB):
        raise Fail(f"memory.kmem.limit_in_bytes = {text}")


_res("linux.resources.memory.kernelTCP", "memory", {"memory": {"kernelTCP": 16 * MIB}},
     [("memory.kmem.tcp.limit_in_bytes", None, eq(str(16 * MIB)))], f"{CL}#memory")
_res("linux.resources.memory.useHierarchy", "memory", {"memory": {"useHierarchy": True}},
     [("memory.use_hierarchy", None, eq("1"))], f"{CL}#memory")
_res("linux.resources.cpu.shares", "cpu", {"cpu": {"shares": 512}},
     [("cpu.shares", "cpu.weight", eq("512", "20"))], f"{CL}#cpu")
_res("linux.resources.cpu.quota/period", "cpu", {"cpu": {"quota": 50000, "period": 100000}},
     [("cpu.cfs_quota_us", "cpu.max", eq("50000", "50000 100000")),
      ("cpu.cfs_period_us", "cpu.max", eq("100000", "50000 100000"))], f"{CL}#cpu")
_res("linux.resources.cpu.burst", "cpu", {"cpu": {"quota": 50000, "period": 100000, "burst": 10000}},
     [("cpu.cfs_burst_us", "cpu.max.burst", eq("10000"))], f"{CL}#cpu")
_res("linux.resources.cpu.realtimeRuntime/Period", "cpu", {"cpu": {"realtimeRuntime": 1000,
                                                                  "realtimePeriod": 100000}},
     [("cpu.rt_runtime_us", None, eq("1000")), ("cpu.rt_period_us", None, eq("100000"))], f"{CL}#cpu")
_res("linux.resources.cpu.idle", "cpu", {"cpu": {"idle": 1}}, [("cpu.idle", "cpu.idle", eq("1"))], f"{CL}#cpu")
_res("linux.resources.cpu.cpus", "cpuset", {"cpu": {"cpus": "0"}},
     [("cpuset.cpus", "cpuset.cpus", eq("0"))], f"{CL}#cpu")
_res("linux.resources.cpu.mems", "cpuset", {"cpu": {"mems": "0"}},
     [("cpuset.mems", "cpuset.mems", eq("0"))], f"{CL}#cpu")
_res("linux.resources.pids.limit", "pids", {"pids": {"limit": 42}},
     [("pids.max", "pids.max", eq("42"))], f"{CL}#pids")


def _blkdev() -> str:
    for name in sorted(os.listdir("/sys/block")):
        if name.startswith(("loop", "zram", "ram")):
            continue
        return Path(f"/sys/block/{name}/dev").read_text().strip()
    raise Skip("host has no disk block device for per-device limits")


@check("linux.resources.blockIO.weight", f"{CL}#block-io")
def blkio_weight(c: Ctx) -> None:
    for v1, v2 in (("blkio.weight", "io.weight"), ("blkio.bfq.weight", "io.bfq.weight")):
        try:
            _probe("blkio", v1, v2)
            break
        except Skip:
            continue
    else:
        raise Skip("host's blkio hierarchy has no weight file (no BFQ/CFQ)")
    cfg = c.config()
    cfg["linux"]["resources"]["blockIO"] = {"weight": 300}
    k = c.run(cfg)
    text = _file(k.pid, "blkio", v1, v2).read_text()
    if "300" not in text:
        raise Fail(f"{v1}: {text.strip()!r}")


@check("linux.resources.blockIO.leafWeight", f"{CL}#block-io")
def blkio_leaf(c: Ctx) -> None:
    _probe("blkio", "blkio.leaf_weight", None)
    cfg = c.config()
    cfg["linux"]["resources"]["blockIO"] = {"leafWeight": 300}
    k = c.run(cfg)
    if _file(k.pid, "blkio", "blkio.leaf_weight", None).read_text().strip() != "300":
        raise Fail("blkio.leaf_weight not 300")


@check("linux.resources.blockIO.weightDevice", f"{CL}#block-io")
def blkio_weight_device(c: Ctx) -> None:
    for v1 in ("blkio.weight_device", "blkio.bfq.weight_device"):
        try:
            _probe("blkio", v1, "io.bfq.weight")
            break
        except Skip:
            continue
    else:
        raise Skip("host's blkio hierarchy has no weight_device file (no BFQ/CFQ)")
    dev = _blkdev()
    disk = next(n for n in sorted(os.listdir("/sys/block")) if Path(f"/sys/block/{n}/dev").read_text().strip() == dev)
    if "[bfq]" not in Path(f"/sys/block/{disk}/queue/scheduler").read_text():
        raise Skip(f"host's disk {disk} does not use the BFQ scheduler (per-device weights need it)")
    ma, mi = dev.split(":")
    cfg = c.config()
    cfg["linux"]["resources"]["blockIO"] = {"weightDevice": [{"major": int(ma), "minor": int(mi), "weight": 333}]}
    k = c.run(cfg)
    text = _file(k.pid, "blkio", v1, "io.bfq.weight").read_text()
    if f"{dev} 333" not in text:
        raise Fail(f"{v1}: {text.strip()!r}")


@check("linux.resources.blockIO.throttle*Device", f"{CL}#block-io")
def blkio_throttle(c: Ctx) -> None:
    _probe("blkio", "blkio.throttle.read_bps_device", "io.max")
    dev = _blkdev()
    ma, mi = (int(x) for x in dev.split(":"))
    cfg = c.config()
    cfg["linux"]["resources"]["blockIO"] = {
        "throttleReadBpsDevice": [{"major": ma, "minor": mi, "rate": 1048576}],
        "throttleWriteBpsDevice": [{"major": ma, "minor": mi, "rate": 2097152}],
        "throttleReadIOPSDevice": [{"major": ma, "minor": mi, "rate": 300}],
        "throttleWriteIOPSDevice": [{"major": ma, "minor": mi, "rate": 400}]}
    k = c.run(cfg)
    if _v1("blkio"):
        for f, v in (("read_bps_device", 1048576), ("write_bps_device", 2097152), ("read_iops_device", 300),
                     ("write_iops_device", 400)):
            text = _file(k.pid, "blkio", f"blkio.throttle.{f}", None).read_text()
            if f"{dev} {v}" not in text:
                raise Fail(f"blkio.throttle.{f}: {text.strip()!r}")
    else:
        text = _file(k.pid, "io", "", "io.max").read_text()
        if not all(x in text for x in ("rbps=1048576", "wbps=2097152", "riops=300", "wiops=400")):
            raise Fail(f"io.max: {text.strip()!r}")


@check("linux.resources.hugepageLimits", f"{CL}#huge-page-limits")
def hugetlb(c: Ctx) -> str | None:
    if not host_has_controller("hugetlb"):
        raise Skip("host has no hugetlb cgroup controller mounted")
    cfg = c.config()
    cfg["linux"]["resources"]["hugepageLimits"] = [{"pageSize": "2MB", "limit": 4 * MIB}]
    k = c.try_create(cfg)
    if not k.create_result.ok:
        if not _v1("hugetlb"):
            return "refused: hugetlb is only on the cgroup2 hierarchy of this hybrid host"
        raise Fail(f"create: {k.create_result.why()}")
    k.start()
    for name in ("hugetlb.2MB.limit_in_bytes", "hugetlb.2MB.max"):
        try:
            f = _file(k.pid, "hugetlb", name, name)
        except Skip:
            continue
        if f.exists() and f.read_text().strip() == str(4 * MIB):
            return None
    raise Fail("hugetlb 2MB limit not applied")


@check("linux.resources.network (classID, priorities)", f"{CL}#network")
def net_cls(c: Ctx) -> None:
    if not (_v1("net_cls") and _v1("net_prio")):
        raise Skip("host has no net_cls/net_prio cgroup v1 hierarchy mounted")
    cfg = c.config()
    cfg["linux"]["resources"]["network"] = {"classID": 1048577, "priorities": [{"name": "lo", "priority": 5}]}
    k = c.run(cfg)
    if _file(k.pid, "net_cls", "net_cls.classid", None).read_text().strip() != "1048577":
        raise Fail("net_cls.classid not applied")
    if "lo 5" not in _file(k.pid, "net_prio", "net_prio.ifpriomap", None).read_text():
        raise Fail("net_prio.ifpriomap not applied")


@check("linux.resources.rdma", f"{CL}#rdma")
def rdma(c: Ctx) -> None:
    if not host_has_controller("rdma") or not Path("/sys/class/infiniband").exists():
        raise Skip("host has no rdma controller or RDMA device")
    raise Skip("rdma check not written")


@check("linux.resources.unified", f"{CL}#unified")
def unified(c: Ctx) -> str | None:
    mounts = cgroup_mounts()
    if "" not in mounts:
        raise Skip("host has no cgroup2 mount")
    cfg = c.config()
    cfg["linux"]["resources"]["unified"] = {"pids.max": "42"}
    k = c.try_create(cfg)
    cg2 = Path(mounts[""], "cgroup.controllers").read_text().split()
    if "pids" not in cg2:
        if k.create_result.ok:
            raise Fail("accepted although the cgroup2 hierarchy has no pids controller (MUST error)")
        return "refused: pids is not a cgroup2 controller here"
    if not k.create_result.ok:
        raise Fail(f"refused: {k.create_result.why()}")
    text = _file(k.pid, "", "", "pids.max").read_text().strip()
    if text != "42":
        raise Fail(f"pids.max = {text}")
    return None


def _dev_script(c: Ctx, devices: list[dict[str, Any]], script: str) -> str:
    cfg = c.script_config(script)
    cfg["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]})
    cfg["linux"]["resources"]["devices"] = devices
    return c.run(cfg).output()


# /dev/fuse (c 10:229) and /dev/loop0 (b 7:0): no default devices (not even runc's extra ones), and
# opening them needs no set-up
def _need_devs() -> None:
    for d in ("/dev/fuse", "/dev/loop0"):
        if not os.path.exists(d):
            raise Skip(f"host lacks {d} (used as a device to allow or deny)")


@check("linux.resources.devices (allow list)", f"{CL}#allowed-device-list")
def devices_allow(c: Ctx) -> None:
    _need_devs()
    out = _dev_script(c, [{"allow": False, "access": "rwm"},
                          {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm"}],
                      "mknod /tmp/fuse c 10 229 && true < /tmp/fuse; echo open-fuse=$?\n"
                      "mknod /tmp/loop b 7 0; echo mknod-loop=$?; true < /tmp/loop; echo open-loop=$?")
    if "open-fuse=0" not in out:
        raise Fail(f"the allowed c 10:229 cannot be opened: {out.strip()!r}")
    if "open-loop=0" in out:
        raise Fail(f"the denied b 7:0 can be opened: {out.strip()!r}")


@check("linux.resources.devices: entries applied in order", f"{CL}#allowed-device-list")
def devices_order(c: Ctx) -> None:
    _need_devs()
    out = _dev_script(c, [{"allow": False, "access": "rwm"},
                          {"allow": True, "type": "b", "major": 7, "minor": 0, "access": "rwm"},
                          {"allow": False, "type": "b", "major": 7, "minor": 0, "access": "r"}],
                      "mknod /tmp/loop b 7 0; echo mknod=$?; true < /tmp/loop; echo read=$?; "
                      "true >> /tmp/loop; echo write=$?")
    if "mknod=0" not in out or "write=0" not in out:
        raise Fail(f"b 7:0 mknod/write should be allowed: {out.strip()!r}")
    if "read=0" in out:
        raise Fail(f"b 7:0 read was denied last but works: {out.strip()!r}")
