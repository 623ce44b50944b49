"""Thin ctypes bindings for the Linux system calls the standard library lacks.

Nothing here knows about containers.  Every function raises ``OSError`` with the
kernel's errno (and the path, where there is one), like the ``os`` module does.
Python 3.11 has no ``os.unshare``/``os.setns`` (3.12 adds them), so they are here too.
"""

from __future__ import annotations

import ctypes
import errno
import os

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

# Syscalls numbered 424 and up are the same on every architecture.
_MACHINE = os.uname().machine
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217, "riscv64": 41}.get(_MACHINE, -1)
_PIDFD_SEND_SIGNAL = 424
_OPEN_TREE = 428
_MOVE_MOUNT = 429
_PIDFD_OPEN = 434
_CLOSE_RANGE = 436
_OPENAT2 = 437
_OPENAT2_RETRIES = 128
_MOUNT_SETATTR = 442

# clone/unshare flags
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

NAMESPACE_FLAGS = {
    "pid": CLONE_NEWPID, "network": CLONE_NEWNET, "mount": CLONE_NEWNS, "ipc": CLONE_NEWIPC,
    "uts": CLONE_NEWUTS, "user": CLONE_NEWUSER, "cgroup": CLONE_NEWCGROUP, "time": CLONE_NEWTIME,
}
# The names of the /proc/PID/ns/* links for each spec namespace type.
NAMESPACE_PROC_NAMES = {
    "pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts",
    "user": "user", "cgroup": "cgroup", "time": "time",
}

# mount(2) flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_I_VERSION = 1 << 23
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

# mount_setattr(2) attributes
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_IDMAP = 0x100000
MOUNT_ATTR_NOSYMFOLLOW = 0x200000
AT_RECURSIVE = 0x8000
AT_EMPTY_PATH = 0x1000
AT_SYMLINK_NOFOLLOW = 0x100
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40

# openat2(2) resolve flags
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# prctl(2)
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

CLOSE_RANGE_CLOEXEC = 4
MFD_EXEC = 0x10


def _check(ret: int, path: str | None = None) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path) if path else OSError(err, os.strerror(err))
    return ret


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)), target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), target)


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_syscall(_PIVOT_ROOT, _b(new_root), _b(put_old)), new_root)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags))


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype))


def sethostname(name: str) -> None:
    b = name.encode()
    _check(_libc.sethostname(b, len(b)))


def setdomainname(name: str) -> None:
    b = name.encode()
    _check(_libc.setdomainname(b, len(b)))


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                              ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)))


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """openat2(2).  With RESOLVE_IN_ROOT/BENEATH the kernel answers EAGAIN when any mount or
    rename on the system raced a ".." step: that is a retry, not an error (as libpathrs does)."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    for _ in range(_OPENAT2_RETRIES):
        ret = _syscall(_OPENAT2, dirfd, _b(path), ctypes.byref(how), ctypes.sizeof(how))
        if ret >= 0 or ctypes.get_errno() != errno.EAGAIN:
            break
    return _check(ret, path)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int = 0, attr_clr: int = 0,
                  propagation: int = 0, userns_fd: int = 0) -> None:
    attr = _MountAttr(attr_set, attr_clr, propagation, userns_fd)
    _check(_syscall(_MOUNT_SETATTR, dirfd, _b(path), flags, ctypes.byref(attr), ctypes.sizeof(attr)), path)


def open_tree(dirfd: int, path: str, flags: int) -> int:
    return _check(_syscall(_OPEN_TREE, dirfd, _b(path), ctypes.c_uint(flags)), path)


def move_mount(from_dirfd: int, from_path: str, to_dirfd: int, to_path: str, flags: int) -> None:
    _check(_syscall(_MOVE_MOUNT, from_dirfd, _b(from_path), to_dirfd, _b(to_path), ctypes.c_uint(flags)),
           to_path)


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    _check(_syscall(_CLOSE_RANGE, ctypes.c_uint(first), ctypes.c_uint(last), ctypes.c_uint(flags)))


def pidfd_open(pid: int) -> int:
    return _check(_syscall(_PIDFD_OPEN, pid, 0))


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    _check(_syscall(_PIDFD_SEND_SIGNAL, pidfd, sig, None, 0))


SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def interface_up(name: str) -> None:
    """Bring a network interface up with the SIOCSIFFLAGS ioctl (no netlink library needed)."""
    import _socket
    import fcntl
    import struct

    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        req = struct.pack("16sh22x", name.encode(), 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sh22x", name.encode(), flags | IFF_UP))
    finally:
        sock.close()


_KEYCTL = {"x86_64": 250, "aarch64": 219, "ppc64le": 312, "s390x": 280, "riscv64": 219}.get(_MACHINE, -1)
KEYCTL_DESCRIBE = 6
KEYCTL_SETPERM = 5
KEYCTL_JOIN_SESSION_KEYRING = 1
KEY_USR_SEARCH = 0x00080000
KEY_OTH_SEARCH = 0x00000008


def join_session_keyring(name: str, other_search: bool = False) -> int:
    """Join the session keyring ``name``, made new if there is none (runc's default: no keys
    leak from the host's session), made searchable as runc does: by its user, or by others
    (``other_search``) in a user namespace, so that exec can join it too."""
    key = _check(_syscall(_KEYCTL, KEYCTL_JOIN_SESSION_KEYRING, _b(name)))
    buf = ctypes.create_string_buffer(512)
    _check(_syscall(_KEYCTL, KEYCTL_DESCRIBE, key, buf, ctypes.sizeof(buf)))
    perm = int(buf.value.split(b";")[3], 16)
    want = perm | (KEY_OTH_SEARCH if other_search else KEY_USR_SEARCH)
    if want != perm:
        _check(_syscall(_KEYCTL, KEYCTL_SETPERM, key, ctypes.c_uint32(want)))
    return key


def sealed_executable(path: str) -> int:
    """An fd to fexecve ``path`` from so that the process's /proc/PID/exe is no writable way back
    to the file (CVE-2019-5736: a container that reaches the runtime's exe through /proc must not
    be able to rewrite it): a read-only bind of just that file, detached from every mount table
    (nothing for systemd and the like to see); without the new mount API, or the right to use
    it, a sealed in-memory copy, as crun and youki make."""
    try:
        fd = open_tree(-100, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)  # -100: AT_FDCWD
    except OSError:
        return _sealed_copy(path)
    try:
        mount_setattr(fd, "", AT_EMPTY_PATH, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
    except OSError:
        os.close(fd)
        return _sealed_copy(path)
    return fd


def _sealed_copy(path: str) -> int:
    """``path`` copied into a memfd sealed against any change (6-7 MB for CPython: the fallback)."""
    import fcntl

    src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
        try:  # MFD_EXEC: executable even where vm.memfd_noexec makes memfds noexec by default
            fd = os.memfd_create(os.path.basename(path), flags | MFD_EXEC)
        except OSError:  # a kernel before 6.3 knows no MFD_EXEC
            fd = os.memfd_create(os.path.basename(path), flags)
        size, off = os.fstat(src).st_size, 0
        while off < size:
            n = os.sendfile(fd, src, off, size - off)
            if n == 0:  # shorter than it was a moment ago
                break
            off += n
    finally:
        os.close(src)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    return fd


def idmapped_tree(source: str, userns_fd: int, recursive: bool) -> int:
    """A detached clone of ``source`` (recursive: with its submounts), idmapped through the
    user namespace ``userns_fd``; the caller moves it into place with move_mount."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    tree = open_tree(-100, source, flags)  # -100: AT_FDCWD
    try:
        mount_setattr(tree, "", AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0),
                      attr_set=MOUNT_ATTR_IDMAP, userns_fd=userns_fd)
    except BaseException:
        os.close(tree)
        raise
    return tree
