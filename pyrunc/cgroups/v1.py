"""cgroup v1 (and hybrid) backend: one directory per hierarchy.

A container joins every mounted hierarchy, as runc does (controllers and named ones
like ``name=systemd``); on a hybrid host also the cgroup2 one (key ""), where no
controller is used: it only tracks the processes.  Co-mounted controllers
(``cpu,cpuacct``) share one directory.
"""

from __future__ import annotations

import errno
import os

from .base import (
    IGNORABLE,
    CgroupError,
    Manager,
    join_cgroup,
    sub_dir,
    make_dirs,
    read_file,
    read_value,
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
    blkio_v1_writes,
    check_supported,
    device_target,
    device_transition,
    net_writes,
    parse_devices_list,
    pids_max,
    rdma_lines,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (hot path)
if TYPE_CHECKING:
    from ..config import CPU, DeviceRule, Memory, Resources

# Join order: cpuset first (its cpus/mems must be set before anyone joins), devices early.
_ORDER = ("cpuset", "devices", "memory", "cpu", "cpuacct", "pids")


class V1Manager(Manager):
    def __init__(self, paths: dict[str, str], layout: str = "v1", skip_devices: bool = False,
                 rootless: bool = False, may_skip: bool = False, skipped: dict[str, str] | None = None) -> None:
        if layout not in ("v1", "hybrid"):
            raise CgroupError(f"cgroup v1 manager cannot handle layout {layout!r}")
        self.layout = layout
        self.paths = dict(paths)
        self.skip_devices = skip_devices
        self.rootless = rootless
        self.may_skip = may_skip
        self.skipped = dict(skipped or {})
        self._creating = False

    # ------------------------------------------------------------------ bookkeeping

    def _dirs(self) -> list[str]:
        """Distinct directories, in join order."""
        seen: list[str] = []
        keys = [k for k in _ORDER if k in self.paths] + sorted(k for k in self.paths if k not in _ORDER)
        for k in keys:
            if self.paths[k] not in seen:
                seen.append(self.paths[k])
        return seen

    def path(self, controller: str = "") -> str:
        return self.paths.get(controller, "")

    def _need(self, controller: str, what: str) -> str:
        p = self.paths.get(controller)
        if not p:
            if controller in self.skipped:
                raise CgroupError(rootless_error(controller, what, self.skipped[controller]))
            raise CgroupError(f"{what}: the {controller} cgroup controller is not mounted")
        return p

    def _skip(self, path: str, e: CgroupError) -> None:
        """Rootless: leave out every hierarchy at ``path`` (runc's fs Apply, ErrRootless)."""
        for name in [k for k, v in self.paths.items() if v == path]:
            del self.paths[name]
            self.skipped[name] = str(e)

    def to_state(self) -> dict[str, object]:
        out: dict[str, object] = {"layout": self.layout, "paths": dict(self.paths), "skip_devices": self.skip_devices}
        if self.rootless:
            out.update(rootless=True, skipped=dict(self.skipped))
        if self.kept:
            out["kept"] = list(self.kept)
        return out

    def __repr__(self) -> str:
        return f"V1Manager(layout={self.layout!r}, paths={self.paths!r})"

    def exists(self) -> bool:
        return any(os.path.isdir(p) for p in self.paths.values())

    # ------------------------------------------------------------------ create

    def create(self, resources: Resources | None = None) -> None:
        if "devices" not in self.paths and not self.skip_devices and not self.rootless:
            # runc treats a missing devices hierarchy as fatal: it is the device policy
            raise CgroupError("the devices cgroup controller is not mounted; it is required for "
                              "the container's device policy")
        self._creating = True
        self.kept = [d for d in self._dirs() if os.path.isdir(d)]
        created: list[str] = []
        try:
            # cpuset first: a directory it shares with co-mounted controllers must be
            # initialised by it, not merely made
            for ctl in sorted(self.paths, key=lambda c: c != "cpuset"):
                if ctl not in self.paths:
                    continue  # skipped with a co-mounted one (rootless)
                mine: list[str] = []
                try:
                    if ctl == "cpuset":
                        self._create_cpuset(self.paths[ctl], resources, mine)
                    else:
                        make_dirs(self.paths[ctl], mine)
                except CgroupError as e:
                    remove_created(mine)
                    if not (self.may_skip and e.errno in IGNORABLE):
                        raise
                    self._skip(self.paths[ctl], e)
                except BaseException:
                    remove_created(mine)
                    raise
                created.extend(mine)
        except BaseException:
            remove_created(created)
            raise

    def _create_cpuset(self, path: str, resources: Resources | None, created: list[str]) -> None:
        """mkdir -p where every cpuset cgroup on the way has cpus/mems before anyone joins.

        A new v1 cpuset cgroup starts with empty cpuset.cpus and cpuset.mems, and joining
        it fails (ENOSPC) until both are set: copy them from the parent, top-down
        (runc's cpusetEnsureParent).  For the leaf, the requested values come first.
        Only empty (hence unusable) ancestors are written: they are ours, or a
        concurrent creator's that has not got round to it yet.
        """
        make_dirs(path, created)
        chain = []
        current = os.path.dirname(path)
        while not read_value(current, "cpuset.cpus", f"cgroup {current}") \
                or not read_value(current, "cpuset.mems", f"cgroup {current}"):
            chain.append(current)
            current = os.path.dirname(current)
        for d in reversed(chain):
            self._cpuset_copy_if_empty(d)
        cpu = resources.cpu if resources is not None else None
        if cpu is not None and cpu.cpus:
            write_file(path, "cpuset.cpus", cpu.cpus, "linux.resources.cpu.cpus")
        if cpu is not None and cpu.mems:
            write_file(path, "cpuset.mems", cpu.mems, "linux.resources.cpu.mems")
        self._cpuset_copy_if_empty(path)

    @staticmethod
    def _cpuset_copy_if_empty(d: str) -> None:
        parent = os.path.dirname(d)
        for name in ("cpuset.cpus", "cpuset.mems"):
            mine = read_value(d, name, f"cgroup {d}")
            if not mine:
                write_file(d, name, read_value(parent, name, f"cgroup {parent}"), f"cgroup {d}")

    # ------------------------------------------------------------------ apply

    def apply(self, resources: Resources | None) -> None:
        if resources is None:
            return
        r = resources
        check_supported(r, self.layout, self.skip_devices, controllers={k for k in self.paths if k} | set(self.skipped))
        # order as runc's: cpuset, devices, memory, cpu, pids, blkio, hugetlb, net_cls, net_prio, rdma
        cpu = r.cpu
        if cpu is not None and (cpu.cpus or cpu.mems):
            d = self._need("cpuset", "linux.resources.cpu.cpus" if cpu.cpus else "linux.resources.cpu.mems")
            if cpu.cpus:
                write_file(d, "cpuset.cpus", cpu.cpus, "linux.resources.cpu.cpus")
            if cpu.mems:
                write_file(d, "cpuset.mems", cpu.mems, "linux.resources.cpu.mems")
        if r.devices and not self.skip_devices:
            try:
                self._apply_devices(r.devices)
            except CgroupError:
                if not self.rootless:
                    raise
                self.devices_ignored = True
                # runc: device errors of a rootless container are ignored, "as it is really
                # not expected to work" (rootless_warnings says so when config.json has rules)
        if r.memory is not None:
            self._apply_memory(r.memory)
        if cpu is not None:
            self._apply_cpu(cpu)
        pids = r.pids
        if pids is not None and pids.limit is not None:
            d = self._need("pids", "linux.resources.pids.limit")
            write_file(d, "pids.max", pids_max(pids.limit), "linux.resources.pids.limit")
        if r.block_io:
            self._apply_blkio(r.block_io)
        if r.hugepage_limits:
            self._apply_hugetlb(r.hugepage_limits)
        if r.network:
            for ctl, name, value, what in net_writes(r.network):
                write_file(self._need(ctl, what), name, value, what)
        if r.rdma:
            for line, what in rdma_lines(r.rdma):
                write_file(self._need("rdma", what), "rdma.max", line, what)

    def _apply_blkio(self, bio: dict) -> None:
        d = self._need("blkio", "linux.resources.blockIO")
        # CFQ's blkio.weight where it exists, else BFQ's blkio.bfq.weight (runc)
        prefix = "blkio" if os.path.exists(d + "/blkio.weight") else "blkio.bfq"
        for name, value, what in blkio_v1_writes(bio, prefix):
            if not os.path.exists(f"{d}/{name}"):
                hint = ("neither blkio.weight (CFQ) nor blkio.bfq.weight (BFQ) exists: no "
                        "proportional-weight I/O scheduler") if "weight" in name else "kernel without it"
                raise CgroupError(f"{what}: {d}/{name} is missing ({hint})", errno.ENOENT)
            try:
                write_file(d, name, value, what)
            except CgroupError as e:
                if e.errno != errno.EOPNOTSUPP or "weight_device" not in name:
                    raise
                raise CgroupError(f"{e} (per-device weights need the device to use the "
                                  f"{'BFQ' if 'bfq' in name else 'CFQ'} I/O scheduler: see "
                                  "/sys/block/<dev>/queue/scheduler)", e.errno) from None

    def _apply_hugetlb(self, limits: list[dict]) -> None:
        """hugetlb.<size>.limit_in_bytes, and .rsvd.limit_in_bytes where the kernel has it (runc)."""
        d = self._need("hugetlb", "linux.resources.hugepageLimits")
        rsvd = True
        for i, entry in enumerate(limits):
            what = f"linux.resources.hugepageLimits[{i}]"
            prefix = f"hugetlb.{entry['pageSize']}"
            if not os.path.exists(f"{d}/{prefix}.limit_in_bytes"):
                raise CgroupError(f"{what}.pageSize: this host has no {entry['pageSize']} huge pages "
                                  f"({d}/{prefix}.limit_in_bytes is missing)", errno.ENOENT)
            write_file(d, prefix + ".limit_in_bytes", str(entry["limit"]), what)
            if rsvd:
                rsvd = os.path.exists(f"{d}/{prefix}.rsvd.limit_in_bytes")
                if rsvd:
                    write_file(d, prefix + ".rsvd.limit_in_bytes", str(entry["limit"]), what)

    def _apply_devices(self, rules: list[DeviceRule]) -> None:
        what = "linux.resources.devices"
        d = self._need("devices", what)
        target = device_target(rules)
        current = parse_devices_list(read_value(d, "devices.list", what))
        for name, line in device_transition(current, target):
            write_file(d, name, line, what)
        if not target.default_allow:
            after = parse_devices_list(read_value(d, "devices.list", what))
            if after != target:
                raise CgroupError(f"{what}: the devices cgroup {d} does not match the rules "
                                  f"after writing them (devices.list: {after!r}, wanted {target!r})")

    def _apply_memory(self, mem: Memory) -> None:
        if not (mem.limit or mem.swap or mem.reservation or mem.disable_oom_killer
                or mem.swappiness not in (None, -1)):
            return  # nothing to write (kernel memory is ignored): no memory cgroup needed either
        d = self._need("memory", "linux.resources.memory")
        limit = mem.limit or 0
        swap = mem.swap or 0
        if mem.check_before_update and (limit > 0 or swap > 0):
            usage = int(read_value(d, "memory.usage_in_bytes", "linux.resources.memory"))
            if 0 < swap <= usage:
                raise CgroupError(f"linux.resources.memory.swap: rejecting memory+swap limit {swap} "
                                  f"<= usage {usage}")
            if 0 < limit <= usage:
                raise CgroupError(f"linux.resources.memory.limit: rejecting memory limit {limit} "
                                  f"<= usage {usage}")
        memsw = d + "/memory.memsw.limit_in_bytes"
        if limit == -1 and swap == 0 and os.path.exists(memsw):
            swap = -1  # unlimited memory, swap unsaid: unlimited memory+swap too (runc)
        # memsw must stay >= the memory limit at every step: pick the order that keeps it so.
        swap_first = False
        if limit and swap:
            current = int(read_value(d, "memory.limit_in_bytes", "linux.resources.memory.limit"))
            swap_first = swap == -1 or current < swap
        if swap_first:
            self._write_swap(d, swap)
            self._write_limit(d, limit)
        else:
            self._write_limit(d, limit)
            self._write_swap(d, swap)
        if mem.reservation:
            write_file(d, "memory.soft_limit_in_bytes", str(mem.reservation),
                       "linux.resources.memory.reservation")
        if mem.disable_oom_killer:
            write_file(d, "memory.oom_control", "1", "linux.resources.memory.disableOOMKiller")
        sw = mem.swappiness
        if sw is not None and sw != -1:
            write_file(d, "memory.swappiness", str(sw), "linux.resources.memory.swappiness")

    @staticmethod
    def _write_limit(d: str, limit: int) -> None:
        if not limit:
            return
        try:
            write_file(d, "memory.limit_in_bytes", str(limit), "linux.resources.memory.limit")
        except CgroupError as e:
            if e.errno != errno.EBUSY:
                raise
            usage = read_value(d, "memory.usage_in_bytes", "linux.resources.memory.limit")
            peak = read_value(d, "memory.max_usage_in_bytes", "linux.resources.memory.limit")
            raise CgroupError(f"linux.resources.memory.limit: unable to set memory limit to {limit} "
                              f"(current usage: {usage}, peak usage: {peak})", e.errno) from None

    @staticmethod
    def _write_swap(d: str, swap: int) -> None:
        if not swap:
            return
        what = "linux.resources.memory.swap"
        if not os.path.exists(d + "/memory.memsw.limit_in_bytes"):
            raise CgroupError(f"{what}: {d}/memory.memsw.limit_in_bytes is missing: the kernel does "
                              "no swap accounting (boot with swapaccount=1)", errno.ENOENT)
        write_file(d, "memory.memsw.limit_in_bytes", str(swap), what)

    def _apply_cpu(self, cpu: CPU) -> None:
        shares = cpu.shares or 0
        quota = cpu.quota or 0
        period = cpu.period or 0
        burst = cpu.burst
        idle = cpu.idle
        if not (shares or quota or period or burst is not None or idle is not None
                or cpu.realtime_runtime or cpu.realtime_period):
            return
        d = self._need("cpu", "linux.resources.cpu")
        self._apply_rt(d, cpu)
        if shares:
            what = "linux.resources.cpu.shares"
            write_file(d, "cpu.shares", str(shares), what)
            got = int(read_value(d, "cpu.shares", what))
            if got != shares:  # the kernel clamps to [2, 262144] silently
                bound = "maximum" if shares > got else "minimum"
                raise CgroupError(f"{what}: the {bound} allowed cpu-shares is {got}")
        # The kernel checks quota, period and burst against each other at every write;
        # a write refused with EINVAL is retried after the quota is in place (runc).
        pending: list[tuple[str, str, str]] = []
        if period:
            self._cfs(d, "cpu.cfs_period_us", str(period), "linux.resources.cpu.period", bool(quota), pending)
        if burst is not None:
            if os.path.exists(d + "/cpu.cfs_burst_us"):
                self._cfs(d, "cpu.cfs_burst_us", str(burst), "linux.resources.cpu.burst", bool(quota), pending)
            elif burst:
                raise CgroupError(f"linux.resources.cpu.burst: {d}/cpu.cfs_burst_us is missing "
                                  "(kernel without CFS burst support)", errno.ENOENT)
        if quota:
            write_file(d, "cpu.cfs_quota_us", str(quota), "linux.resources.cpu.quota")
            for name, value, what in pending:
                write_file(d, name, value, what)
        if idle is not None:
            write_file(d, "cpu.idle", str(idle), "linux.resources.cpu.idle")

    @staticmethod
    def _apply_rt(d: str, cpu: CPU) -> None:
        """cpu.rt_period_us, then cpu.rt_runtime_us (runc's SetRtSched): a period the kernel
        refuses (EINVAL) while a runtime is also given is written again after the runtime."""
        runtime, period = cpu.realtime_runtime or 0, cpu.realtime_period or 0
        later = False
        if period:
            try:
                write_file(d, "cpu.rt_period_us", str(period), "linux.resources.cpu.realtimePeriod")
            except CgroupError as e:
                if e.errno != errno.EINVAL or not runtime:
                    raise
                later = True
        if runtime:
            try:
                write_file(d, "cpu.rt_runtime_us", str(runtime), "linux.resources.cpu.realtimeRuntime")
            except CgroupError as e:
                if e.errno != errno.EINVAL:
                    raise
                raise CgroupError(f"{e} (the runtime must fit in the period, and every parent "
                                  "cgroup's cpu.rt_runtime_us must leave room for it: parents "
                                  "start with none)", e.errno) from None
            if later:
                write_file(d, "cpu.rt_period_us", str(period), "linux.resources.cpu.realtimePeriod")

    @staticmethod
    def _cfs(d: str, name: str, value: str, what: str, retry: bool,
             pending: list[tuple[str, str, str]]) -> None:
        try:
            write_file(d, name, value, what)
        except CgroupError as e:
            if not (retry and e.errno == errno.EINVAL):
                raise
            pending.append((name, value, what))

    # ------------------------------------------------------------------ processes

    def add(self, pid: int, sub: dict[str, str] | None = None) -> None:
        if not sub:
            for d in self._dirs():
                try:
                    join_cgroup(d, pid)
                except CgroupError as e:
                    if not self.rootless:
                        raise
                    if self._creating:  # create: runc's Apply, as for mkdir above
                        if not (self.may_skip and e.errno in IGNORABLE):
                            raise
                        self._skip(d, e)
                    # exec: runc ignores every join error of a rootless container
            return
        unknown = sorted(set(sub) - set(self.paths) - {""})
        if unknown:
            raise CgroupError(f"--cgroup: the container has no {', '.join(unknown)} cgroup")
        joined: list[str] = []
        for base in self._dirs():
            names = [k for k, v in self.paths.items() if v == base]  # e.g. cpu and cpuacct share one
            subs = {sub[k] for k in names if k in sub} or {sub.get("", "")}
            if len(subs) > 1:
                raise CgroupError(f"--cgroup: {' and '.join(names)} share {base}: give them one sub-cgroup")
            d = sub_dir(base, subs.pop())
            if d not in joined:
                join_cgroup(d, pid)
                joined.append(d)

    def pids(self) -> list[int]:
        found: set[int] = set()
        for d in self._dirs():
            found.update(tree_pids(d))
        return sorted(found)

    def kill_all(self, signum: int) -> None:
        """Freeze, signal every process, thaw (runc's signalAllProcesses).

        Freezing stops forks racing the signal.  A cgroup that was already frozen
        (``pause``) stays frozen, except after SIGKILL: frozen v1 tasks die only once
        thawed, and ``delete --force`` must be able to remove them.
        """
        freezer = self.paths.get("freezer", "")
        before = ""
        if freezer:
            try:
                before = read_file(freezer + "/freezer.state").strip()
            except OSError:
                freezer = ""  # no such cgroup (any more): just signal
        if freezer and before != "FROZEN":
            self._freeze(freezer, "FROZEN")
        try:
            signal_pids(self.pids(), signum)
        finally:
            if freezer and (before != "FROZEN" or signum == 9):
                self._freeze(freezer, "THAWED")

    @staticmethod
    def _freeze(d: str, state: str) -> bool:
        """Write freezer.state until the kernel reports ``state`` (up to ~1 s)."""
        import time

        path = d + "/freezer.state"
        delay = 0.001
        for _ in range(12):
            try:
                write_raw(path, state)
                if read_file(path).strip() == state:
                    return True
            except OSError:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        return False

    # ------------------------------------------------------------------ pause / resume

    def freeze(self) -> None:
        """FROZEN, written again until the kernel reports it (runc's FreezerGroup.Set).

        A v1 cgroup can stay FREEZING while processes keep appearing in it (forks, joins):
        write again, thawing now and then to let it settle, for up to 10 s.  On failure
        the cgroup is thawed back: a half-frozen container is the worst outcome."""
        d = self._need("freezer", "pause")
        path = d + "/freezer.state"
        try:
            self._freeze_until_frozen(path)
        except BaseException:
            try:
                write_raw(path, "THAWED")
            except OSError:
                pass
            raise

    @staticmethod
    def _freeze_until_frozen(path: str) -> None:
        import time

        deadline = time.monotonic() + 10.0
        tries = 0
        while True:
            tries += 1
            try:
                if tries % 50 == 0:
                    write_raw(path, "THAWED")
                    time.sleep(0.01)
                write_raw(path, "FROZEN")
                state = read_file(path).strip()
            except OSError as e:
                raise CgroupError(f"cannot freeze {path}: {e.strerror}", e.errno) from None
            if state == "FROZEN":
                return
            if state != "FREEZING":
                raise CgroupError(f"unexpected state {state} of {path} while freezing")
            if time.monotonic() > deadline:
                raise CgroupError(f"unable to freeze: {path} still FREEZING after 10 s")
            if tries > 25:
                time.sleep(min(0.001 * (tries - 25), 0.05))

    def thaw(self) -> None:
        d = self._need("freezer", "resume")
        write_file(d, "freezer.state", "THAWED", "resume")

    def frozen(self) -> bool:
        """FROZEN by itself (freezer.self_freezing), not by an ancestor; FREEZING is waited out
        (up to ~0.5 s), as runc's GetState does."""
        d = self.paths.get("freezer", "")
        if not d:
            return False
        for _ in range(500):
            try:
                state = read_file(d + "/freezer.state").strip()
            except OSError:
                return False  # no such cgroup
            if state == "THAWED":
                return False
            if state == "FROZEN":
                try:
                    return read_file(d + "/freezer.self_freezing").strip() == "1"
                except OSError:
                    return True  # a kernel without self_freezing
            import time

            time.sleep(0.001)
        return False

    def destroy(self) -> None:
        failures = []
        for d in reversed(self._dirs()):
            try:
                (remove_below if d in self.kept else remove_tree)(d)
            except CgroupError as e:
                failures.append(str(e))
        if failures:
            raise CgroupError("; ".join(failures))

    # ------------------------------------------------------------------ statistics

    def stats(self) -> dict:
        from .stats import v1_stats

        return v1_stats(self.paths)

    def oom_kills(self) -> int | None:
        from .stats import v1_oom_kills

        return v1_oom_kills(self.paths)
