"""Pure cgroup v2 backend: one directory in the unified hierarchy.

Controllers reach a cgroup only when every ancestor lists them in
``cgroup.subtree_control``; ``create`` enables, like runc's CreateCgroupPath, every
controller each ancestor offers (from the mount root down to the leaf's parent),
writing only the missing ones.  Device rules have no files on v2: ``apply`` hands them
to ``ebpf``, which attaches a BPF_PROG_TYPE_CGROUP_DEVICE program to the cgroup.
"""

from __future__ import annotations

import errno
import os

from .base import (
    CgroupError,
    Manager,
    join_cgroup,
    sub_dir,
    make_dirs,
    read_file,
    remove_below,
    remove_created,
    remove_tree,
    rootless_error,
    signal_pids,
    tree_pids,
    write_file,
    write_raw,
)
from .resources import (
    check_supported,
    cpu_max,
    device_target,
    io_v2_writes,
    pids_max,
    rdma_lines,
    shares_to_weight,
    swap_to_v2,
    v2_number,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (hot path)
if TYPE_CHECKING:
    from ..config import CPU, Memory, Resources
    from .resources import DeviceState


def _uses_domain_controllers(r: Resources | None) -> bool:
    """memory, io, cpu or hugetlb settings (runc's containsDomainController)."""
    if r is None:
        return False
    mem, cpu = r.memory, r.cpu
    if mem is not None and (mem.limit or mem.reservation or mem.swap):
        return True
    if cpu is not None and (cpu.shares or cpu.quota or cpu.period or cpu.idle is not None
                            or cpu.burst is not None):
        return True
    return bool(r.block_io or r.hugepage_limits)


def _rootless_needs(r: Resources | None) -> list[tuple[str, str]]:
    """(controller, JSON path) of every limit in ``r`` that needs a cgroup of the container's
    own (runc's needAnyControllers, plus rdma and unified); device rules are not among them."""
    if r is None:
        return []
    out = []
    mem, cpu = r.memory, r.cpu
    if r.pids is not None and r.pids.limit is not None:
        out.append(("pids", "linux.resources.pids.limit"))
    if mem is not None and (mem.limit or mem.swap or mem.reservation):
        out.append(("memory", "linux.resources.memory"))
    if r.block_io:
        out.append(("io", "linux.resources.blockIO"))
    if cpu is not None and (cpu.shares or cpu.quota or cpu.period or cpu.idle is not None
                            or cpu.burst is not None):
        out.append(("cpu", "linux.resources.cpu"))
    if cpu is not None and (cpu.cpus or cpu.mems):
        out.append(("cpuset", "linux.resources.cpu.cpus/mems"))
    if r.hugepage_limits:
        out.append(("hugetlb", "linux.resources.hugepageLimits"))
    if r.rdma:
        out.append(("rdma", "linux.resources.rdma"))
    out.extend((key.partition(".")[0], f"linux.resources.unified[{key!r}]") for key in sorted(r.unified))
    return out


class V2Manager(Manager):
    layout = "v2"

    def __init__(self, path: str, mount: str = "/sys/fs/cgroup", skip_devices: bool = False,
                 rootless: bool = False, may_skip: bool = False, skipped: dict[str, str] | None = None) -> None:
        mount = mount.rstrip("/") or "/"
        if (path or not rootless) and (path == mount or not path.startswith(mount + "/")):
            raise CgroupError(f"invalid cgroup v2 path {path} (not below the cgroup2 mount {mount})")
        self.dir = path  # "": a rootless container that could not have a cgroup
        self.mount = mount
        self.skip_devices = skip_devices
        self.rootless = rootless
        self.may_skip = may_skip
        self.skipped = dict(skipped or {})
        self._creating = False

    def path(self, controller: str = "") -> str:
        return self.dir

    def to_state(self) -> dict[str, object]:
        out: dict[str, object] = {"layout": "v2", "path": self.dir, "mount": self.mount,
                                  "skip_devices": self.skip_devices}
        if self.rootless:
            out.update(rootless=True, skipped=dict(self.skipped))
        if self.kept:
            out["kept"] = list(self.kept)
        return out

    def __repr__(self) -> str:
        return f"V2Manager(path={self.dir!r})"

    def exists(self) -> bool:
        return bool(self.dir) and os.path.isdir(self.dir)

    # ------------------------------------------------------------------ create

    def create(self, resources: Resources | None = None) -> None:
        self._creating = True
        try:
            self._create(resources)
        except CgroupError as e:
            # runc's fs2 Apply: a rootless container without cgroupsPath goes without a cgroup
            # when it cannot have one, as long as it sets no limit that needs one
            if not self.may_skip:
                raise
            needs = _rootless_needs(resources)
            if needs:
                raise CgroupError("\n".join(rootless_error(c, what, str(e)) for c, what in needs),
                                  e.errno) from None
            self.skipped[""] = str(e)
            self.dir = ""

    def _create(self, resources: Resources | None) -> None:
        self.kept = [self.dir] if os.path.isdir(self.dir) else []
        created: list[str] = []
        try:
            make_dirs(self.dir, created)
            rel = self.dir[len(self.mount):].strip("/").split("/")
            current = self.mount
            for name in rel:
                # enable controllers in `current` for its child, then step down
                self._enable_controllers(current)
                current = f"{current}/{name}"
                self._check_type(current, resources)
        except BaseException:
            remove_created(created)
            raise

    @staticmethod
    def _enable_controllers(d: str) -> None:
        try:
            available = read_file(d + "/cgroup.controllers").split()
            enabled = set(read_file(d + "/cgroup.subtree_control").split())
        except OSError as e:
            raise CgroupError(f"cannot read the controllers of cgroup {d}: {e.strerror}", e.errno) from None
        missing = [c for c in available if c not in enabled]
        if not missing:
            return
        try:
            write_raw(d + "/cgroup.subtree_control", " ".join("+" + c for c in missing))
        except OSError:
            # one by one; what still fails shows up later, naming the file that is missing
            for c in missing:
                try:
                    write_raw(d + "/cgroup.subtree_control", "+" + c)
                except OSError:
                    pass

    @staticmethod
    def _check_type(d: str, resources: Resources | None) -> None:
        """A cgroup below a populated one is "domain invalid": only threaded controllers work."""
        try:
            cg_type = read_file(d + "/cgroup.type").strip()
        except OSError:
            return  # the root has no cgroup.type
        if cg_type == "domain invalid":
            if _uses_domain_controllers(resources):
                raise CgroupError(f"cannot use cgroup {d} with memory/cpu/io limits: it is in an "
                                  "invalid state (its parent holds processes)")
            try:
                write_raw(d + "/cgroup.type", "threaded")
            except OSError as e:
                raise CgroupError(f"cannot make cgroup {d} threaded: {e.strerror}", e.errno) from None
        elif cg_type in ("threaded", "domain threaded") and _uses_domain_controllers(resources):
            raise CgroupError(f"cannot use cgroup {d} with memory/cpu/io limits: it is in {cg_type} mode")

    # ------------------------------------------------------------------ apply

    def _write(self, name: str, value: str, what: str) -> None:
        """write_file, with a hint when the controller's files are absent from the cgroup."""
        try:
            write_file(self.dir, name, value, what)
        except CgroupError as e:
            if e.errno != errno.ENOENT:
                raise
            controller = name.partition(".")[0]
            try:
                available = read_file(self.dir + "/cgroup.controllers").split()
            except OSError:
                raise e from None
            if controller not in available and controller != "cgroup":
                raise CgroupError(f"{e} (the {controller} controller is not enabled for "
                                  f"{self.dir}: see cgroup.subtree_control of its parents)",
                                  e.errno) from None
            raise

    def apply(self, resources: Resources | None) -> None:
        if resources is None:
            return
        r = resources
        if not self.dir:
            reason = self.skipped.get("", "no cgroup")
            needs = _rootless_needs(r)
            if needs:
                raise CgroupError("\n".join(rootless_error(c, what, reason) for c, what in needs))
            self.devices_ignored = bool(r.devices) and not self.skip_devices
            return
        devices = self._check(r)
        if devices is not None:
            try:
                self._apply_devices(devices)
            except (CgroupError, OSError):
                if not self.rootless:
                    raise
                self.devices_ignored = True  # runc: "not expected to work" rootless
        pids = r.pids
        if pids is not None and pids.limit is not None:
            self._write("pids.max", pids_max(pids.limit), "linux.resources.pids.limit")
        if r.memory is not None:
            self._apply_memory(r.memory)
        if r.block_io:
            self._apply_io(r.block_io)
        cpu = r.cpu
        if cpu is not None:
            self._apply_cpu(cpu)
            if cpu.cpus:
                self._write("cpuset.cpus", cpu.cpus, "linux.resources.cpu.cpus")
            if cpu.mems:
                self._write("cpuset.mems", cpu.mems, "linux.resources.cpu.mems")
        if r.hugepage_limits:
            self._apply_hugetlb(r.hugepage_limits)
        if r.rdma:
            for line, what in rdma_lines(r.rdma):
                self._write("rdma.max", line, what)
        for key in sorted(r.unified):
            self._apply_unified(key, r.unified[key])

    def _apply_io(self, bio: dict) -> None:
        bfq_file = self.dir + "/io.bfq.weight"
        bfq = os.path.exists(bfq_file)
        if bfq and bio.get("weightDevice"):
            try:
                current = read_file(bfq_file).strip()
            except OSError:
                current = ""
            per_device = not current.isdigit()  # old kernels show (and take) only a number
        else:
            per_device = False
        for name, value, what in io_v2_writes(bio, bfq):
            if name == "io.bfq.weight" and ":" in value and not per_device:
                raise CgroupError(f"{what}: per-device weights need the BFQ I/O scheduler's "
                                  f"io.bfq.weight with per-device support, which {self.dir} lacks",
                                  errno.ENOENT)
            self._write(name, value, what)

    def _apply_hugetlb(self, limits: list[dict]) -> None:
        """hugetlb.<size>.max, and .rsvd.max where the kernel has it (runc)."""
        rsvd = True
        for i, entry in enumerate(limits):
            what = f"linux.resources.hugepageLimits[{i}]"
            prefix = f"hugetlb.{entry['pageSize']}"
            if not os.path.exists(f"{self.dir}/{prefix}.max"):
                raise CgroupError(f"{what}.pageSize: this host has no {entry['pageSize']} huge pages "
                                  f"({self.dir}/{prefix}.max is missing)", errno.ENOENT)
            self._write(prefix + ".max", str(entry["limit"]), what)
            if rsvd:
                rsvd = os.path.exists(f"{self.dir}/{prefix}.rsvd.max")
                if rsvd:
                    self._write(prefix + ".rsvd.max", str(entry["limit"]), what)

    def _apply_unified(self, key: str, value: str) -> None:
        """One linux.resources.unified file, line by line (runc's WriteFileByLine).  Never
        created: a missing file is a controller that is not enabled, or no such key."""
        what = f"linux.resources.unified[{key!r}]"
        if not os.path.exists(f"{self.dir}/{key}"):
            controller = key.partition(".")[0]
            try:
                available = read_file(self.dir + "/cgroup.controllers").split()
            except OSError:
                available = []
            if controller != "cgroup" and controller not in available:
                raise CgroupError(f"{what}: can't be set: controller {controller!r} not available "
                                  f"for {self.dir}", errno.ENOENT)
            raise CgroupError(f"{what}: no such cgroup file {self.dir}/{key}", errno.ENOENT)
        for line in value.split("\n") or [""]:
            if line or "\n" not in value:
                write_file(self.dir, key, line, what)

    def _check(self, r: Resources) -> DeviceState | None:
        """check_supported, with the device rules checked here: v2 enforces them with an
        eBPF program (``ebpf``), not the refusal check_supported has for v2.  Returns the
        device policy to set (None: leave the device filter as it is)."""
        problems = []
        try:
            available = set(read_file(self.dir + "/cgroup.controllers").split())
        except OSError:
            available = None  # no cgroup yet: the writes will say what is missing
        try:
            check_supported(r, "v2", skip_devices=True, controllers=available)
        except CgroupError as e:
            problems.append(str(e))
        state = None
        if r.devices and not self.skip_devices:
            try:
                state = device_target(r.devices)
            except CgroupError as e:
                problems.append(str(e))
        if problems:
            raise CgroupError("\n".join(problems))
        return state

    def _apply_devices(self, state: DeviceState) -> None:
        from .ebpf import set_device_filter  # ctypes: only when there are device rules

        set_device_filter(self.dir, state)

    def _apply_memory(self, mem: Memory) -> None:
        limit = mem.limit or 0
        swap_oci = mem.swap or 0
        reservation = mem.reservation or 0
        if not (limit or swap_oci or reservation):
            return
        if mem.check_before_update and (limit > 0 or swap_oci > 0):
            try:
                usage = int(read_file(self.dir + "/memory.current"))
            except OSError:
                usage = -1
            if usage >= 0 and 0 < swap_oci <= usage:
                raise CgroupError(f"linux.resources.memory.swap: rejecting memory+swap limit "
                                  f"{swap_oci} <= usage {usage}")
            if usage >= 0 and 0 < limit <= usage:
                raise CgroupError(f"linux.resources.memory.limit: rejecting memory limit {limit} "
                                  f"<= usage {usage}")
        swap = swap_to_v2(swap_oci, limit)
        if swap != 0 or swap_oci > 0:  # swap == limit: memory.swap.max 0 (no swap at all)
            value = v2_number(swap)
            what = "linux.resources.memory.swap"
            try:
                write_file(self.dir, "memory.swap.max", value, what)
            except CgroupError as e:
                # no swap accounting: "unlimited" and "none" need no file (runc)
                if not (e.errno == errno.ENOENT and value in ("max", "0")):
                    raise
        if limit:
            self._write("memory.max", v2_number(limit), "linux.resources.memory.limit")
        if reservation:
            self._write("memory.low", v2_number(reservation), "linux.resources.memory.reservation")

    def _apply_cpu(self, cpu: CPU) -> None:
        idle = cpu.idle
        if idle is not None:
            self._write("cpu.idle", str(idle), "linux.resources.cpu.idle")
        weight = shares_to_weight(cpu.shares or 0)
        if weight:
            self._write("cpu.weight", str(weight), "linux.resources.cpu.shares")
        quota = cpu.quota or 0
        period = cpu.period or 0
        burst = cpu.burst
        burst_later = False
        if burst is not None:
            try:
                self._write("cpu.max.burst", str(burst), "linux.resources.cpu.burst")
            except CgroupError as e:
                # a burst above the current quota is refused; retry once the quota is set
                if e.errno != errno.EINVAL or not quota:
                    raise
                burst_later = True
        if quota or period:
            current = ""
            if not quota or not period:
                try:
                    current = read_file(self.dir + "/cpu.max").strip()
                except OSError:
                    current = ""
            self._write("cpu.max", cpu_max(quota, period, current),
                        "linux.resources.cpu.quota" if quota else "linux.resources.cpu.period")
            if burst_later:
                self._write("cpu.max.burst", str(burst), "linux.resources.cpu.burst")

    # ------------------------------------------------------------------ processes

    def add(self, pid: int, sub: dict[str, str] | None = None) -> None:
        if sub and set(sub) != {""}:
            raise CgroupError("invalid --cgroup argument: cgroup v2 takes one sub-cgroup path, "
                              "without a <controller>: prefix")
        if not self.dir:
            return
        try:
            join_cgroup(sub_dir(self.dir, sub[""]) if sub else self.dir, pid)
        except CgroupError:
            if not self.rootless or self._creating:
                raise  # runc's fs2 Apply fails on a join error, rootless or not
            # exec: runc ignores the join errors of a rootless container

    def pids(self) -> list[int]:
        if not self.dir:
            return []
        return sorted(set(tree_pids(self.dir)))

    def kill_all(self, signum: int) -> None:
        """SIGKILL: cgroup.kill (Linux 5.14+).  Else freeze, signal, restore (runc)."""
        if not self.dir:
            return
        if signum == 9:
            try:
                write_raw(self.dir + "/cgroup.kill", "1")
                return
            except FileNotFoundError:
                if not os.path.isdir(self.dir):
                    return
            except OSError:
                pass
        before = ""
        try:
            before = read_file(self.dir + "/cgroup.freeze").strip()
        except OSError:
            before = "none"
        if before == "0":
            self._freeze("1")
        try:
            signal_pids(self.pids(), signum)
        finally:
            if before == "0" or (before == "1" and signum == 9):
                self._freeze("0")

    def _freeze(self, value: str) -> bool:
        """Write cgroup.freeze and wait (up to ~1 s) for cgroup.events to say so."""
        import time

        try:
            write_raw(self.dir + "/cgroup.freeze", value)
        except OSError:
            return False
        delay = 0.001
        for _ in range(12):
            try:
                events = read_file(self.dir + "/cgroup.events")
            except OSError:
                return False
            if f"frozen {value}" in events:
                return True
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        return False

    # ------------------------------------------------------------------ pause / resume

    def freeze(self) -> None:
        """cgroup.freeze 1, then wait until cgroup.events says ``frozen 1`` (runc waits 10 s);
        on a timeout the cgroup is thawed back rather than left half-frozen."""
        self._need_dir("pause")
        path = self.dir + "/cgroup.freeze"
        try:
            write_raw(path, "1")
        except OSError as e:
            raise CgroupError(f"pause: cannot write 1 to {path}: {e.strerror}", e.errno) from None
        try:
            if not self._wait_events("frozen 1", 10.0):
                raise CgroupError(f"unable to freeze: cgroup {self.dir} not frozen after 10 s")
        except BaseException:
            try:
                write_raw(path, "0")
            except OSError:
                pass
            raise

    def _wait_events(self, want: str, timeout: float) -> bool:
        """Poll cgroup.events until it has the line ``want``; False after ``timeout`` seconds."""
        import time

        deadline = time.monotonic() + timeout
        delay = 0.0005
        while True:
            try:
                events = read_file(self.dir + "/cgroup.events")
            except OSError as e:
                raise CgroupError(f"cannot read {self.dir}/cgroup.events: {e.strerror}", e.errno) from None
            if want in events.splitlines():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.01)

    def thaw(self) -> None:
        # cgroup.events may keep saying "frozen 1" when an ancestor is frozen: nothing to wait for
        self._need_dir("resume")
        write_file(self.dir, "cgroup.freeze", "0", "resume")

    def _need_dir(self, what: str) -> None:
        if not self.dir:
            raise CgroupError(rootless_error("freezer", what, self.skipped.get("", "no cgroup")))

    def frozen(self) -> bool:
        """cgroup.freeze is 1 and the kernel has finished freezing (waited up to 1 s, as runc's
        getFreezer waits for a freeze in progress)."""
        if not self.dir:
            return False
        try:
            if read_file(self.dir + "/cgroup.freeze").strip() != "1":
                return False
            return self._wait_events("frozen 1", 1.0)
        except (OSError, CgroupError):
            return False  # no such cgroup, or a kernel without the v2 freezer

    def destroy(self) -> None:
        if self.dir:
            (remove_below if self.dir in self.kept else remove_tree)(self.dir)

    # ------------------------------------------------------------------ statistics

    def stats(self) -> dict:
        from .stats import v2_stats

        if not self.dir:
            raise CgroupError(f"no cgroup statistics: {self.skipped.get('', 'no cgroup')}")
        return v2_stats(self.dir)

    def oom_kills(self) -> int | None:
        from .stats import v2_oom_kills

        return v2_oom_kills(self.dir) if self.dir else None

