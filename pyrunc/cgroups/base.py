"""What every cgroup backend shares: the error type, file access and the Manager interface.

Everything here is plain ``os`` work on cgroupfs files; the layout-specific parts live
in ``v1.py`` (cgroup v1 and hybrid) and ``v2.py`` (pure cgroup v2).
"""

from __future__ import annotations

import errno as _errno
import os

from ..errors import PyruncError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (hot path)
if TYPE_CHECKING:
    from ..config import Resources


class CgroupError(PyruncError):
    """A cgroup could not be located, created, configured, joined or removed.

    ``errno`` is the kernel's answer when the failure was a system call, else 0.
    """

    def __init__(self, message: str, errno: int | None = 0) -> None:
        super().__init__(message)
        self.errno = errno or 0


# Errors that let a rootless container go without a cgroup (runc's isIgnorableError): a
# permission error in the loose sense, EROFS included.
IGNORABLE = frozenset({_errno.EPERM, _errno.EACCES, _errno.EROFS})


def rootless_error(controller: str, what: str, reason: str) -> str:
    """The error for a limit whose cgroup a rootless container could not make or join (runc's
    words: "cannot set memory limit: container could not join or create cgroup")."""
    if controller == "freezer":
        return f"{what}: cannot toggle freezer: cgroups not configured for container ({reason})"
    return (f"{what}: cannot set {controller} limit: container could not join or create cgroup "
            f"(rootless: {reason}; such a limit needs a cgroup delegated to the user, or "
            "linux.cgroupsPath naming one)")


# ---------------------------------------------------------------------------- files


def read_file(path: str) -> str:
    """Whole text of a cgroupfs file (raises OSError)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def write_raw(path: str, value: str) -> None:
    """One write(2) of ``value`` to an existing cgroupfs file (raises OSError).

    cgroupfs treats every write as one command, so the value goes in a single call
    and the file is neither created nor truncated.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def write_file(directory: str, name: str, value: str, what: str) -> None:
    """Write ``value`` to ``directory/name``; failures name ``what`` (a JSON path) and the file."""
    path = f"{directory}/{name}"
    try:
        write_raw(path, value)
    except OSError as e:
        raise CgroupError(f"{what}: cannot write {value!r} to {path}: {e.strerror}", e.errno) from None


def read_value(directory: str, name: str, what: str) -> str:
    path = f"{directory}/{name}"
    try:
        return read_file(path).strip()
    except OSError as e:
        raise CgroupError(f"{what}: cannot read {path}: {e.strerror}", e.errno) from None


def read_procs(directory: str) -> list[int]:
    """Pids in one cgroup (not its children); a threaded v2 cgroup lists its threads instead."""
    try:
        text = read_file(directory + "/cgroup.procs")
    except OSError as e:
        if e.errno != _errno.EOPNOTSUPP:
            raise
        text = read_file(directory + "/cgroup.threads")
    return [int(line) for line in text.split()]


def tree_pids(directory: str) -> list[int]:
    """Pids in ``directory`` and every cgroup below it; cgroups vanishing meanwhile are skipped."""
    out: list[int] = []
    stack = [directory]
    while stack:
        current = stack.pop()
        try:
            out.extend(read_procs(current))
            with os.scandir(current) as it:
                stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
        except OSError as e:
            if current == directory and e.errno not in (_errno.ENOENT, _errno.ENODEV):
                raise CgroupError(f"cannot list the processes of cgroup {current}: {e.strerror}",
                                  e.errno) from None
            # a sub-cgroup removed while we walk, or the cgroup itself is already gone
    return out


def join_cgroup(directory: str, pid: int) -> None:
    """Move ``pid`` into the cgroup, retrying while a fresh task is still in TASK_NEW (EINVAL)."""
    import time

    path = directory + "/cgroup.procs"
    for attempt in range(5):
        try:
            write_raw(path, str(pid))
            return
        except OSError as e:
            if e.errno == _errno.EINVAL and attempt < 4:
                time.sleep(0.03)
                continue
            raise CgroupError(f"cannot add process {pid} to cgroup {directory}: {e.strerror}",
                              e.errno) from None


def parse_sub_cgroups(args: list[str]) -> dict[str, str]:
    """exec's ``--cgroup`` values (runc's getSubCgroupPaths): one ``PATH`` for every controller
    (the only form on cgroup v2), or ``CONTROLLER[,CONTROLLER...]:PATH`` ones.  Returns
    {controller: path}, "" meaning every controller."""
    paths: dict[str, str] = {}
    for arg in args:
        controllers, sep, path = arg.partition(":")
        if not sep:
            if len(args) != 1:
                raise CgroupError(f"invalid --cgroup argument: {arg} (missing <controller>: prefix)")
            paths[""] = arg
            continue
        for ctrl in controllers.split(","):
            if not ctrl:
                raise CgroupError(f"invalid --cgroup argument: {arg} (empty <controller> prefix)")
            if ctrl in paths:
                raise CgroupError(f"invalid --cgroup argument(s): controller {ctrl} specified multiple times")
            paths[ctrl] = path
    return paths


def sub_dir(base: str, sub: str) -> str:
    """``base``'s sub-cgroup ``sub``; never a path outside ``base``."""
    if not sub:
        return base
    path = os.path.normpath(os.path.join(base, sub.lstrip("/")))
    if path != base and not path.startswith(base + "/"):
        raise CgroupError(f"bad sub cgroup path: {sub}")
    return path


def make_dirs(path: str, created: list[str]) -> list[str]:
    """mkdir -p; returns the directories this call created, top-down (also appended to ``created``)."""
    missing = []
    current = path
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    made = []
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o755)
        except FileExistsError:
            continue  # a concurrent creator won the race; fine
        except OSError as e:
            raise CgroupError(f"cannot create cgroup {d}: {e.strerror}", e.errno) from None
        made.append(d)
        created.append(d)
    return made


def remove_created(created: list[str]) -> None:
    """Best-effort undo of ``make_dirs`` after a failed create (deepest first)."""
    for d in reversed(created):
        try:
            os.rmdir(d)
        except OSError:
            pass
    created.clear()


def _rmdir(path: str, retry: bool) -> int:
    """rmdir with runc's back-off on EBUSY (1 ms doubling, ~1 s in all); returns 0 or the errno."""
    import time

    delay = 0.001
    tries = 10
    while True:
        try:
            os.rmdir(path)
            return 0
        except FileNotFoundError:
            return 0
        except InterruptedError:
            continue
        except OSError as e:
            if retry and tries > 0 and e.errno in (_errno.EBUSY, _errno.ENOTEMPTY):
                time.sleep(delay)
                delay *= 2
                tries -= 1
                continue
            return e.errno or _errno.EIO


def _children(path: str, doing: str) -> list[str]:
    """The sub-cgroups of ``path`` ([] when it is gone); ``doing`` words the error."""
    try:
        with os.scandir(path) as it:
            return [e.path for e in it if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []
    except OSError as e:
        raise CgroupError(f"cannot {doing} cgroup {path}: {e.strerror}", e.errno) from None


def remove_below(path: str) -> None:
    """Remove the sub-cgroups of ``path`` but not ``path`` itself."""
    for child in _children(path, "list"):
        remove_tree(child)


def remove_tree(path: str) -> None:
    """Remove a cgroup and its sub-cgroups, leaf first; a missing cgroup is fine."""
    if _rmdir(path, retry=False) == 0:
        return
    for child in _children(path, "remove"):
        remove_tree(child)
    err = _rmdir(path, retry=True)
    if err:
        raise CgroupError(f"cannot remove cgroup {path}: {os.strerror(err)}", err)


# ---------------------------------------------------------------------------- interface


class Manager:
    """One container's cgroup, on whatever layout the host has.

    Life cycle: ``create(resources)`` -> ``apply(resources)`` -> ``add(pid)`` (``apply``
    and ``add`` may come in either order and be repeated, e.g. by ``update``/``exec``),
    then ``kill_all`` / ``destroy``.  ``to_state()`` is known from construction on, so
    the state store can persist it before anything is created; ``manager_from_state``
    rebuilds a manager that can still ``kill_all`` and ``destroy`` after a crash.
    """

    layout = ""
    # Directories that existed before ``create`` (an existing cgroupsPath): runtime.md's delete
    # must not delete what the container did not create, so ``destroy`` keeps them (not their
    # sub-cgroups).  Persisted in ``to_state``.
    kept: list[str] = []
    # runc's Cgroup.Rootless (``--rootless``, auto: euid != 0): a cgroup we have no permission
    # to create or join is skipped when config.json gives no cgroupsPath (``may_skip``); a
    # limit that needs it is then an error, device rules are ignored; exec's join never fails.
    rootless = False
    devices_ignored = False  # rootless: the device rules could not be applied (and were not)

    def create(self, resources: Resources | None = None) -> None:
        """Make the cgroup directories (parents as needed); ``resources`` only guides set-up."""
        raise NotImplementedError

    def apply(self, resources: Resources | None) -> None:
        """Write ``linux.resources`` (a ``pyrunc.config.Resources`` or None) to the limit files."""
        raise NotImplementedError

    def add(self, pid: int, sub: dict[str, str] | None = None) -> None:
        """Move ``pid`` into the cgroup (every hierarchy), or into existing sub-cgroups of it
        (``sub``, from ``parse_sub_cgroups``: exec's --cgroup)."""
        raise NotImplementedError

    def pids(self) -> list[int]:
        """Every process in the cgroup and its sub-cgroups, sorted; [] when it does not exist."""
        raise NotImplementedError

    def kill_all(self, signum: int) -> None:
        """Send ``signum`` to every process in the cgroup tree (frozen meanwhile, as runc does)."""
        raise NotImplementedError

    def freeze(self) -> None:
        """Freeze every process of the cgroup tree (``pause``); returns once the kernel reports
        the cgroup frozen, else thaws it back and raises CgroupError."""
        raise NotImplementedError

    def thaw(self) -> None:
        """Undo ``freeze`` (``resume``)."""
        raise NotImplementedError

    def frozen(self) -> bool:
        """True when this cgroup itself is frozen (not merely an ancestor); never raises for
        a cgroup or freezer that does not exist (False)."""
        raise NotImplementedError

    def destroy(self) -> None:
        """Remove the cgroup (sub-cgroups first); waits ~1 s for dying processes; idempotent."""
        raise NotImplementedError

    def exists(self) -> bool:
        raise NotImplementedError

    def to_state(self) -> dict[str, object]:
        raise NotImplementedError

    def path(self, controller: str = "") -> str:
        """Directory of the cgroup for ``controller`` ("" = the unified one; v2 ignores the name)."""
        raise NotImplementedError

    def stats(self) -> dict:
        """cpu, cpuset, memory, pids, blkio and hugetlb statistics as a plain dict, keyed as
        runc's ``events`` JSON (see ``stats.py``); unreadable files leave zeros."""
        raise NotImplementedError

    def oom_kills(self) -> int | None:
        """How many processes the OOM killer has killed in the cgroup (a counter that only
        grows); None when the memory cgroup does not exist (any more)."""
        raise NotImplementedError


def signal_pids(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
