"""linux.resources -> cgroup file values: the conversions and checks both layouts share.

Pure functions (no file access), unit-tested without root.  Zero means "unset"
wherever runc treats it so: cpu shares/quota/period, memory limit/reservation/swap.
"""

from __future__ import annotations

from .base import CgroupError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (hot path)
if TYPE_CHECKING:
    from ..config import DeviceRule, Resources


# ---------------------------------------------------------------------------- values


def shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares [2..262144] -> cgroup v2 cpu.weight [1..10000]; 0 stays 0 (unset).

    The quadratic fit of current runc (opencontainers/cgroups utils.go
    ConvertCPUSharesToCgroupV2Value, since cgroups v0.0.2 / runc 1.3.2): it maps
    2 -> 1, 1024 -> 100 (both defaults) and 262144 -> 10000.  The older linear
    formula ``1 + ((shares - 2) * 9999) // 262142`` sent the default 1024 to 39.
    """
    import math

    if shares == 0:
        return 0
    if shares <= 2:
        return 1
    if shares >= 262144:
        return 10000
    log = math.log2(shares)
    exponent = (log * log + 125 * log) / 612.0 - 7.0 / 34.0
    return math.ceil(10 ** exponent)


def swap_to_v2(swap: int, limit: int) -> int:
    """OCI memory.swap (memory+swap, v1 memsw semantics) -> v2 memory.swap.max (swap alone).

    -1 means unlimited, 0 unset; runc's ConvertMemorySwapToCgroupV2Value, rule by rule.
    """
    if limit == -1 and swap == 0:
        return -1  # unlimited memory and no word on swap: unlimited swap too (as v1 does)
    if swap in (-1, 0):
        return swap
    if limit == -1:
        return swap
    if limit == 0:
        raise CgroupError("linux.resources.memory.swap: cannot set a swap limit without a memory limit")
    if limit < 0:
        raise CgroupError(f"linux.resources.memory.limit: invalid value {limit}")
    if swap < limit:
        raise CgroupError(f"linux.resources.memory.swap: memory+swap limit {swap} is smaller "
                          f"than the memory limit {limit}")
    return swap - limit


def v2_number(value: int) -> str:
    """A v2 .max/.low/.high value: -1 -> "max", else the number."""
    return "max" if value == -1 else str(value)


def pids_max(limit: int) -> str:
    """pids.max from linux.resources.pids.limit (runtime-spec v1.3.0).

    Negative (the spec says -1) means no limit; 0 is a real limit of 0 tasks, which the
    spec asks runtimes to honour.  (runc writes "1" for 0 to match systemd's TasksMax.)
    """
    if limit < 0:
        return "max"
    return str(limit)


def cpu_max(quota: int, period: int, current: str = "") -> str:
    """cgroup v2 cpu.max "QUOTA PERIOD" when quota or period is set (not 0).

    quota < 0 is "max"; period 0 keeps the current period (default 100000).  Unlike
    runc, a period alone keeps the current quota instead of resetting it to "max".
    """
    cur_quota, _, cur_period = current.partition(" ")
    if quota > 0:
        q = str(quota)
    elif quota < 0:
        q = "max"
    else:
        q = cur_quota or "max"
    p = str(period) if period else (cur_period or "100000")
    return f"{q} {p}"


# ---------------------------------------------------------------------------- devices

_DEVICE_TYPES = ("a", "b", "c")


def _perms(access: str, where: str) -> str:
    if not access or any(c not in "rwm" for c in access):
        raise CgroupError(f"{where}.access: {access!r} must be a non-empty subset of 'rwm'")
    return "".join(c for c in "rwm" if c in access)


class DeviceState:
    """The kernel's v1 device-cgroup model: a default (allow or deny) plus exceptions.

    Exceptions are keyed by (type, major, minor), -1 being the wildcard, with access
    merged per key, as the kernel's devices.allow/deny handling does.  In allow-by-
    default mode the exceptions are denials; in deny-by-default mode, allowances.
    """

    __slots__ = ("default_allow", "exceptions")

    def __init__(self, default_allow: bool = True,
                 exceptions: dict[tuple[str, int, int], str] | None = None) -> None:
        self.default_allow = default_allow
        self.exceptions: dict[tuple[str, int, int], str] = dict(exceptions or {})

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, DeviceState) and self.default_allow == other.default_allow
                and self.exceptions == other.exceptions)

    def __repr__(self) -> str:
        return f"DeviceState(default_allow={self.default_allow}, exceptions={self.exceptions})"

    def apply(self, allow: bool, dtype: str, major: int, minor: int, access: str) -> None:
        if dtype == "a":  # every device: resets the cgroup, whatever major/minor/access say
            self.default_allow = allow
            self.exceptions = {}
            return
        key = (dtype, major, minor)
        old = self.exceptions.get(key, "")
        if allow == self.default_allow:  # drop access from the exception
            new = "".join(c for c in old if c not in access)
        else:  # add access to the exception
            new = "".join(c for c in "rwm" if c in old or c in access)
        if new:
            self.exceptions[key] = new
        else:
            self.exceptions.pop(key, None)

    def is_allow_all(self) -> bool:
        return self.default_allow and not self.exceptions


def device_target(rules: list[DeviceRule]) -> DeviceState:
    """The state ``linux.resources.devices`` asks for, from a fresh (allow-all) cgroup.

    Rules apply in the listed order, as the spec says.  runc starts from deny-all
    instead; the two agree for every list that begins with an "a" rule (what engines
    send: deny all, then the allowed devices).
    """
    state = DeviceState()
    for i, rule in enumerate(rules):
        where = f"linux.resources.devices[{i}]"
        dtype = rule.type or "a"
        if dtype not in _DEVICE_TYPES:
            raise CgroupError(f"{where}.type: {dtype!r} is not a cgroup device type (a, b or c)")
        major = -1 if rule.major is None else rule.major
        minor = -1 if rule.minor is None else rule.minor
        state.apply(bool(rule.allow), dtype, major, minor, _perms(rule.access or "rwm", where))
    return state


def parse_devices_list(text: str) -> DeviceState | None:
    """v1 devices.list -> DeviceState; None for allow-by-default ("a *:* rwm"), whose
    deny exceptions the kernel does not show."""
    state = DeviceState(default_allow=False)
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        dtype, numbers, access = parts
        if dtype == "a":
            return None
        major, _, minor = numbers.partition(":")
        key = (dtype, -1 if major == "*" else int(major), -1 if minor == "*" else int(minor))
        merged = state.exceptions.get(key, "") + access
        state.exceptions[key] = "".join(c for c in "rwm" if c in merged)
    return state


def device_line(dtype: str, major: int, minor: int, access: str) -> str:
    return f"{dtype} {'*' if major < 0 else major}:{'*' if minor < 0 else minor} {access}"


def device_transition(current: DeviceState | None, target: DeviceState) -> list[tuple[str, str]]:
    """The (file, line) writes taking a v1 devices cgroup from ``current`` to ``target``.

    Like runc's emulator Transition: a disruptive "a" rule only when the default must
    change or the current deny exceptions are unknowable; otherwise only the
    differences, so a running container never sees its devices vanish for a moment.
    """
    writes: list[tuple[str, str]] = []
    old: dict[tuple[str, int, int], str] = {}
    if current is None or current.default_allow != target.default_allow:
        writes.append(("devices.allow" if target.default_allow else "devices.deny", "a *:* rwm"))
    else:
        old = current.exceptions
    # an exception is an allowance in deny-by-default mode and a denial otherwise
    add_file = "devices.deny" if target.default_allow else "devices.allow"
    drop_file = "devices.allow" if target.default_allow else "devices.deny"
    for key in sorted(old):
        dropped = "".join(c for c in old[key] if c not in target.exceptions.get(key, ""))
        if dropped:
            writes.append((drop_file, device_line(*key, dropped)))
    for key in sorted(target.exceptions):
        gained = "".join(c for c in target.exceptions[key] if c not in old.get(key, ""))
        if gained:
            writes.append((add_file, device_line(*key, gained)))
    return writes


# ---------------------------------------------------------------------------- checks


def _has_value(value: object) -> bool:
    """Is anything set in a raw resources group?  None, 0, "", False and empties are unset
    (runc's zero-means-unset; engines send e.g. ``"blockIO": {"weight": 0}``)."""
    if isinstance(value, dict):
        return any(_has_value(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_value(v) for v in value)
    return bool(value)


def _missing(controller: str) -> str:
    return (f"the {controller} controller is not available on this host (not mounted, or not "
            "enabled for the container's cgroup)")


def _is_uint(value: object, bits: int = 64) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < (1 << bits)


# blockIO throttle lists: (JSON key, v1 blkio.throttle.* file, v2 io.max key)
BLKIO_THROTTLE = (("throttleReadBpsDevice", "read_bps_device", "rbps"),
                  ("throttleWriteBpsDevice", "write_bps_device", "wbps"),
                  ("throttleReadIOPSDevice", "read_iops_device", "riops"),
                  ("throttleWriteIOPSDevice", "write_iops_device", "wiops"))


def _device(entry: object, where: str, problems: list[str]) -> str | None:
    """"MAJ:MIN" of a blockIO device entry, or None (with a problem) when malformed."""
    if not isinstance(entry, dict):
        problems.append(f"{where}: must be an object with major and minor")
        return None
    major, minor = entry.get("major"), entry.get("minor")
    if not _is_uint(major, 32) or not _is_uint(minor, 32):
        problems.append(f"{where}: major and minor must be device numbers (got {major!r}:{minor!r})")
        return None
    return f"{major}:{minor}"


def blkio_to_io_weight(weight: int) -> int:
    """blkio weight [10..1000] -> v2 io.weight [1..10000] (runc's ConvertBlkIOToIOWeightValue)."""
    if weight == 0:
        return 0
    return 1 + (weight - 10) * 9999 // 990


def _check_block_io(bio: object, layout: str, controllers: frozenset[str] | set[str] | None,
                    problems: list[str]) -> None:
    where = "linux.resources.blockIO"
    if not _has_value(bio):
        return
    if not isinstance(bio, dict):
        problems.append(f"{where}: must be an object")
        return
    ctl = "io" if layout == "v2" else "blkio"
    if controllers is not None and ctl not in controllers:
        problems.append(f"{where}: {_missing(ctl)}")
        return
    for key in ("weight", "leafWeight"):
        value = bio.get(key)
        if value and (not _is_uint(value, 16) or not 10 <= value <= 1000):
            problems.append(f"{where}.{key}: {value!r} is outside the kernel's range [10, 1000]")
        elif value and key == "leafWeight" and layout == "v2":
            problems.append(f"{where}.leafWeight: cgroup v2 has no leaf weights; remove it from the config")
    for i, wd in enumerate(bio.get("weightDevice") or ()):
        w = f"{where}.weightDevice[{i}]"
        if _device(wd, w, problems) is None:
            continue
        for key in ("weight", "leafWeight"):
            value = wd.get(key)
            if value and (not _is_uint(value, 16) or not 10 <= value <= 1000):
                problems.append(f"{w}.{key}: {value!r} is outside the kernel's range [10, 1000]")
            elif value and key == "leafWeight" and layout == "v2":
                problems.append(f"{w}.leafWeight: cgroup v2 has no leaf weights; remove it from the config")
    for key, _, _ in BLKIO_THROTTLE:
        for i, td in enumerate(bio.get(key) or ()):
            w = f"{where}.{key}[{i}]"
            if _device(td, w, problems) is not None and not _is_uint(td.get("rate")):
                problems.append(f"{w}.rate: {td.get('rate')!r} is not a rate (an unsigned integer)")


def blkio_v1_writes(bio: dict, prefix: str) -> list[tuple[str, str, str]]:
    """(file, value, JSON path) writes for v1 blkio, in runc's order; ``prefix`` is "blkio"
    (CFQ's blkio.weight) or "blkio.bfq" (BFQ's, when blkio.weight does not exist)."""
    where = "linux.resources.blockIO"
    out: list[tuple[str, str, str]] = []
    if bio.get("weight"):
        out.append((f"{prefix}.weight", str(bio["weight"]), f"{where}.weight"))
    if bio.get("leafWeight"):
        out.append(("blkio.leaf_weight", str(bio["leafWeight"]), f"{where}.leafWeight"))
    for i, wd in enumerate(bio.get("weightDevice") or ()):
        dev = f"{wd['major']}:{wd['minor']}"
        if wd.get("weight"):
            out.append((f"{prefix}.weight_device", f"{dev} {wd['weight']}", f"{where}.weightDevice[{i}].weight"))
        if wd.get("leafWeight"):
            out.append(("blkio.leaf_weight_device", f"{dev} {wd['leafWeight']}",
                        f"{where}.weightDevice[{i}].leafWeight"))
    for key, name, _ in BLKIO_THROTTLE:
        for i, td in enumerate(bio.get(key) or ()):
            out.append((f"blkio.throttle.{name}", f"{td['major']}:{td['minor']} {td['rate']}", f"{where}.{key}[{i}]"))
    return out


def io_v2_writes(bio: dict, bfq: bool) -> list[tuple[str, str, str]]:
    """(file, value, JSON path) writes for v2 io, in runc's order: the weight to io.bfq.weight
    when the BFQ file exists (``bfq``), else converted to io.weight; per-device weights only
    to io.bfq.weight ("MAJ:MIN W"); each throttle as its own io.max line "MAJ:MIN key=N"."""
    where = "linux.resources.blockIO"
    out: list[tuple[str, str, str]] = []
    weight = bio.get("weight") or 0
    if weight:
        if bfq:
            out.append(("io.bfq.weight", str(weight), f"{where}.weight"))
        else:
            out.append(("io.weight", str(blkio_to_io_weight(weight)), f"{where}.weight"))
    for i, wd in enumerate(bio.get("weightDevice") or ()):
        if wd.get("weight"):
            out.append(("io.bfq.weight", f"{wd['major']}:{wd['minor']} {wd['weight']}",
                        f"{where}.weightDevice[{i}].weight"))
    for key, _, name in BLKIO_THROTTLE:
        for i, td in enumerate(bio.get(key) or ()):
            out.append(("io.max", f"{td['major']}:{td['minor']} {name}={td['rate']}", f"{where}.{key}[{i}]"))
    return out


def _check_hugetlb(limits: list[dict], controllers: frozenset[str] | set[str] | None,
                   problems: list[str]) -> None:
    import re

    for i, entry in enumerate(limits or ()):
        where = f"linux.resources.hugepageLimits[{i}]"
        if controllers is not None and "hugetlb" not in controllers:
            problems.append(f"{where}: {_missing('hugetlb')}")
            continue
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be an object with pageSize and limit")
            continue
        size = entry.get("pageSize")
        if not isinstance(size, str) or not re.fullmatch(r"[1-9][0-9]*[KMGTP]B", size):
            problems.append(f"{where}.pageSize: {size!r} is not a huge page size like \"2MB\" or \"1GB\"")
        if not _is_uint(entry.get("limit")):
            problems.append(f"{where}.limit: {entry.get('limit')!r} is not a byte count")


def _check_network(net: object, layout: str, controllers: frozenset[str] | set[str] | None,
                   problems: list[str]) -> None:
    where = "linux.resources.network"
    if not _has_value(net):
        return
    if not isinstance(net, dict):
        problems.append(f"{where}: must be an object")
        return
    if layout == "v2":
        problems.append(f"{where}: cgroup v2 has no net_cls/net_prio controllers (runc ignores "
                        "this there); remove it from the config")
        return
    class_id = net.get("classID")
    if class_id:
        if not _is_uint(class_id, 32):
            problems.append(f"{where}.classID: {class_id!r} is not a 32-bit class id")
        elif controllers is not None and "net_cls" not in controllers:
            problems.append(f"{where}.classID: {_missing('net_cls')}")
    for i, prio in enumerate(net.get("priorities") or ()):
        w = f"{where}.priorities[{i}]"
        if controllers is not None and "net_prio" not in controllers:
            problems.append(f"{w}: {_missing('net_prio')}")
            break
        if not isinstance(prio, dict) or not isinstance(prio.get("name"), str) or not prio.get("name") \
                or not _is_uint(prio.get("priority"), 32):
            problems.append(f"{w}: must have an interface name and a priority (unsigned)")


def net_writes(net: dict) -> list[tuple[str, str, str, str]]:
    """(controller, file, value, JSON path) for v1 net_cls/net_prio."""
    where = "linux.resources.network"
    out = []
    if net.get("classID"):
        out.append(("net_cls", "net_cls.classid", str(net["classID"]), f"{where}.classID"))
    for i, prio in enumerate(net.get("priorities") or ()):
        out.append(("net_prio", "net_prio.ifpriomap", f"{prio['name']} {prio['priority']}",
                    f"{where}.priorities[{i}]"))
    return out


def _check_rdma(rdma: object, controllers: frozenset[str] | set[str] | None, problems: list[str]) -> None:
    where = "linux.resources.rdma"
    if not rdma:
        return
    if not isinstance(rdma, dict):
        problems.append(f"{where}: must be an object keyed by device name")
        return
    for dev, limits in rdma.items():
        w = f"{where}[{dev!r}]"
        if not isinstance(limits, dict):
            problems.append(f"{w}: must be an object with hcaHandles and/or hcaObjects")
            continue
        if not dev or any(c.isspace() for c in dev):
            problems.append(f"{w}: not an RDMA device name")
        for key in ("hcaHandles", "hcaObjects"):
            value = limits.get(key)
            if value is not None and not _is_uint(value, 32):
                problems.append(f"{w}.{key}: {value!r} is not a count")
        if controllers is not None and "rdma" not in controllers and rdma_lines({dev: limits}):
            problems.append(f"{w}: {_missing('rdma')}")


def rdma_lines(rdma: dict) -> list[tuple[str, str]]:
    """(rdma.max line, JSON path) per device with a limit: "DEV hca_handle=N hca_object=M"
    (runc's createCmdString; an absent count is left as it is)."""
    out = []
    for dev in sorted(rdma or {}):
        limits = rdma[dev]
        line = dev
        if limits.get("hcaHandles") is not None:
            line += f" hca_handle={limits['hcaHandles']}"
        if limits.get("hcaObjects") is not None:
            line += f" hca_object={limits['hcaObjects']}"
        if line != dev:
            out.append((line, f"linux.resources.rdma[{dev!r}]"))
    return out


def _check_unified(unified: dict[str, str], layout: str, controllers: frozenset[str] | set[str] | None,
                   problems: list[str]) -> None:
    if not unified:
        return
    if layout != "v2":
        problems.append("linux.resources.unified: invalid configuration: cannot use unified on cgroup v1 "
                        f"(this host's cgroup layout is {layout}; runc refuses it too)")
        return
    for key, value in unified.items():
        where = f"linux.resources.unified[{key!r}]"
        if not key or "/" in key or key in (".", "..") or "\0" in key:
            problems.append(f"{where}: must be a file name of the cgroup (no slashes)")
        elif "." not in key.strip("."):
            problems.append(f"{where}: must be in the form CONTROLLER.PARAMETER")
        elif not isinstance(value, str):
            problems.append(f"{where}: the value must be a string")


def ignored_warnings(r: Resources) -> list[str]:
    """What runc accepts and ignores with a warning: kernel memory limits (kmem is deprecated,
    cgroup v2 has none, and runc dropped them); the caller logs these, nothing is written."""
    mem = r.memory
    if mem is not None and (mem.kernel or mem.kernel_tcp):
        return ["linux.resources.memory.kernel/kernelTCP: kernel memory settings are ignored "
                "(deprecated by the kernel; runc ignores them too)"]
    return []


def check_supported(r: Resources, layout: str, skip_devices: bool = False,
                    controllers: frozenset[str] | set[str] | None = None) -> None:
    """Raise CgroupError listing every part of ``r`` (a Resources) this layout cannot apply.

    Called before any file is written, so a refused config leaves no half-set cgroup.
    ``controllers`` (when known) are the controllers the container's cgroup has: v1 the
    mounted hierarchies, v2 its cgroup.controllers; a setting for a missing one is refused.
    """
    problems: list[str] = []
    _check_block_io(r.block_io, layout, controllers, problems)
    _check_hugetlb(r.hugepage_limits, controllers, problems)
    _check_network(r.network, layout, controllers, problems)
    _check_rdma(r.rdma, controllers, problems)
    _check_unified(r.unified, layout, controllers, problems)
    mem = r.memory
    if mem is not None:
        if mem.use_hierarchy is False:
            problems.append("linux.resources.memory.useHierarchy: false is not supported "
                            "(the kernel always accounts memory hierarchically)")
        if mem.swappiness is not None:
            if layout == "v2":
                problems.append("linux.resources.memory.swappiness: cgroup v2 has no per-cgroup "
                                "swappiness; remove it from the config")
            elif not 0 <= mem.swappiness <= 100 and mem.swappiness != -1:
                problems.append(f"linux.resources.memory.swappiness: invalid value {mem.swappiness} "
                                "(valid range is 0-100)")
        if mem.disable_oom_killer and layout == "v2":
            problems.append("linux.resources.memory.disableOOMKiller: cgroup v2 cannot disable "
                            "the OOM killer")
        if layout == "v2":
            try:
                swap_to_v2(mem.swap or 0, mem.limit or 0)
            except CgroupError as e:
                problems.append(str(e))
    cpu = r.cpu
    if cpu is not None:
        for key, value in (("realtimeRuntime", cpu.realtime_runtime), ("realtimePeriod", cpu.realtime_period)):
            if not value:
                continue
            where = f"linux.resources.cpu.{key}"
            if layout == "v2":
                problems.append(f"{where}: cgroup v2 has no realtime group scheduling "
                                "(cpu.rt_* files); remove it from the config")
            elif controllers is not None and "cpu" not in controllers:
                problems.append(f"{where}: {_missing('cpu')}")
            elif not isinstance(value, int) or isinstance(value, bool) or \
                    (key == "realtimePeriod" and value < 0):
                problems.append(f"{where}: invalid value {value!r}")
        if cpu.burst is not None and cpu.quota and 0 < cpu.quota < cpu.burst:
            problems.append(f"linux.resources.cpu.burst: {cpu.burst} is larger than the quota {cpu.quota}")
    devices = r.devices
    if devices and not skip_devices:
        try:
            target = device_target(devices)
        except CgroupError as e:
            problems.append(str(e))
        else:
            if layout == "v2" and not target.is_allow_all():
                problems.append("linux.resources.devices: the cgroup v2 device controller (eBPF) "
                                "is not supported by pyrunc yet")
    if problems:
        raise CgroupError("\n".join(problems))
