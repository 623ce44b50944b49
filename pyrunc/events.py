"""``events``: runc's JSON lines of container statistics and OOM notifications.

Each line is one ``{"type": ..., "id": ..., "data": ...}`` object, shaped as runc's
``types.Event``/``types.Stats`` encode (Go's ``omitempty`` rules included).  The
numbers come from the cgroup manager's ``stats()``; OOM kills from its ``oom_kills()``
counter (v1 ``memory.oom_control``, v2 ``memory.events``), polled every 100 ms.

Only imported by ``events``.
"""

from __future__ import annotations

import sys
import time

from . import jsonio
from . import state as S
from .errors import PyruncError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .container import Container

OOM_POLL = 0.1  # seconds between two looks at the OOM counter and the container's status

_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, flag: str = "interval") -> float:
    """Go's time.ParseDuration ("5s", "500ms", "1m30s", "1.5h", "-2s", "0") -> seconds."""
    bad = UsageError(f'invalid value "{text}" for flag -{flag}: parse error')
    s = text
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise bad
    total = 0.0
    while s:
        i = 0
        while i < len(s) and (s[i].isdigit() or s[i] == "."):
            i += 1
        number, s = s[:i], s[i:]
        if not number or number == "." or number.count(".") > 1:
            raise bad
        j = 0
        while j < len(s) and not (s[j].isdigit() or s[j] == "."):
            j += 1
        unit, s = s[:j], s[j:]
        if unit not in _UNITS:
            raise bad
        total += float(number) * _UNITS[unit]
    return sign * total


# ---------------------------------------------------------------------------- shaping


def _omit(d: dict, keys: tuple[str, ...]) -> dict:
    """Go's omitempty for ``keys``: zero numbers, empty strings, lists and maps go."""
    return {k: v for k, v in d.items() if k not in keys or v}


def _floats(value: object) -> object:
    """Go prints a float64 without a needless ".0" (0, 2.5)."""
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _with_psi(d: dict, psi: object) -> dict:
    if psi:
        d["psi"] = _floats(psi)
    return d


def shape_stats(s: dict) -> dict:
    """A cgroup manager's ``stats()`` -> runc's ``types.Stats`` JSON object."""
    cpu, mem, blkio = s["cpu"], s["memory"], s["blkio"]

    def entry(e: dict) -> dict:
        return _omit(e, ("usage", "max"))

    return {
        "cpu": _with_psi({"usage": _omit(cpu["usage"], ("total", "percpu", "percpu_kernel", "percpu_user")),
                          "throttling": _omit(cpu["throttling"], ("periods", "throttledPeriods", "throttledTime"))},
                         cpu.get("psi")),
        "cpuset": _omit(s["cpuset"], ("cpus", "mems")),
        "memory": _with_psi(_omit({"cache": mem["cache"], "usage": entry(mem["usage"]), "swap": entry(mem["swap"]),
                                   "kernel": entry(mem["kernel"]), "kernelTCP": entry(mem["kernelTCP"]),
                                   "raw": dict(sorted(mem["raw"].items()))}, ("cache", "raw")),
                            mem.get("psi")),
        "pids": _omit(s["pids"], ("current", "limit")),
        "blkio": _with_psi({k: [_omit(e, ("major", "minor", "op", "value")) for e in v]
                            for k, v in blkio.items() if k != "psi" and v}, blkio.get("psi")),
        "hugetlb": {size: entry(h) for size, h in sorted(s["hugetlb"].items())},
        "intel_rdt": {},
        "network_interfaces": None,
    }


def stats_event(container: Container) -> dict:
    return {"type": "stats", "id": container.id, "data": shape_stats(container.cgroup_stats())}


# ---------------------------------------------------------------------------- the command


def _emit(event: dict) -> None:
    sys.stdout.write(jsonio.dumps(event) + "\n")
    sys.stdout.flush()


def run(container: Container, interval: float = 5.0, stats_only: bool = False) -> int:
    """runc events: one stats event (``--stats``), or stats every ``interval`` and an ``oom``
    event for every OOM kill until the container stops (then 0, as runc)."""
    if interval <= 0:
        raise UsageError("duration interval must be greater than 0")
    if container.status == S.STOPPED:
        raise PyruncError(f"container with id {container.id} is not running")
    if stats_only:
        _emit(stats_event(container))
        return 0
    cgroup = container.cgroup_manager()
    last_oom = cgroup.oom_kills() or 0
    next_stats = time.monotonic() + interval
    while True:
        stopped = container.status == S.STOPPED  # before the counter: a kill that ended it counts
        count = cgroup.oom_kills()
        if count is not None and count > last_oom:
            _emit({"type": "oom", "id": container.id})
        if count is not None:
            last_oom = count
        if stopped or count is None and not cgroup.exists():
            return 0
        now = time.monotonic()
        if now >= next_stats:
            try:
                _emit(stats_event(container))
            except PyruncError as e:  # runc logs a failed Stats() and goes on
                print(f"pyrunc events: {e}", file=sys.stderr)
            next_stats = max(next_stats + interval, now)
        time.sleep(max(0.0, min(OOM_POLL, next_stats - time.monotonic())))
