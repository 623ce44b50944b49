"""The container process's own settings, applied by the init just before exec.

Order follows runc's finalizeNamespace: bounding set first (dropping needs
CAP_SETPCAP, which we still have), keep capabilities across the uid change, switch
user, then set effective/permitted/inheritable and raise ambient capabilities.
Capabilities go through python-prctl's C extension (``_prctl``; its pure-Python
wrapper costs 3 ms of import for nothing we need); ambient ones, which
python-prctl does not know, through prctl(2) directly.
"""

from __future__ import annotations

import errno
import os
import resource

import _prctl

from .. import linux as L
from ..config import CAPABILITIES, RLIMITS


class ExecNotFound(Exception):
    pass


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(CAPABILITIES) - 1


def cap_numbers(names: list[str], known: int) -> list[int]:
    """Capability names -> numbers, leaving out those this kernel does not know (runc warns too)."""
    out = []
    for name in names:
        n = CAPABILITIES.index(name)
        if n <= known:
            out.append(n)
    return out


def unknown_caps(caps: object, known: int) -> list[str]:
    names: set[str] = set()
    for kind in ("bounding", "effective", "inheritable", "permitted", "ambient"):
        names.update(getattr(caps, kind))
    return sorted(n for n in names if CAPABILITIES.index(n) > known)


def set_rlimits(rlimits: list) -> None:
    for i, r in enumerate(rlimits):
        try:
            resource.setrlimit(RLIMITS[r.type], (_rlim(r.soft), _rlim(r.hard)))
        except (OSError, ValueError) as e:
            reason = e.strerror if isinstance(e, OSError) else str(e)
            raise OSError(getattr(e, "errno", 22) or 22,
                          f"process.rlimits[{i}] ({r.type} {r.soft}/{r.hard}): {reason}") from None


def _rlim(value: int) -> int:
    """A config value (uint64) as ``resource`` takes it: a C long, -1 being RLIM_INFINITY (2**64-1)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def drop_bounding(caps: object | None, known: int) -> None:
    keep = set(cap_numbers(caps.bounding, known)) if caps is not None else set(range(known + 1))  # type: ignore[attr-defined]
    for n in range(known + 1):
        if n not in keep:
            _prctl.prctl(_prctl.PR_CAPBSET_DROP, n)


def switch_user(user: object) -> None:
    """setgroups/setgid/setuid, keeping capabilities so that they can be set after."""
    L.prctl(L.PR_SET_KEEPCAPS, 1)
    gids = user.additional_gids  # type: ignore[attr-defined]
    try:
        os.setgroups(gids)
    except OSError as e:
        # "setgroups deny" in a user namespace: only an empty/unchanged list is acceptable then
        if e.errno != errno.EPERM or gids:
            raise OSError(e.errno, f"process.user.additionalGids {gids}: setgroups: {e.strerror}") from None
    for what, set_ids, value in (("gid", os.setresgid, user.gid), ("uid", os.setresuid, user.uid)):  # type: ignore[attr-defined]
        try:
            set_ids(value, value, value)
        except OSError as e:
            hint = " (not mapped in the user namespace?)" if e.errno == errno.EINVAL else ""
            raise OSError(e.errno, f"process.user.{what} {value}: {e.strerror}{hint}") from None
    L.prctl(L.PR_SET_KEEPCAPS, 0)
    # runc's finalizeRootfs: the configured umask, else 0022 (never the runtime's own)
    os.umask(0o022 if user.umask is None else user.umask)  # type: ignore[attr-defined]


def apply_capabilities(caps: object | None, known: int, warn: object = None) -> None:
    """``warn(message)`` reports what runc only warns about (the runtime logs it)."""
    if caps is None:
        return  # no capabilities object: the process keeps what it has (as runc does)
    every = set(range(known + 1))
    eff = set(cap_numbers(caps.effective, known))  # type: ignore[attr-defined]
    perm = set(cap_numbers(caps.permitted, known))  # type: ignore[attr-defined]
    inh = set(cap_numbers(caps.inheritable, known))  # type: ignore[attr-defined]
    # _prctl.set_caps(eff_set, perm_set, inh_set, eff_clear, perm_clear, inh_clear)
    try:
        _prctl.set_caps(sorted(eff), sorted(perm), sorted(inh),
                        sorted(every - eff), sorted(every - perm), sorted(every - inh))
    except OSError as e:
        raise OSError(e.errno, f"process.capabilities: cannot apply the capability sets: {e.strerror}") from None
    L.prctl(L.PR_CAP_AMBIENT, L.PR_CAP_AMBIENT_CLEAR_ALL)
    for n in cap_numbers(caps.ambient, known):  # type: ignore[attr-defined]
        try:
            L.prctl(L.PR_CAP_AMBIENT, L.PR_CAP_AMBIENT_RAISE, n)
        except OSError as e:
            # runc only warns (an ambient capability must be permitted and inheritable too)
            if warn is not None:
                warn(f"can't raise ambient capability {CAPABILITIES[n]}: {(e.strerror or '').lower()}")  # type: ignore[operator]


def find_executable(name: str, env: list[str], cwd: str) -> str:
    """What execvp would run, looked up in the container (after pivot_root), as runc's LookPath."""
    if "/" in name:
        path = name if name.startswith("/") else os.path.join(cwd, name)
        if not os.path.exists(path):
            raise ExecNotFound(f'exec: "{name}": stat {name}: no such file or directory')
        _check_executable(name, path)
        return path
    search = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    for e in env:
        if e.startswith("PATH="):
            search = e[5:]
    for d in search.split(":"):
        path = os.path.join(d or ".", name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise ExecNotFound(f'exec: "{name}": executable file not found in $PATH')


def _check_executable(name: str, path: str) -> None:
    if os.path.isdir(path):
        raise ExecNotFound(f'exec: "{name}": is a directory')
    if not os.access(path, os.X_OK):
        raise ExecNotFound(f'exec: "{name}": permission denied')


def env_dict(env: list[str]) -> dict[str, str]:
    out = {}
    for e in env:
        k, sep, v = e.partition("=")
        if sep:
            out[k] = v
    return out
