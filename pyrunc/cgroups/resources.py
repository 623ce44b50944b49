"""linux.resources -> cgroup file values: the conversions and checks both layouts share.

Pure functions (no file access), unit-tested without root.  Zero means "unset"
wherever runc treats it so: cpu shares/quota/period, memory limit/reservation/swap.
"""

from __future__ import annotations

from .base import CgroupError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (hot path)
if TYPE_CHECKING:
    from ..config import DeviceRule, Resources

NOT_YET = "not supported by pyrunc yet"


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


def check_supported(r: Resources, layout: str, skip_devices: bool = False) -> None:
    """Raise CgroupError listing every part of ``r`` (a Resources) this layout cannot apply.

    Called before any file is written, so a refused config leaves no half-set cgroup.
    """
    problems: list[str] = []
    raw = (("blockIO", r.block_io), ("hugepageLimits", r.hugepage_limits),
           ("network", r.network), ("rdma", r.rdma), ("unified", r.unified))
    for name, value in raw:
        if _has_value(value):
            problems.append(f"linux.resources.{name}: {NOT_YET}")
    mem = r.memory
    if mem is not None:
        if mem.kernel:
            problems.append(f"linux.resources.memory.kernel: {NOT_YET}")
        if mem.kernel_tcp:
            problems.append(f"linux.resources.memory.kernelTCP: {NOT_YET}")
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
        if cpu.realtime_runtime:
            problems.append(f"linux.resources.cpu.realtimeRuntime: {NOT_YET}")
        if cpu.realtime_period:
            problems.append(f"linux.resources.cpu.realtimePeriod: {NOT_YET}")
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
