"""Where the cgroups are: the host's layout and runc's cgroupsPath rules (cgroupfs driver).

Pure functions over the text of ``/proc/self/mountinfo`` and ``/proc/self/cgroup`` so
unit tests can feed fake hosts; ``host_mounts()``/``own_cgroups()`` read the real ones
(once per process).

cgroupsPath, as runc's cgroupfs driver reads it (opencontainers/cgroups fs/paths.go,
fs2/defaultpath.go, internal/path/path.go):

* absolute ``/a/b``: relative to the root of each hierarchy (``<mount>/a/b``);
* relative ``a/b``: on v1, below the runtime's own cgroup in each hierarchy
  (``/proc/self/cgroup``, taken relative to the mount's root); on v2, below the
  *parent* of the runtime's own cgroup, because its own one holds processes and so
  cannot enable controllers for children (no-internal-process rule);
* empty: the container id, as a relative path.

Paths are cleaned like runc's CleanPath: ``..`` cannot climb above the root.
Deviation from runc, on hybrid hosts only: runc puts a *relative* path's unified
(cgroup2) directory straight under the cgroup2 mount root, ignoring the runtime's own
cgroup there; we use the own cgroup, as for every v1 hierarchy.
"""

from __future__ import annotations

import os

from ..record import record
from .base import CgroupError

# v1 controllers a container joins (runc's subsystem list); named hierarchies
# ("name=systemd") are joined too.
V1_CONTROLLERS = frozenset({
    "cpuset", "devices", "memory", "cpu", "cpuacct", "pids", "blkio", "hugetlb",
    "net_cls", "net_prio", "perf_event", "freezer", "rdma", "misc",
})
DEFAULT_ROOT = "/sys/fs/cgroup"


@record
class Mount:
    mountpoint: str
    root: str = "/"  # the cgroup this mount shows at its mountpoint (field 4 of mountinfo)


@record
class Mounts:
    """The host's cgroup filesystems.

    ``layout`` is "v2" (cgroup2 only), "hybrid" (v1 controllers and a cgroup2 beside
    them), "v1" (no cgroup2) or "none".  ``v1`` maps each controller or ``name=X``
    hierarchy to its mount; ``unified`` is the cgroup2 mount, if any.
    """

    layout: str
    v1: dict[str, Mount] = {}
    unified: Mount | None = None


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo octal."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        digits = field[i + 1:i + 4]
        if field[i] == "\\" and len(digits) == 3 and all(c in "01234567" for c in digits):
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> Mounts:
    """The cgroup mounts in a mountinfo text, and the layout they make."""
    v1: dict[str, Mount] = {}
    v2: list[Mount] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        tail = right.split()
        if not tail or tail[0] not in ("cgroup", "cgroup2"):
            continue
        fields = left.split()
        if len(fields) < 5:
            continue
        mount = Mount(_unescape(fields[4]), _unescape(fields[3]))
        if tail[0] == "cgroup2":
            v2.append(mount)
            continue
        opts = tail[2].split(",") if len(tail) > 2 else []
        for opt in opts:
            if opt in V1_CONTROLLERS or opt.startswith("name="):
                old = v1.get(opt)
                # The first mount wins, except that one under /sys/fs/cgroup beats others
                # (runc tries /sys/fs/cgroup/<controller> first).
                if old is None or (not old.mountpoint.startswith(DEFAULT_ROOT + "/")
                                   and mount.mountpoint.startswith(DEFAULT_ROOT + "/")):
                    v1[opt] = mount
    unified = None
    for m in v2:
        if m.mountpoint == DEFAULT_ROOT:
            return Mounts("v2", {}, m)
        if unified is None or m.mountpoint == DEFAULT_ROOT + "/unified":
            unified = m
    if v1:
        return Mounts("hybrid" if unified else "v1", v1, unified)
    if unified is not None:
        return Mounts("v2", {}, unified)  # cgroup2 mounted somewhere unusual, nothing else
    return Mounts("none")


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """``/proc/PID/cgroup`` -> {controller or "name=X": path}; the cgroup2 entry is under ""."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        path = parts[2]
        path = path.removesuffix(" (deleted)")
        for ctl in parts[1].split(","):
            out[ctl] = path
    return out


_mounts_cache: Mounts | None = None


def host_mounts() -> Mounts:
    """The cgroup mounts of this process's mount namespace (parsed once)."""
    global _mounts_cache
    if _mounts_cache is None:
        from .base import read_file

        try:
            text = read_file("/proc/self/mountinfo")
        except OSError as e:
            raise CgroupError(f"cannot read /proc/self/mountinfo: {e.strerror}", e.errno) from None
        _mounts_cache = parse_mountinfo(text)
    return _mounts_cache


def own_cgroups() -> dict[str, str]:
    from .base import read_file

    try:
        return parse_proc_cgroup(read_file("/proc/self/cgroup"))
    except OSError as e:
        raise CgroupError(f"cannot read /proc/self/cgroup: {e.strerror}", e.errno) from None


def detect_layout() -> str:
    """"v2", "hybrid", "v1" or "none" for this host (cached)."""
    return host_mounts().layout


# ---------------------------------------------------------------------------- cgroupsPath


def clean_path(path: str) -> str:
    """runc's CleanPath: absolute stays absolute, relative stays relative, no escape via ``..``."""
    if not path:
        return ""
    cleaned = os.path.normpath("/" + path.lstrip("/"))
    if path.startswith("/"):
        return cleaned
    return cleaned.lstrip("/") or "."


def inner_path(cgroups_path: str, container_id: str) -> str:
    """The cleaned cgroupsPath (or the container id when empty); rejects paths naming no cgroup."""
    inner = clean_path(cgroups_path) if cgroups_path else clean_path(container_id)
    if inner in ("", ".", "/"):
        shown = cgroups_path if cgroups_path else container_id
        raise CgroupError(f"linux.cgroupsPath: {shown!r} does not name a cgroup below the root")
    return inner


def _below_root(own: str, root: str) -> str:
    """The runtime's cgroup ``own`` (as /proc/self/cgroup shows it) as seen inside a mount of ``root``."""
    if root == "/":
        return own
    if own == root:
        return "/"
    if own.startswith(root + "/"):
        return own[len(root):]
    raise CgroupError(f"cannot locate our own cgroup {own} in a cgroup mount of {root}")


def _join(base: str, path: str) -> str:
    base = base.rstrip("/") or "/"
    path = path.strip("/")
    if not path:
        return base
    return f"{base}/{path}" if base != "/" else f"/{path}"


def v1_paths(inner: str, mounts: Mounts, own: dict[str, str] | None) -> dict[str, str]:
    """{controller: directory} for a v1 or hybrid host; the hybrid cgroup2 one is under ""."""
    paths: dict[str, str] = {}
    relative = not inner.startswith("/")
    hierarchies = dict(mounts.v1)
    if mounts.layout == "hybrid" and mounts.unified is not None:
        hierarchies[""] = mounts.unified
    for ctl, mount in hierarchies.items():
        if not relative:
            paths[ctl] = _join(mount.mountpoint, inner)
            continue
        assert own is not None
        mine = own.get(ctl)
        if mine is None:
            continue  # this process is in no cgroup of that hierarchy (runc skips it too)
        paths[ctl] = _join(_join(mount.mountpoint, _below_root(mine, mount.root)), inner)
    return paths


def v2_path(inner: str, mounts: Mounts, own: dict[str, str] | None) -> str:
    assert mounts.unified is not None
    mount = mounts.unified
    if not inner.startswith("/"):
        assert own is not None
        mine = own.get("")
        if mine is None:
            raise CgroupError("cannot find our own cgroup v2 entry (0::) in /proc/self/cgroup")
        parent = os.path.dirname(_below_root(mine, mount.root).rstrip("/")) or "/"
        return _join(_join(mount.mountpoint, parent), inner)
    return _join(mount.mountpoint, inner)
