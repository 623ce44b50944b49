"""The container's terminal, made by the init stage inside the container (runc's setupConsole).

The pty comes from the container's own devpts (its /dev/ptmx, resolved inside the root and
checked to be the ptmx device), so that it belongs to the container, not to the host.  The
peer is taken with TIOCGPTPEER rather than by opening /dev/pts/N by name, and /dev/console
is bound from that fd onto a file opened without following symlinks: no path the container
controls decides what gets mounted where (the /dev/console races of CVE-2025-52565).  The
master goes to the runtime over the init channel; the container never sees the host's
console socket.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct

from .. import linux as L

TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441
TIOCSWINSZ = 0x5414
TIOCSCTTY = 0x540E
PTMX = os.makedev(5, 2)
_IN_ROOT = L.RESOLVE_IN_ROOT | L.RESOLVE_NO_MAGICLINKS


class Pty:
    __slots__ = ("master", "slave")

    def __init__(self, master: int, slave: int) -> None:
        self.master = master
        self.slave = slave

    def close_master(self) -> None:
        if self.master >= 0:
            os.close(self.master)
            self.master = -1


def open_pty(root_fd: int, size: tuple[int, int] | None, owner_uid: int) -> Pty:
    """A new pty from the container's /dev/ptmx (resolved in ``root_fd``); the peer is owned by
    ``owner_uid`` (the process's user, so that it can use its terminal; runc does the same)."""
    try:
        master = L.openat2(root_fd, "/dev/ptmx", os.O_RDWR | os.O_NOCTTY, 0, _IN_ROOT)
    except OSError as e:
        raise OSError(e.errno, f"process.terminal: cannot open the container's /dev/ptmx: {e.strerror}") from None
    try:
        st = os.fstat(master)
        if not stat.S_ISCHR(st.st_mode) or st.st_rdev != PTMX:
            raise OSError(errno.EPERM, "process.terminal: /dev/ptmx in the container is not the ptmx device")
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except BaseException:
        os.close(master)
        raise
    pty = Pty(master, slave)
    if size is not None and size[0] and size[1]:
        set_size(master, size[0], size[1])
    try:
        if os.fstat(slave).st_uid != owner_uid:
            os.fchown(slave, owner_uid, -1)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EPERM):  # uid not mapped: leave it as the kernel made it
            raise
    return pty


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def bind_console(root_fd: int, slave: int, may_create: bool) -> None:
    """Bind the pty over the container's /dev/console (a file created for it when ``may_create``:
    not in a /dev bound from the host, which we never change)."""
    flags = os.O_PATH | os.O_NOFOLLOW
    try:
        target = L.openat2(root_fd, "/dev/console", flags, 0, _IN_ROOT | L.RESOLVE_NO_SYMLINKS)
    except FileNotFoundError:
        if not may_create:
            return
        dev = L.openat2(root_fd, "/dev", os.O_PATH | os.O_DIRECTORY, 0, _IN_ROOT | L.RESOLVE_NO_SYMLINKS)
        try:
            os.close(os.open("console", os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o600, dir_fd=dev))
            target = L.openat2(dev, "console", flags, 0, L.RESOLVE_BENEATH | L.RESOLVE_NO_SYMLINKS)
        finally:
            os.close(dev)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(e.errno, "process.terminal: /dev/console in the container is a symlink") from None
        raise
    try:
        mode = os.fstat(target).st_mode
        if stat.S_ISLNK(mode):  # O_PATH|O_NOFOLLOW opens a symlink itself
            raise OSError(errno.ELOOP, "process.terminal: /dev/console in the container is a symlink")
        if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):
            raise OSError(errno.EPERM, "process.terminal: /dev/console in the container is neither a file "
                                       "nor a device")
        L.mount(f"/proc/self/fd/{slave}", f"/proc/self/fd/{target}", None, L.MS_BIND)
    finally:
        os.close(target)


def make_controlling(pty: Pty) -> None:
    """The peer becomes our stdin, stdout, stderr and controlling terminal (we lead a session)."""
    for fd in (0, 1, 2):
        os.dup2(pty.slave, fd)
    if pty.slave > 2:
        os.close(pty.slave)
    pty.slave = 0
    fcntl.ioctl(0, TIOCSCTTY, 0)
