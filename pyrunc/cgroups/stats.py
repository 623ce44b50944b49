"""Reading a cgroup's statistics (for ``events``), one function per layout.

``v1_stats`` / ``v2_stats`` return plain dicts whose keys are those of runc's
``types.Stats`` JSON (``events --stats``), every field present (zeros, empty lists,
``None`` for an absent PSI); ``pyrunc.events`` drops what Go's ``omitempty`` drops.
The values are read as runc's fs and fs2 drivers read them: a missing file (an
unmounted controller, an older kernel) leaves its fields at zero.
"""

from __future__ import annotations

import os

from .base import read_file

MAX_UINT64 = (1 << 64) - 1
_NS = 1_000_000_000


# ---------------------------------------------------------------------------- parsing


def _text(directory: str, name: str) -> str | None:
    if not directory:
        return None
    try:
        return read_file(f"{directory}/{name}")
    except OSError:
        return None


def _uint(text: str | None) -> int:
    """A cgroup number as runc's GetCgroupParamUint reads it: "max" -> MaxUint64, a negative
    number (v1's -1) -> 0, anything unreadable -> 0."""
    if text is None:
        return 0
    value = text.strip()
    if value == "max":
        return MAX_UINT64
    try:
        n = int(value)
    except ValueError:
        return 0
    return max(n, 0)


def _num(directory: str, name: str) -> int:
    return _uint(_text(directory, name))


def _keyed(text: str | None) -> dict[str, int]:
    """Flat keyed files (memory.stat, cpu.stat, memory.events): "key value" lines."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if key and value:
            out[key] = _uint(value)
    return out


def _ints(text: str | None) -> list[int]:
    return [int(v) for v in (text or "").split() if v.lstrip("-").isdigit()]


def parse_list(text: str | None) -> list[int]:
    """A cpuset list ("0-3,5") -> [0, 1, 2, 3, 5]."""
    out: list[int] = []
    for part in (text or "").strip().split(","):
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        try:
            out.extend(range(int(lo), int(hi) + 1) if dash else [int(lo)])
        except ValueError:
            continue
    return out


def parse_psi(text: str | None) -> dict | None:
    """cpu.pressure / memory.pressure / io.pressure -> {"some": {...}, "full": {...}}."""
    if text is None:
        return None
    out: dict[str, dict] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind not in ("some", "full"):
            continue
        data: dict[str, object] = {"avg10": 0.0, "avg60": 0.0, "avg300": 0.0, "total": 0}
        for item in rest.split():
            key, _, value = item.partition("=")
            if key in ("avg10", "avg60", "avg300"):
                data[key] = float(value)
            elif key == "total":
                data[key] = _uint(value)
        out[kind] = data
    return out or None


def _blkio_entries(text: str | None) -> list[dict]:
    """v1 blkio files: "MAJ:MIN Op value" lines ("Total value" lines are skipped, as runc does)."""
    out: list[dict] = []
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) != 3:
            continue
        major, _, minor = fields[0].partition(":")
        try:
            out.append({"major": int(major), "minor": int(minor), "op": fields[1], "value": int(fields[2])})
        except ValueError:
            continue
    return out


def hugepage_sizes() -> list[str]:
    """Page sizes as cgroup files name them: hugepages-2048kB -> "2MB" (runc's HugePageSizes)."""
    try:
        names = sorted(os.listdir("/sys/kernel/mm/hugepages"))
    except OSError:
        return []
    out = []
    for name in names:
        if not (name.startswith("hugepages-") and name.endswith("kB")):
            continue
        size = int(name[len("hugepages-"):-2]) * 1024
        for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
            if size < 1024 or size % 1024:
                out.append(f"{size}{unit}")
                break
            size //= 1024
    return out


# ---------------------------------------------------------------------------- shapes


def _memory_entry(limit: int = 0, usage: int = 0, peak: int = 0, failcnt: int = 0) -> dict:
    return {"limit": limit, "usage": usage, "max": peak, "failcnt": failcnt}


def empty_stats() -> dict:
    return {
        "cpu": {"usage": {"total": 0, "percpu": [], "percpu_kernel": [], "percpu_user": [],
                          "kernel": 0, "user": 0},
                "throttling": {"periods": 0, "throttledPeriods": 0, "throttledTime": 0},
                "psi": None},
        "cpuset": {"cpus": [], "cpu_exclusive": 0, "mems": [], "mem_hardwall": 0, "mem_exclusive": 0,
                   "memory_migrate": 0, "memory_spread_page": 0, "memory_spread_slab": 0,
                   "memory_pressure": 0, "sched_load_balance": 0, "sched_relax_domain_level": 0},
        "memory": {"cache": 0, "usage": _memory_entry(), "swap": _memory_entry(),
                   "kernel": _memory_entry(), "kernelTCP": _memory_entry(), "raw": {}, "psi": None},
        "pids": {"current": 0, "limit": 0},
        "blkio": {"ioServiceBytesRecursive": [], "ioServicedRecursive": [], "ioQueueRecursive": [],
                  "ioServiceTimeRecursive": [], "ioWaitTimeRecursive": [], "ioMergedRecursive": [],
                  "ioTimeRecursive": [], "sectorsRecursive": [], "psi": None},
        "hugetlb": {},
    }


# ---------------------------------------------------------------------------- cgroup v1


def v1_stats(paths: dict[str, str]) -> dict:
    s = empty_stats()
    cpuacct = paths.get("cpuacct", "")
    usage = s["cpu"]["usage"]
    ticks = os.sysconf("SC_CLK_TCK") or 100
    times = _keyed(_text(cpuacct, "cpuacct.stat"))
    usage["user"] = times.get("user", 0) * _NS // ticks
    usage["kernel"] = times.get("system", 0) * _NS // ticks
    usage["total"] = _num(cpuacct, "cpuacct.usage")
    usage["percpu"] = _ints(_text(cpuacct, "cpuacct.usage_percpu"))
    rows = (_text(cpuacct, "cpuacct.usage_all") or "").splitlines()[1:]  # "cpu user system"
    cols = [r.split() for r in rows if len(r.split()) == 3]
    usage["percpu_user"] = [int(c[1]) for c in cols]
    usage["percpu_kernel"] = [int(c[2]) for c in cols]
    cpu_stat = _keyed(_text(paths.get("cpu", ""), "cpu.stat"))
    s["cpu"]["throttling"] = {"periods": cpu_stat.get("nr_periods", 0),
                              "throttledPeriods": cpu_stat.get("nr_throttled", 0),
                              "throttledTime": cpu_stat.get("throttled_time", 0)}

    cpuset = paths.get("cpuset", "")
    if cpuset:
        cs = s["cpuset"]
        cs["cpus"] = parse_list(_text(cpuset, "cpuset.cpus"))
        cs["mems"] = parse_list(_text(cpuset, "cpuset.mems"))
        for key in ("cpu_exclusive", "mem_hardwall", "mem_exclusive", "memory_migrate",
                    "memory_spread_page", "memory_spread_slab", "memory_pressure", "sched_load_balance"):
            cs[key] = _num(cpuset, f"cpuset.{key}")
        level = (_text(cpuset, "cpuset.sched_relax_domain_level") or "0").strip()
        cs["sched_relax_domain_level"] = int(level) if level.lstrip("-").isdigit() else 0

    memory = paths.get("memory", "")
    if memory:
        m = s["memory"]
        m["raw"] = _keyed(_text(memory, "memory.stat"))
        m["cache"] = m["raw"].get("cache", 0)
        for key, prefix in (("usage", "memory"), ("swap", "memory.memsw"), ("kernel", "memory.kmem"),
                            ("kernelTCP", "memory.kmem.tcp")):
            m[key] = _memory_entry(_num(memory, f"{prefix}.limit_in_bytes"),
                                   _num(memory, f"{prefix}.usage_in_bytes"),
                                   _num(memory, f"{prefix}.max_usage_in_bytes"),
                                   _num(memory, f"{prefix}.failcnt"))

    pids = paths.get("pids", "")
    limit = _num(pids, "pids.max")
    s["pids"] = {"current": _num(pids, "pids.current"), "limit": 0 if limit == MAX_UINT64 else limit}

    blkio = paths.get("blkio", "")
    if blkio:
        for family in ("blkio.bfq.", "blkio.", "blkio.throttle."):
            served = _text(blkio, family + "io_serviced_recursive")
            if served is not None:
                s["blkio"]["ioServicedRecursive"] = _blkio_entries(served)
                s["blkio"]["ioServiceBytesRecursive"] = _blkio_entries(
                    _text(blkio, family + "io_service_bytes_recursive"))
                break

    hugetlb = paths.get("hugetlb", "")
    if hugetlb:
        for size in hugepage_sizes():
            s["hugetlb"][size] = {"usage": _num(hugetlb, f"hugetlb.{size}.usage_in_bytes"),
                                  "max": _num(hugetlb, f"hugetlb.{size}.max_usage_in_bytes"),
                                  "failcnt": _num(hugetlb, f"hugetlb.{size}.failcnt")}
    elif paths.get(""):  # hybrid: hugetlb lives in the cgroup2 hierarchy
        s["hugetlb"] = _v2_hugetlb(paths[""])
    return s


def v1_oom_kills(paths: dict[str, str]) -> int | None:
    """The memory cgroup's OOM-kill counter (memory.oom_control, Linux 4.13+); None: no cgroup."""
    text = _text(paths.get("memory", ""), "memory.oom_control")
    if text is None:
        return None
    return _keyed(text).get("oom_kill", 0)


# ---------------------------------------------------------------------------- cgroup v2


def _v2_hugetlb(d: str) -> dict:
    out = {}
    for size in hugepage_sizes():
        current = _text(d, f"hugetlb.{size}.current")
        if current is None:
            continue
        out[size] = {"usage": _uint(current), "max": 0,
                     "failcnt": _keyed(_text(d, f"hugetlb.{size}.events")).get("max", 0)}
    return out


def v2_stats(d: str) -> dict:
    s = empty_stats()
    cpu_stat = _keyed(_text(d, "cpu.stat"))
    usage = s["cpu"]["usage"]
    usage["total"] = cpu_stat.get("usage_usec", 0) * 1000
    usage["user"] = cpu_stat.get("user_usec", 0) * 1000
    usage["kernel"] = cpu_stat.get("system_usec", 0) * 1000
    s["cpu"]["throttling"] = {"periods": cpu_stat.get("nr_periods", 0),
                              "throttledPeriods": cpu_stat.get("nr_throttled", 0),
                              "throttledTime": cpu_stat.get("throttled_usec", 0) * 1000}
    s["cpu"]["psi"] = parse_psi(_text(d, "cpu.pressure"))

    cs = s["cpuset"]
    cs["cpus"] = parse_list(_text(d, "cpuset.cpus.effective"))
    cs["mems"] = parse_list(_text(d, "cpuset.mems.effective"))

    m = s["memory"]
    m["raw"] = _keyed(_text(d, "memory.stat"))
    m["cache"] = m["raw"].get("file", 0)
    mem = _memory_entry(_num(d, "memory.max"), _num(d, "memory.current"), _num(d, "memory.peak"))
    m["usage"] = mem
    swap = _memory_entry()
    if _text(d, "memory.swap.current") is not None:
        swap = _memory_entry(_num(d, "memory.swap.max"), _num(d, "memory.swap.current"))
    # runc reports swap as memory+swap, v1 style; its peak cannot be combined, so 0
    swap["usage"] += mem["usage"]
    if swap["limit"] != MAX_UINT64:
        swap["limit"] = min(swap["limit"] + mem["limit"], MAX_UINT64)
    swap["max"] = 0
    m["swap"] = swap
    m["psi"] = parse_psi(_text(d, "memory.pressure"))

    limit = _num(d, "pids.max")
    s["pids"] = {"current": _num(d, "pids.current"), "limit": 0 if limit == MAX_UINT64 else limit}

    read_bytes: list[dict] = []
    served: list[dict] = []
    for line in (_text(d, "io.stat") or "").splitlines():
        dev, _, rest = line.partition(" ")
        major, _, minor = dev.partition(":")
        if not (major.isdigit() and minor.isdigit()):
            continue
        values = dict(item.partition("=")[::2] for item in rest.split())
        for key, op, target in (("rbytes", "Read", read_bytes), ("wbytes", "Write", read_bytes),
                                ("dbytes", "Discard", read_bytes), ("rios", "Read", served),
                                ("wios", "Write", served), ("dios", "Discard", served)):
            if key in values:
                target.append({"major": int(major), "minor": int(minor), "op": op, "value": _uint(values[key])})
    s["blkio"]["ioServiceBytesRecursive"] = read_bytes
    s["blkio"]["ioServicedRecursive"] = served
    s["blkio"]["psi"] = parse_psi(_text(d, "io.pressure"))

    s["hugetlb"] = _v2_hugetlb(d)
    return s


def v2_oom_kills(d: str) -> int | None:
    """memory.events' oom_kill counter (hierarchical); None when the cgroup is gone."""
    text = _text(d, "memory.events")
    if text is None:
        return None if not os.path.isdir(d) else 0
    return _keyed(text).get("oom_kill", 0)
