"""``update``: runc's flags or a LinuxResources document -> the container's new linux.resources.

Like runc's update.go: ``--resources FILE`` (podman) or ``--resources -`` (containerd, on
stdin) gives a LinuxResources JSON document and then every other flag is ignored;
otherwise the single-value flags build one.  The result is merged into the resources
persisted at create time, field by field as runc merges them: a zero (or absent) value
leaves the current setting alone, since engines send ``"shares": 0`` for "unchanged".
``Container.update`` applies the merged resources through the cgroup manager and persists them.

Only imported by ``update`` (not on the other commands' path).
"""

from __future__ import annotations

from . import jsonio
from .errors import NotSupportedError, UsageError

# Flags in runc's groups: how each one's value is parsed and where it goes in LinuxResources.
UINT_FLAGS = (("cpu-burst", "burst"), ("cpu-period", "period"), ("cpu-rt-period", "realtimePeriod"),
              ("cpu-share", "shares"))
INT_FLAGS = (("cpu-quota", "quota"), ("cpu-rt-runtime", "realtimeRuntime"))
MEMORY_FLAGS = (("memory", "limit"), ("memory-swap", "swap"), ("memory-reservation", "reservation"))
FLAGS = ("resources", "blkio-weight", "cpu-period", "cpu-quota", "cpu-burst", "cpu-share", "cpu-rt-period",
         "cpu-rt-runtime", "cpuset-cpus", "cpuset-mems", "kernel-memory", "kernel-memory-tcp", "memory",
         "cpu-idle", "memory-reservation", "memory-swap", "pids-limit", "l3-cache-schema", "mem-bw-schema")

_INT64 = (-(1 << 63), (1 << 63) - 1)
_UINT64 = (0, (1 << 64) - 1)
_BINARY = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def _go_int(flag: str, value: str, bounds: tuple[int, int], func: str) -> int:
    """strconv.ParseInt / ParseUint (base 10), with Go's error words."""
    digits = value[1:] if value[:1] in ("+", "-") and func == "ParseInt" else value
    if not digits or not (digits.isascii() and digits.isdigit()):
        raise UsageError(f'invalid value for {flag}: strconv.{func}: parsing "{value}": invalid syntax')
    n = int(value)
    if not bounds[0] <= n <= bounds[1]:
        raise UsageError(f'invalid value for {flag}: strconv.{func}: parsing "{value}": value out of range')
    return n


def _int_flag(flag: str, value: str) -> int:
    """urfave/cli's IntFlag: Go's strconv.ParseInt(value, 0, 64) (0x, 0o, 0b and 0 prefixes)."""
    body = value.lstrip("+-")
    try:
        if value != value.strip() or value[:1] in "+-" and body[:1] in "+-":
            raise ValueError
        if len(body) > 1 and body[0] == "0" and body.isdigit():
            n = int(value, 8)  # Go's leading-zero octal
        else:
            n = int(value, 0)
    except ValueError:
        raise UsageError(f'invalid value "{value}" for flag -{flag}: parse error') from None
    if not _INT64[0] <= n <= _INT64[1]:
        raise UsageError(f'invalid value "{value}" for flag -{flag}: value out of range')
    return n


def ram_in_bytes(size: str) -> int:
    """docker/go-units RAMInBytes: "512m", "1.5g", "64MiB", "1024 kb", "100" (bytes); binary units."""
    sep = max(size.rfind(c) for c in "0123456789. ")
    if sep == -1:
        raise ValueError(f"invalid size: '{size}'")
    if size[sep] != " ":
        num, sfx = size[:sep + 1], size[sep + 1:]
    else:
        num, sfx = size[:sep], size[sep + 1:]
    try:
        value = float(num)
    except ValueError:
        raise ValueError(f'strconv.ParseFloat: parsing "{num}": invalid syntax') from None
    if value != value or value in (float("inf"), float("-inf")) or "x" in num.lower():
        raise ValueError(f'strconv.ParseFloat: parsing "{num}": invalid syntax')
    if value < 0:
        raise ValueError(f"invalid size: '{size}'")
    if not sfx:
        return int(value)
    low = sfx.lower()
    if len(sfx) > 3 or (low[0] != "b" and low[0] not in _BINARY):
        raise ValueError(f"invalid suffix: '{sfx}'")
    if low[0] == "b":
        if len(low) > 1:
            raise ValueError(f"invalid suffix: '{sfx}'")
        return int(value)
    if (len(low) == 2 and low[1] != "b") or (len(low) == 3 and low[1:] != "ib"):
        raise ValueError(f"invalid suffix: '{sfx}'")
    return int(value * _BINARY[low[0]])


def resources_from_flags(flags: dict[str, object], warn: object = None) -> dict:
    """runc update's single-value flags -> a LinuxResources document (only what was given)."""
    cpu: dict[str, object] = {}
    mem: dict[str, object] = {}
    out: dict[str, object] = {}

    def text(name: str) -> str:
        return str(flags.get(name) or "")

    if text("blkio-weight"):
        weight = _int_flag("blkio-weight", text("blkio-weight"))
        if weight:
            out["blockIO"] = {"weight": weight & 0xFFFF}  # runc: uint16(val)
    for name, key in (("cpuset-cpus", "cpus"), ("cpuset-mems", "mems")):
        if text(name):
            cpu[key] = text(name)
    if text("cpu-idle"):
        cpu["idle"] = _go_int("cpu-idle", text("cpu-idle"), _INT64, "ParseInt")
    for name, key in UINT_FLAGS:
        if text(name):
            cpu[key] = _go_int(name, text(name), _UINT64, "ParseUint")
    for name, key in INT_FLAGS:
        if text(name):
            cpu[key] = _go_int(name, text(name), _INT64, "ParseInt")
    for name, key in MEMORY_FLAGS:
        value = text(name)
        if value:
            try:
                mem[key] = -1 if value == "-1" else ram_in_bytes(value)
            except ValueError as e:
                raise UsageError(f"invalid value for {name}: {e}") from None
    for name in ("kernel-memory", "kernel-memory-tcp"):
        if text(name) and callable(warn):
            warn(f"Setting --{name} is ignored and will be removed")
    if text("pids-limit"):
        out["pids"] = {"limit": _int_flag("pids-limit", text("pids-limit"))}
    if cpu:
        out["cpu"] = cpu
    if mem:
        out["memory"] = mem
    return out


def check_intel_rdt(flags: dict[str, object]) -> None:
    if flags.get("l3-cache-schema"):
        raise NotSupportedError("Intel RDT/CAT: l3 cache schema is not enabled (Intel RDT is not "
                                "supported by pyrunc yet)")
    if flags.get("mem-bw-schema"):
        raise NotSupportedError("Intel RDT/MBA: memory bandwidth schema is not enabled (Intel RDT is not "
                                "supported by pyrunc yet)")


def load_resources(source: str, data: bytes) -> dict:
    """Parse and check a LinuxResources document (``--resources``); errors name its JSON paths."""
    from .schema import validate_resources

    where = "--resources " + ("(stdin)" if source == "-" else source)
    try:
        doc = jsonio.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"{where}: invalid JSON: {e}") from None
    problems = validate_resources(doc)
    if problems:
        raise UsageError("\n".join(f"{where}: {p}" for p in problems))
    return doc  # type: ignore[no-any-return]


def merge(old: dict | None, r: dict) -> dict:
    """The container's linux.resources (JSON) with runc update's changes from ``r``.

    As runc merges into its config: blockIO.weight; cpu shares/quota/period/realtime*
    (0 = unchanged), burst and idle (0 is a value); cpus and mems (non-empty); memory
    limit/reservation/swap (0 = unchanged; a limit of -1 without a swap makes swap -1
    too) and checkBeforeUpdate; pids.limit (0 = unchanged); unified.  The rest of a
    LinuxResources document (devices, hugepageLimits, network, rdma, the other memory
    fields) is not something ``runc update`` changes, and is ignored likewise.
    """
    out: dict = jsonio.loads(jsonio.dumps(old or {}))  # a deep copy
    cpu, mem = r.get("cpu") or {}, r.get("memory") or {}
    weight = (r.get("blockIO") or {}).get("weight")
    if weight:
        out.setdefault("blockIO", {})["weight"] = weight
    new_cpu = {k: cpu[k] for k in ("shares", "quota", "period", "realtimeRuntime", "realtimePeriod", "cpus", "mems")
               if cpu.get(k)}
    new_cpu.update({k: cpu[k] for k in ("burst", "idle") if cpu.get(k) is not None})
    if new_cpu:
        out["cpu"] = {**(out.get("cpu") or {}), **new_cpu}
    new_mem = {k: mem[k] for k in ("limit", "reservation", "swap") if mem.get(k)}
    if new_mem.get("limit") == -1 and "swap" not in new_mem:
        new_mem["swap"] = -1
    if mem.get("checkBeforeUpdate") is not None:
        new_mem["checkBeforeUpdate"] = mem["checkBeforeUpdate"]
    if new_mem:
        out["memory"] = {**(out.get("memory") or {}), **new_mem}
    limit = (r.get("pids") or {}).get("limit")
    if limit:
        out["pids"] = {**(out.get("pids") or {}), "limit": limit}
    if r.get("unified"):
        out["unified"] = dict(r["unified"])
    return out


def check_merged(res: dict) -> None:
    """What no layout accepts, checked before any cgroup file is written."""
    mem = res.get("memory") or {}
    limit, swap = mem.get("limit") or 0, mem.get("swap") or 0
    if limit > 0 and swap > 0 and swap < limit:
        raise UsageError(f"memory.swap: memory+swap limit {swap} is smaller than the memory limit {limit}")
    cpu = res.get("cpu") or {}
    quota, burst = cpu.get("quota") or 0, cpu.get("burst")
    if burst and quota > 0 and burst > quota:
        raise UsageError(f"cpu.burst: {burst} is larger than the quota {quota}")


def rollback(old: dict, merged: dict) -> dict:
    """What to apply to undo a half-applied ``merged`` (a later write failed): the old
    resources, plus the kernel's defaults for the limits ``merged`` set and ``old`` did not
    (no memory/swap/pids/quota limit, 1024 cpu shares), since applying "unset" writes nothing."""
    out: dict = jsonio.loads(jsonio.dumps(old))
    for group, key, default in (("memory", "limit", -1), ("memory", "swap", -1), ("pids", "limit", -1),
                                ("cpu", "quota", -1), ("cpu", "shares", 1024)):
        if (merged.get(group) or {}).get(key) and not (old.get(group) or {}).get(key):
            out.setdefault(group, {})[key] = default
    return out
