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
    joined = [ns for ns in linux.namespaces if ns.path]  # type: ignore[attr-defined]
    # Open every path before joining anything: joining the mount namespace changes what paths mean.
    fds = [(ns.type, os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)) for ns in joined]
    try:
        for ns_type, fd in sorted(fds, key=lambda t: t[0] != "user"):
            try:
                L.setns(fd, L.NAMESPACE_FLAGS[ns_type])
            except OSError as e:
                raise OSError(e.errno, f"joining the {ns_type} namespace: {e.strerror}") from None
    finally:
        for _, fd in fds:
            os.close(fd)

    new = [ns.type for ns in linux.namespaces if not ns.path]  # type: ignore[attr-defined]
    if "user" in new:
        L.unshare(L.CLONE_NEWUSER)
        chan.send(USERMAP, pid=os.getpid())
        chan.expect(USERMAP_DONE)
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    flags = 0
    for ns_type in new:
        if ns_type != "user":
            flags |= L.NAMESPACE_FLAGS[ns_type]
    if flags:
        L.unshare(flags)
    offsets = linux.time_offsets  # type: ignore[attr-defined]
    if offsets:
        # Must be written after unshare(CLONE_NEWTIME) and before the first child exists.
        with open("/proc/self/timens_offsets", "w") as f:
            for clock, (secs, nanos) in offsets.items():
                f.write(f"{TIME_CLOCKS[clock]} {secs} {nanos}\n")


def fork_init(chan: Channel) -> Message:
    """Fork the container's init (PID 1 of a new PID namespace); stage 1 reports its pid and exits.

    Returns, in the child only, the parent's PID_DONE message (which carries the hooks' state)."""
    pid = os.fork()
    if pid:
        chan.send(PID, pid=pid)
        os._exit(0)
    return chan.expect(PID_DONE)
