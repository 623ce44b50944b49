"""Stage 1 of the init: join or create the container's namespaces, then fork PID 1.

unshare(CLONE_NEWUSER) and setns into a user namespace need a single-threaded
caller: CPython is one, as long as nothing here starts a thread.
"""

from __future__ import annotations

import os

from .. import linux as L
from ..channel import PID, PID_DONE, USERMAP, USERMAP_DONE, Channel, Message

TIME_CLOCKS = {"monotonic": "monotonic", "boottime": "boottime"}


def enter(chan: Channel, linux: object) -> None:
    """Join namespaces given by path (user first), then unshare the new ones."""
    joined = [(i, ns) for i, ns in enumerate(linux.namespaces) if ns.path]  # type: ignore[attr-defined]
    # Open every path before joining anything: joining the mount namespace changes what paths mean.
    fds: list[tuple[str, int]] = []
    try:
        for i, ns in joined:
            fds.append((ns.type, _open_namespace(i, ns)))
        _setns_all(sorted(fds, key=lambda t: t[0] != "user"), "the")
    finally:
        for _, fd in fds:
            os.close(fd)

    new = [ns.type for ns in linux.namespaces if not ns.path]  # type: ignore[attr-defined]
    if "user" in new:
        rootless = os.geteuid() != 0  # still the runtime's own uid
        L.unshare(L.CLONE_NEWUSER)
        # A rootless runtime only: dumpable for the while (runc's nsexec does the same), else our
        # /proc files belong to the host's root and it could not write our uid_map and gid_map.
        # The host's root needs no such window: nothing else runs in this namespace yet anyway.
        if rootless:
            L.prctl(L.PR_SET_DUMPABLE, 1)
        chan.send(USERMAP, pid=os.getpid())
        chan.expect(USERMAP_DONE)
        if rootless:
            L.prctl(L.PR_SET_DUMPABLE, 0)
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    flags = 0
    for ns_type in new:
        if ns_type != "user":
            flags |= L.NAMESPACE_FLAGS[ns_type]
    if flags:
        try:
            L.unshare(flags)
        except OSError as e:
            kinds = ", ".join(t for t in new if t != "user")
            raise OSError(e.errno, f"creating the new namespaces ({kinds}): {e.strerror}") from None
    offsets = linux.time_offsets  # type: ignore[attr-defined]
    if offsets:
        # Must be written after unshare(CLONE_NEWTIME) and before the first child exists;
        # one write per clock, so that a refusal names its clock.
        for clock, (secs, nanos) in offsets.items():
            try:
                with open("/proc/self/timens_offsets", "w") as f:
                    f.write(f"{TIME_CLOCKS[clock]} {secs} {nanos}\n")
            except OSError as e:
                raise OSError(e.errno, f"linux.timeOffsets.{clock} ({secs}s {nanos}ns): {e.strerror}") from None


def _setns_all(fds: list[tuple[str, int]], whose: str) -> None:
    """Join each (type, fd) in order; the caller puts the user namespace first."""
    for ns_type, fd in fds:
        try:
            L.setns(fd, L.NAMESPACE_FLAGS[ns_type])
        except OSError as e:
            raise OSError(e.errno, f"joining {whose} {ns_type} namespace: {e.strerror}") from None
        if ns_type == "user":
            # Our host uid/gid mean nothing in there (runc's nsexec does the same): become its
            # root, or files we create on the container's own mounts could not be owned.
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)


def _open_namespace(index: int, ns: object) -> int:
    """Open ``linux.namespaces[index].path``, insisting that it is a namespace of the right type."""
    where = f"linux.namespaces[{index}].path"
    path: str = ns.path  # type: ignore[attr-defined]
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise OSError(e.errno, f"{where}: cannot open {path}: {e.strerror}") from None
    want = L.NAMESPACE_PROC_NAMES[ns.type]  # type: ignore[attr-defined]
    try:
        got = os.readlink(f"/proc/self/fd/{fd}")  # e.g. "net:[4026532201]"
    except OSError:
        got = ""
    if ":[" not in got:
        # a bind mount of a namespace (dockerd's exec-root/netns/default, ip netns files): its fd
        # links to the mount's path, not "net:[...]"; ask the kernel for its type
        got = _bound_namespace_type(fd)
    if not got.startswith(want + ":["):
        os.close(fd)
        kind = f"a {got.split(':[')[0]} namespace" if ":[" in got else "not a namespace"
        raise OSError(22, f"{where}: {path} is {kind}, not a {ns.type} namespace")  # type: ignore[attr-defined]
    return fd


def _bound_namespace_type(fd: int) -> str:
    """"<proc name>:[]" of the namespace open on ``fd`` (ioctl NS_GET_NSTYPE), "" if it is none."""
    import fcntl

    try:
        flag = fcntl.ioctl(fd, 0xB703)  # NS_GET_NSTYPE: the namespace's CLONE_NEW* flag
    except OSError:
        return ""
    for ns_type, value in L.NAMESPACE_FLAGS.items():
        if value == flag:
            return L.NAMESPACE_PROC_NAMES[ns_type] + ":[]"
    return ""


def fork_init(chan: Channel) -> Message:
    """Fork the container's init (PID 1 of a new PID namespace); stage 1 reports its pid and exits.

    Returns, in the child only, the parent's PID_DONE message (which carries the hooks' state)."""
    pid = os.fork()
    if pid:
        chan.send(PID, pid=pid)
        os._exit(0)
    return chan.expect(PID_DONE)


def join(init_pid: int, types: list[str]) -> None:
    """exec: join the namespaces of the container's init (user first, mount last), then take
    its root as ours.  The pid (and time) namespace applies to our children: fork after this."""
    order = sorted(types, key=lambda t: (t != "user", t == "mount"))
    fds: list[tuple[str, int]] = []
    root = -1
    try:
        # Everything is opened before anything is joined: the mount namespace changes what paths mean.
        for ns_type in order:
            name = L.NAMESPACE_PROC_NAMES[ns_type]
            fd = os.open(f"/proc/{init_pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            mine, theirs = os.stat(f"/proc/self/ns/{name}"), os.fstat(fd)
            if (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino):
                os.close(fd)  # already ours (setns into one's own user namespace is EINVAL)
                continue
            fds.append((ns_type, fd))
        root = os.open(f"/proc/{init_pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        _setns_all(fds, "the container's")
        # The init's root, not the namespace's: right after pivot_root and with --no-pivot alike.
        os.fchdir(root)
        os.chroot(".")
        os.chdir("/")
    finally:
        for _, fd in fds:
            os.close(fd)
        if root >= 0:
            os.close(root)
