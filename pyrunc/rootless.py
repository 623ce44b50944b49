"""Rootless pyrunc: what changes when the runtime is not the host's root, as in runc.

* The state root (``--root`` unset): ``$XDG_RUNTIME_DIR/pyrunc`` when XDG_RUNTIME_DIR is set
  and we are not the real root (runc's shouldHonorXDGRuntimeDir: euid != 0, or euid 0 inside a
  user namespace with ``$USER`` other than root); else ``/run/pyrunc``, which an unprivileged
  user cannot write, exactly as runc falls back to /run/runc.  The XDG directory is made
  0700 + sticky bit (so that the XDG cleaner leaves it alone), as runc does.
* ``--rootless true|false|auto`` (runc's shouldUseRootlessCgroupManager for the cgroupfs
  driver): ``auto`` is true for euid != 0 and for euid 0 inside a user namespace.  A rootless
  container skips the cgroups it has no permission to create or join (cgroups.Manager
  ``rootless``), but only when config.json gives no ``linux.cgroupsPath``, and a limit that
  needs a skipped cgroup is an error; device rules are ignored (see ``pyrunc.cgroups``).
* ``ns_pids``: the processes of a container that has no cgroup, found by its PID namespace.

Only ``os`` at import time: the CLI calls ``default_root`` on every command.
"""

from __future__ import annotations

import os

SYSTEM_ROOT = "/run/pyrunc"


def running_in_userns() -> bool:
    """moby/sys/userns.RunningInUserNS: our uid_map is not the initial namespace's identity map."""
    try:
        with open("/proc/self/uid_map", "rb") as f:
            fields = f.read().split()
    except OSError:
        return False
    return fields != [b"0", b"0", b"4294967295"]


def should_honor_xdg() -> bool:
    if os.geteuid() != 0:
        return True
    if not running_in_userns():
        return False  # the real root: /run/pyrunc, whatever XDG_RUNTIME_DIR says (e.g. /run/user/0)
    user = os.environ.get("USER")
    return user is None or user != "root"


def default_root() -> tuple[str, bool]:
    """(the default --root, whether it is the XDG one)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg and should_honor_xdg():
        return xdg + "/pyrunc", True
    return SYSTEM_ROOT, False


def make_xdg_root(root: str) -> None:
    """runc's app.Before for an XDG root: mkdir -p 0700, then 0700 with the sticky bit."""
    from .errors import PyruncError

    try:
        os.makedirs(root, 0o700, exist_ok=True)
    except OSError as e:
        raise PyruncError(f"the path in $XDG_RUNTIME_DIR must be writable by the user: "
                          f"mkdir {root}: {e.strerror}") from None
    try:
        os.chmod(root, 0o1700)
    except OSError as e:
        raise PyruncError(f"you should check permission of the path in $XDG_RUNTIME_DIR: "
                          f"chmod {root}: {e.strerror}") from None


def use_rootless_cgroups(flag: object) -> bool:
    """The global ``--rootless`` value ("true", "false", "auto" or None for auto) -> whether
    cgroup permission errors may be skipped (runc's RootlessCgroups)."""
    value = str(flag or "auto").lower()
    if value != "auto":
        return value in ("1", "t", "true")
    return os.geteuid() != 0 or running_in_userns()


def ns_pids(init_pid: int) -> list[int]:
    """Host pids of the live processes in ``init_pid``'s PID namespace (the init included),
    sorted: what a container without a cgroup holds.  Zombies and processes we may not inspect
    are left out."""
    try:
        ns = os.stat(f"/proc/{init_pid}/ns/pid")
    except OSError:
        return []
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{name}/ns/pid")
        except OSError:
            continue
        if (st.st_ino, st.st_dev) == (ns.st_ino, ns.st_dev) and not _zombie(name):
            found.append(int(name))
    return sorted(found)


def _zombie(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):
        return True  # gone meanwhile
