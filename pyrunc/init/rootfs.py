"""The container's root file system: mounts, /dev, masked and read-only paths, pivot_root.

Runs in the container init, inside its new mount namespace, *before* pivot_root,
while the host's /proc is still at /proc.  Every path inside the container is
opened with openat2(RESOLVE_IN_ROOT) relative to the rootfs, so symlinks planted
in the rootfs resolve inside it and never out to the host; the mount then targets
``/proc/self/fd/N`` of that opened file rather than a path that could be swapped.
"""

from __future__ import annotations

import errno
import os
import stat

from .. import linux as L
from ..config import DEFAULT_DEVICES
from ..errors import ConfigError, NotSupportedError
from ..lsm import with_mount_label

IN_ROOT = L.RESOLVE_IN_ROOT | L.RESOLVE_NO_MAGICLINKS
# File systems made for the container that take SELinux's context= (runc labels these)
_LABELLED = ("tmpfs", "devpts", "mqueue")

# option -> flag set by it, for mount(2)
_SET_FLAGS = {
    "ro": L.MS_RDONLY, "nosuid": L.MS_NOSUID, "nodev": L.MS_NODEV, "noexec": L.MS_NOEXEC,
    "sync": L.MS_SYNCHRONOUS, "remount": L.MS_REMOUNT, "mand": L.MS_MANDLOCK,
    "dirsync": L.MS_DIRSYNC, "noatime": L.MS_NOATIME, "nodiratime": L.MS_NODIRATIME,
    "bind": L.MS_BIND, "rbind": L.MS_BIND | L.MS_REC, "relatime": L.MS_RELATIME,
    "strictatime": L.MS_STRICTATIME, "lazytime": L.MS_LAZYTIME, "silent": L.MS_SILENT,
    "iversion": L.MS_I_VERSION, "nosymfollow": L.MS_NOSYMFOLLOW,
    "defaults": 0,  # a MUST of config.md's option table: mount(8)'s no-op, never data for the fs
}
# option -> flag cleared by it
_CLEAR_FLAGS = {
    "rw": L.MS_RDONLY, "suid": L.MS_NOSUID, "dev": L.MS_NODEV, "exec": L.MS_NOEXEC,
    "async": L.MS_SYNCHRONOUS, "nomand": L.MS_MANDLOCK, "atime": L.MS_NOATIME,
    "diratime": L.MS_NODIRATIME, "norelatime": L.MS_RELATIME, "nostrictatime": L.MS_STRICTATIME,
    "nolazytime": L.MS_LAZYTIME, "loud": L.MS_SILENT, "noiversion": L.MS_I_VERSION,
    "symfollow": L.MS_NOSYMFOLLOW,
}
PROPAGATION = {
    "private": L.MS_PRIVATE, "rprivate": L.MS_PRIVATE | L.MS_REC,
    "shared": L.MS_SHARED, "rshared": L.MS_SHARED | L.MS_REC,
    "slave": L.MS_SLAVE, "rslave": L.MS_SLAVE | L.MS_REC,
    "unbindable": L.MS_UNBINDABLE, "runbindable": L.MS_UNBINDABLE | L.MS_REC,
}
# recursive mount attributes (mount_setattr with AT_RECURSIVE): option -> (set, clear)
_RECURSIVE = {
    "rro": (L.MOUNT_ATTR_RDONLY, 0), "rrw": (0, L.MOUNT_ATTR_RDONLY),
    "rnosuid": (L.MOUNT_ATTR_NOSUID, 0), "rsuid": (0, L.MOUNT_ATTR_NOSUID),
    "rnodev": (L.MOUNT_ATTR_NODEV, 0), "rdev": (0, L.MOUNT_ATTR_NODEV),
    "rnoexec": (L.MOUNT_ATTR_NOEXEC, 0), "rexec": (0, L.MOUNT_ATTR_NOEXEC),
    "rnodiratime": (L.MOUNT_ATTR_NODIRATIME, 0), "rdiratime": (0, L.MOUNT_ATTR_NODIRATIME),
    "rrelatime": (L.MOUNT_ATTR_RELATIME, L.MOUNT_ATTR__ATIME),
    "rnorelatime": (0, L.MOUNT_ATTR__ATIME),
    "rnoatime": (L.MOUNT_ATTR_NOATIME, L.MOUNT_ATTR__ATIME),
    "ratime": (0, L.MOUNT_ATTR__ATIME),
    "rstrictatime": (L.MOUNT_ATTR_STRICTATIME, L.MOUNT_ATTR__ATIME),
    "rnostrictatime": (0, L.MOUNT_ATTR__ATIME),
    "rnosymfollow": (L.MOUNT_ATTR_NOSYMFOLLOW, 0), "rsymfollow": (0, L.MOUNT_ATTR_NOSYMFOLLOW),
}
# statvfs f_flag bits -> the mount flag that keeps them on a remount
_STATVFS_FLAGS = (
    (os.ST_RDONLY, L.MS_RDONLY), (os.ST_NOSUID, L.MS_NOSUID), (os.ST_NODEV, L.MS_NODEV),
    (os.ST_NOEXEC, L.MS_NOEXEC), (os.ST_NOATIME, L.MS_NOATIME),
    (os.ST_NODIRATIME, L.MS_NODIRATIME), (os.ST_RELATIME, L.MS_RELATIME),
)

DEV_SYMLINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"))


class MountOptions:
    __slots__ = ("flags", "propagation", "rec_set", "rec_clear", "data", "idmap", "recursive_idmap", "copyup")

    def __init__(self, options: list[str]) -> None:
        self.flags = 0
        self.propagation = 0
        self.rec_set = self.rec_clear = 0
        self.idmap = self.recursive_idmap = self.copyup = False
        data = []
        for opt in options:
            if opt in _SET_FLAGS:
                self.flags |= _SET_FLAGS[opt]
            elif opt in _CLEAR_FLAGS:
                self.flags &= ~_CLEAR_FLAGS[opt]
            elif opt in PROPAGATION:
                self.propagation = PROPAGATION[opt]
            elif opt in _RECURSIVE:
                s, c = _RECURSIVE[opt]
                self.rec_set, self.rec_clear = (self.rec_set | s) & ~c, (self.rec_clear | c) & ~s
            elif opt in ("idmap", "ridmap"):
                self.idmap, self.recursive_idmap = True, opt == "ridmap"
            elif opt == "tmpcopyup":  # runc's extension (podman --read-only): see _copy_up
                self.copyup = True
            else:
                data.append(opt)
        self.data = ",".join(data)


def clean_path(path: str) -> str:
    """Lexically clean an absolute path ("//dev/" -> "/dev"; normpath alone keeps "//")."""
    return os.path.normpath("/" + path.lstrip("/"))


def is_bind(m: object) -> bool:
    return m.type == "bind" or bool(MountOptions(m.options).flags & L.MS_BIND)  # type: ignore[attr-defined]


def dev_is_bound(mounts: list) -> bool:
    """Is the container's /dev a bind mount (of a host directory we must not change)?"""
    return any(is_bind(m) for m in mounts if clean_path(m.destination) == "/dev")


def fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def open_in_root(root_fd: int, path: str, flags: int = os.O_PATH) -> int:
    return L.openat2(root_fd, path, flags, 0, IN_ROOT)


def make_target(root_fd: int, path: str, directory: bool) -> int:
    """Open ``path`` inside the root, creating it (and its parents) if missing; return an O_PATH fd."""
    try:
        return open_in_root(root_fd, path)
    except FileNotFoundError:
        pass
    parent, name = os.path.split(os.path.normpath(path))
    parent_fd = make_target(root_fd, parent, True) if parent != "/" else os.dup(root_fd)
    try:
        if directory:
            try:
                os.mkdir(name, 0o755, dir_fd=parent_fd)
            except FileExistsError:
                pass
        else:
            try:
                os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 0o644, dir_fd=parent_fd))
            except FileExistsError:
                pass
    finally:
        os.close(parent_fd)
    return open_in_root(root_fd, path)


def current_flags(fd: int) -> int:
    """The mount flags the mount under fd has now (what a remount must keep when it is locked)."""
    f = os.statvfs(fd_path(fd)).f_flag
    return sum(ms for st, ms in _STATVFS_FLAGS if f & st)


class RootfsBuilder:
    """Builds the container's mount tree under ``rootfs``; see module docstring."""

    def __init__(self, rootfs: str, bundle: str, in_user_ns: bool, cgroup_ns: bool) -> None:
        self.rootfs = rootfs
        self.bundle = bundle
        self.in_user_ns = in_user_ns
        self.cgroup_ns = cgroup_ns
        self.root_fd = -1
        self.mount_label = ""  # linux.mountLabel: SELinux context of the file systems we make
        # (mount, host source, recursive) -> fd of a detached idmapped tree, made by the runtime
        self.request_mount_fd: object = None

    # -- the steps, in the order init calls them -------------------------------------------

    def prepare(self, propagation: str) -> None:
        """Stop our mounts from propagating to the host, and make the rootfs a mount point."""
        L.mount(None, "/", None, L.MS_REC | L.MS_SLAVE)
        L.mount(self.rootfs, self.rootfs, None, L.MS_BIND | L.MS_REC)
        self.root_fd = os.open(self.rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.propagation = propagation

    def mount_all(self, mounts: list) -> None:
        if not any(clean_path(m.destination) == "/dev" for m in mounts):
            # no /dev in the config: a tmpfs of ours, first, so that /dev/pts and the like
            # land on it rather than under it (and no node is ever made on the rootfs's disk)
            fd = make_target(self.root_fd, "/dev", True)
            try:
                L.mount("tmpfs", fd_path(fd), "tmpfs", L.MS_NOSUID | L.MS_STRICTATIME,
                        with_mount_label("mode=755,size=65536k", self.mount_label))
            finally:
                os.close(fd)
        for i, m in enumerate(mounts):
            if clean_path(m.destination) == "/dev" and is_bind(m) and _same_file(
                    os.path.join(self.bundle, m.source), "/dev"):
                # config.py refuses "/dev" by name; this also catches "//dev", "/dev/." and links to it
                raise ConfigError([f"mounts[{i}]: bind-mounting the host's /dev would hand the container "
                                   "the host's devices; list the devices it needs in linux.devices"])
            try:
                self.mount_one(m)
            except OSError as e:
                raise OSError(e.errno, f"mounts[{i}] ({m.type or 'bind'} on {m.destination}): "
                                       f"{e.strerror}") from None

    def mount_one(self, m: object) -> None:
        opts = MountOptions(m.options)  # type: ignore[attr-defined]
        bind = m.type == "bind" or bool(opts.flags & L.MS_BIND)  # type: ignore[attr-defined]
        if opts.idmap and not bind:
            raise NotSupportedError(f"mount of {m.destination}: idmap is supported on bind mounts only")  # type: ignore[attr-defined]
        if opts.copyup and (bind or m.type != "tmpfs"):  # type: ignore[attr-defined]
            raise NotSupportedError(f"mount of {m.destination}: tmpcopyup is for tmpfs mounts only")  # type: ignore[attr-defined]
        if opts.idmap:
            self._idmapped_bind(m, opts)
        elif bind:
            self._bind(m, opts)
        elif m.type == "cgroup":  # type: ignore[attr-defined]
            self._cgroup(m, opts)
        else:
            fd = make_target(self.root_fd, m.destination, True)  # type: ignore[attr-defined]
            data = opts.data
            if m.type in _LABELLED:  # type: ignore[attr-defined]
                data = with_mount_label(data, self.mount_label)
            # tmpcopyup: the directory the tmpfs covers, opened before it is covered
            below = os.open(fd_path(fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if opts.copyup else -1
            try:
                L.mount(m.source or m.type, fd_path(fd), m.type, opts.flags, data or None)  # type: ignore[attr-defined]
                if below >= 0:
                    top = open_in_root(self.root_fd, m.destination, os.O_RDONLY | os.O_DIRECTORY)  # type: ignore[attr-defined]
                    try:
                        _copy_up(below, top)
                    finally:
                        os.close(top)
            finally:
                os.close(fd)
                if below >= 0:
                    os.close(below)
        self._after_mount(m.destination, opts)  # type: ignore[attr-defined]

    def _bind(self, m: object, opts: MountOptions) -> None:
        source = os.path.join(self.bundle, m.source)  # type: ignore[attr-defined]  # absolute stays absolute
        st = os.stat(source)
        fd = make_target(self.root_fd, m.destination, stat.S_ISDIR(st.st_mode))  # type: ignore[attr-defined]
        try:
            L.mount(source, fd_path(fd), None, L.MS_BIND | (opts.flags & L.MS_REC))
        finally:
            os.close(fd)
        self._bind_flags(m.destination, opts)  # type: ignore[attr-defined]

    def _idmapped_bind(self, m: object, opts: MountOptions) -> None:
        """An idmapped bind: only the runtime, in the host's user namespace, may create the
        idmapped tree (open_tree + mount_setattr); it sends us the detached mount, we move it in."""
        if self.request_mount_fd is None:
            raise NotSupportedError("idmapped mounts need the runtime's help, which is not available here")
        source = os.path.join(self.bundle, m.source)  # type: ignore[attr-defined]
        st = os.stat(source)
        tree = self.request_mount_fd(m, source, opts.recursive_idmap or bool(opts.flags & L.MS_REC))  # type: ignore[operator]
        try:
            fd = make_target(self.root_fd, m.destination, stat.S_ISDIR(st.st_mode))  # type: ignore[attr-defined]
            try:
                L.move_mount(tree, "", fd, "", L.MOVE_MOUNT_F_EMPTY_PATH | L.MOVE_MOUNT_T_EMPTY_PATH)
            finally:
                os.close(fd)
        finally:
            os.close(tree)
        self._bind_flags(m.destination, opts)  # type: ignore[attr-defined]

    def _bind_flags(self, path: str, opts: MountOptions) -> None:
        """A bind mount takes ro/nosuid/nodev/noexec/... only through a remount."""
        extra = opts.flags & ~(L.MS_BIND | L.MS_REC | L.MS_REMOUNT)
        if extra:
            self._remount(path, extra)

    def _remount(self, path: str, flags: int) -> None:
        fd = open_in_root(self.root_fd, path)
        try:
            if self.in_user_ns:  # flags of a mount made in another user ns are locked
                flags |= current_flags(fd) & ~L.MS_RDONLY
            L.mount(None, fd_path(fd), None, L.MS_BIND | L.MS_REMOUNT | flags)
        finally:
            os.close(fd)

    def _after_mount(self, path: str, opts: MountOptions) -> None:
        if not (opts.propagation or opts.rec_set or opts.rec_clear):
            return
        fd = open_in_root(self.root_fd, path)
        try:
            if opts.propagation:
                L.mount(None, fd_path(fd), None, opts.propagation)
            if opts.rec_set or opts.rec_clear:
                L.mount_setattr(fd, "", L.AT_EMPTY_PATH | L.AT_RECURSIVE, opts.rec_set, opts.rec_clear)
        finally:
            os.close(fd)

    def _cgroup(self, m: object, opts: MountOptions) -> None:
        """A ``cgroup`` mount: cgroup2 itself, or a tmpfs holding each v1 hierarchy."""
        hierarchies = host_cgroup_hierarchies()
        own = own_cgroups()
        flags = opts.flags | L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC
        dest = m.destination  # type: ignore[attr-defined]
        if "" in hierarchies and len(hierarchies) == 1:  # pure cgroup v2
            self._cgroup_hierarchy(dest, hierarchies[""], "", own.get("", "/"), flags)
            return
        fd = make_target(self.root_fd, dest, True)
        try:
            L.mount("tmpfs", fd_path(fd), "tmpfs", L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC, "mode=755")
        finally:
            os.close(fd)
        for key, host_dir in hierarchies.items():
            name = os.path.basename(host_dir)
            self._cgroup_hierarchy(os.path.join(dest, name), host_dir, key, own.get(key, "/"), flags)
            for alias in key.split(","):  # cpu,cpuacct -> cpu and cpuacct links, like the host has
                if alias != name and "=" not in alias and key != "":
                    tfd = open_in_root(self.root_fd, dest)
                    try:
                        os.symlink(name, alias, dir_fd=tfd)
                    except FileExistsError:
                        pass
                    finally:
                        os.close(tfd)
        if flags & L.MS_RDONLY:
            self._remount(dest, L.MS_RDONLY | L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC)

    def _cgroup_hierarchy(self, dest: str, host_dir: str, key: str, own_path: str, flags: int) -> None:
        fd = make_target(self.root_fd, dest, True)
        try:
            if self.cgroup_ns:  # the namespace makes our cgroup the root of a fresh mount
                if key == "":
                    L.mount("cgroup2", fd_path(fd), "cgroup2", flags)
                else:
                    L.mount("cgroup", fd_path(fd), "cgroup", flags, key)
            else:  # no cgroup ns: show only our own cgroup, bound from the host's mount
                src = os.path.join(host_dir, own_path.lstrip("/"))
                L.mount(src, fd_path(fd), None, L.MS_BIND | L.MS_REC)
        finally:
            os.close(fd)
        if not self.cgroup_ns:  # fd is the directory under the bind: reopen to reach the mount itself
            self._remount(dest, flags)

    def setup_dev(self, mounts: list, devices: list) -> None:
        """A fresh /dev (the config's or, without one, ours from mount_all): the spec's
        default devices, linux.devices, and the usual links.

        A /dev bind-mounted by the config is used as it is, as runc does: creating nodes
        (and unlinking what is there first) would change the host directory behind it."""
        if dev_is_bound(mounts):
            return
        old_umask = os.umask(0)
        configured = {clean_path(d.path) for d in devices}
        try:
            for name, major, minor in DEFAULT_DEVICES:
                if f"/dev/{name}" not in configured:  # linux.devices' own entry wins, as in runc
                    self.make_device(f"/dev/{name}", stat.S_IFCHR, major, minor, 0o666, 0, 0)
            for d in devices:
                kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[d.type]
                mode = 0o666 if d.file_mode is None else d.file_mode & 0o7777
                self.make_device(d.path, kind, d.major, d.minor, mode, d.uid or 0, d.gid or 0)
        finally:
            os.umask(old_umask)
        dev_fd = open_in_root(self.root_fd, "/dev", os.O_PATH | os.O_DIRECTORY)
        try:
            for name, target in DEV_SYMLINKS:
                try:
                    os.symlink(target, name, dir_fd=dev_fd)
                except FileExistsError:
                    pass
            if os.path.exists("/proc/kcore"):
                try:
                    os.symlink("/proc/kcore", "core", dir_fd=dev_fd)
                except FileExistsError:
                    pass
        finally:
            os.close(dev_fd)

    def make_device(self, path: str, kind: int, major: int, minor: int, mode: int, uid: int, gid: int) -> None:
        try:
            self._make_device(path, kind, major, minor, mode, uid, gid)
        except OSError as e:
            raise OSError(e.errno, f"creating device {path} ({major}:{minor}): {e.strerror}") from None

    def _make_device(self, path: str, kind: int, major: int, minor: int, mode: int, uid: int, gid: int) -> None:
        parent, name = os.path.split(os.path.normpath(path))
        pfd = make_target(self.root_fd, parent, True)
        try:
            try:
                os.unlink(name, dir_fd=pfd)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno != errno.EBUSY:
                    raise
                return  # a mount point: the config mounted something there, keep it (runc does too)
            if self.in_user_ns:
                # mknod is not allowed in a user namespace: bind the host's node instead.
                os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 0o600, dir_fd=pfd))
                tfd = L.openat2(pfd, name, os.O_PATH, 0, L.RESOLVE_BENEATH | L.RESOLVE_NO_SYMLINKS)
                try:
                    L.mount(path, fd_path(tfd), None, L.MS_BIND)
                finally:
                    os.close(tfd)
            else:
                os.mknod(name, kind | mode, os.makedev(major, minor), dir_fd=pfd)
                os.chown(name, uid, gid, dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(pfd)

    def mask_paths(self, paths: list[str]) -> None:
        """Hide each path: /dev/null over files, an empty read-only tmpfs over directories."""
        if not paths:
            return
        null_fd = open_in_root(self.root_fd, "/dev/null")
        try:
            st = os.fstat(null_fd)
            if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
                raise OSError(errno.EPERM, "/dev/null in the container is not the null device")
            for path in paths:
                try:
                    fd = open_in_root(self.root_fd, path)
                except FileNotFoundError:
                    continue
                try:
                    if stat.S_ISDIR(os.fstat(fd).st_mode):
                        L.mount("tmpfs", fd_path(fd), "tmpfs", L.MS_RDONLY, None)
                    else:
                        L.mount(fd_path(null_fd), fd_path(fd), None, L.MS_BIND)
                finally:
                    os.close(fd)
        finally:
            os.close(null_fd)

    def readonly_paths(self, paths: list[str]) -> None:
        for path in paths:
            try:
                fd = open_in_root(self.root_fd, path)
            except FileNotFoundError:
                continue
            try:
                L.mount(fd_path(fd), fd_path(fd), None, L.MS_BIND | L.MS_REC)
            finally:
                os.close(fd)
            fd = open_in_root(self.root_fd, path)
            try:
                L.mount(None, fd_path(fd), None,
                        L.MS_BIND | L.MS_REMOUNT | L.MS_RDONLY | current_flags(fd))
            finally:
                os.close(fd)

    def readonly_root(self) -> None:
        L.mount(None, self.rootfs, None, L.MS_BIND | L.MS_REMOUNT | L.MS_RDONLY | current_flags(self.root_fd))

    def enter(self, no_pivot: bool) -> None:
        """Make the rootfs our / and drop every view of the host's tree."""
        os.close(self.root_fd)
        if no_pivot:
            os.chdir(self.rootfs)
            L.mount(self.rootfs, "/", None, L.MS_MOVE)
            os.chroot(".")
        else:
            old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
            new_root = os.open(self.rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
            try:
                # pivot_root(".", ".") stacks the old root on top of the new one; then we
                # detach it from where we stand, without ever needing a directory for it.
                os.fchdir(new_root)
                L.pivot_root(".", ".")
                os.fchdir(old_root)
                L.mount(None, ".", None, L.MS_SLAVE | L.MS_REC)
                L.umount2(".", L.MNT_DETACH)
            finally:
                os.close(old_root)
                os.close(new_root)
        os.chdir("/")
        if self.propagation:
            flag = PROPAGATION.get(self.propagation)
            if flag is None:
                raise ConfigError([f"linux.rootfsPropagation: unknown value {self.propagation!r}"])
            L.mount(None, "/", None, flag)


def _copy_up(src: int, dst: int) -> None:
    """tmpcopyup: copy the tree of the directory fd ``src`` into ``dst`` (the fresh tmpfs on top of
    it), keeping modes and owners, as runc does; the tmpfs root takes the directory's own."""
    st = os.fstat(src)
    os.fchmod(dst, stat.S_IMODE(st.st_mode))
    os.fchown(dst, st.st_uid, st.st_gid)
    with os.scandir(src) as entries:
        names = [e.name for e in entries]
    for name in names:
        st = os.stat(name, dir_fd=src, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(name, 0o700, dir_fd=dst)
            s = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src)
            d = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dst)
            try:
                _copy_up(s, d)
            finally:
                os.close(s)
                os.close(d)
            continue
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=src), name, dir_fd=dst)
        elif stat.S_ISREG(st.st_mode):
            s = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src)
            try:
                d = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=dst)
                try:
                    while os.sendfile(d, s, None, 1 << 20):
                        pass
                finally:
                    os.close(d)
            finally:
                os.close(s)
        else:  # fifos, sockets, device nodes
            os.mknod(name, st.st_mode, st.st_rdev, dir_fd=dst)
        os.chown(name, st.st_uid, st.st_gid, dir_fd=dst, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dst)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samestat(os.stat(a), os.stat(b))
    except OSError:
        return False


def host_cgroup_hierarchies() -> dict[str, str]:
    """Map of cgroup hierarchy key (v1 super options like "cpu,cpuacct" or "name=systemd"; "" for
    cgroup2) to where the host mounts it, read from our (still host-shaped) mountinfo."""
    out: dict[str, str] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _src, super_opts = right.split()[:3]
            mountpoint = left.split()[4]
            if fstype == "cgroup2":
                out.setdefault("", mountpoint)
            elif fstype == "cgroup":
                opts = [o for o in super_opts.split(",") if o not in ("rw", "ro") and not o.startswith(
                    ("release_agent", "clone_children", "noprefix", "xattr", "cpuset_v2_mode"))]
                out.setdefault(",".join(opts), mountpoint)
    return out


def own_cgroups() -> dict[str, str]:
    """/proc/self/cgroup as hierarchy key -> path."""
    out: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _id, controllers, path = line.rstrip("\n").split(":", 2)
            out[controllers] = path
    return out
