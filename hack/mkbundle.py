#!/usr/bin/env python3
"""Build an OCI bundle (rootfs + config.json) from Debian's busybox-static.

Command line (prints nothing on success):

    .venv/bin/python hack/mkbundle.py DIR [options] [--args PROG ARG...]

Everything after ``--args`` is the container's process argv (default: sh).

From Python (e.g. tests), load this file by path and call make_bundle():

    spec = importlib.util.spec_from_file_location("mkbundle", REPO / "hack/mkbundle.py")
    mkbundle = importlib.util.module_from_spec(spec); spec.loader.exec_module(mkbundle)
    config = mkbundle.make_bundle(tmp_path / "bundle", args=["/bin/true"])

make_bundle() returns the config dict it wrote; default_config() builds the same
dict without touching the disk and write_config() writes one.

Stdlib only: this runs before (and without) the project's venv.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = [
    "DEFAULT_CAPS",
    "DEFAULT_USERNS_MAP",
    "build_rootfs",
    "default_config",
    "find_busybox",
    "make_bundle",
    "write_config",
]

OCI_VERSION = "1.3.0"
DEFAULT_HOSTNAME = "pyrunc"
DEFAULT_ARGS = ["sh"]
DEFAULT_ENV = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "TERM=xterm",
]
# host id, size: container ids 0..size-1 map to host ids hostid..hostid+size-1
DEFAULT_USERNS_MAP = (100000, 65536)

# The 14-capability default set that containerd/Docker give a container.
# (`runc spec` itself only grants AUDIT_WRITE, KILL and NET_BIND_SERVICE.)
DEFAULT_CAPS = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]

MASKED_PATHS = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
    "/sys/devices/virtual/tpm",
]

READONLY_PATHS = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
]

ROOTFS_DIRS = {
    # path: mode
    "bin": 0o755,
    "sbin": 0o755,
    "usr": 0o755,
    "usr/bin": 0o755,
    "usr/sbin": 0o755,
    "proc": 0o555,
    "sys": 0o555,
    "dev": 0o755,
    "tmp": 0o1777,
    "etc": 0o755,
    "root": 0o700,
    "home": 0o755,
    "home/user": 0o755,
    "var": 0o755,
    "var/tmp": 0o1777,
    "run": 0o755,
    "mnt": 0o755,
}

ETC_FILES = {
    "etc/passwd": (
        "root:x:0:0:root:/root:/bin/sh\n"
        "user:x:1000:1000:user:/home/user:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    ),
    "etc/group": (
        "root:x:0:\n"
        "tty:x:5:\n"
        "user:x:1000:\n"
        "nogroup:x:65534:\n"
    ),
    "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
}


def find_busybox() -> str:
    """Path of a static busybox on the host (Debian's busybox-static)."""
    for cand in ("/bin/busybox", "/usr/bin/busybox"):
        if os.access(cand, os.X_OK):
            return cand
    found = shutil.which("busybox")
    if found:
        return found
    raise FileNotFoundError("busybox not found: apt-get install busybox-static (or run hack/setup.sh)")


_APPLETS_CACHE: dict[str, list[str]] = {}


def _applets(busybox: str) -> list[str]:
    """Applet install paths relative to /, e.g. 'bin/sh', 'usr/bin/env'."""
    if busybox not in _APPLETS_CACHE:
        try:
            out = subprocess.run([busybox, "--list-full"], check=True, capture_output=True, text=True).stdout
            paths = [p.strip().lstrip("/") for p in out.split() if p.strip()]
        except subprocess.CalledProcessError:
            out = subprocess.run([busybox, "--list"], check=True, capture_output=True, text=True).stdout
            paths = ["bin/" + p.strip() for p in out.split() if p.strip()]
        _APPLETS_CACHE[busybox] = paths
    return _APPLETS_CACHE[busybox]


def _chown_tree(root: Path, uid_off: int, gid_off: int) -> None:
    """Shift the owner of every file under root by (uid_off, gid_off), symlinks included."""
    def shift(p: str) -> None:
        st = os.lstat(p)
        os.lchown(p, st.st_uid + uid_off, st.st_gid + gid_off)

    shift(str(root))
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            shift(os.path.join(dirpath, name))


def _warn_unreachable(bundle: Path, uid: int) -> None:
    """Warn when a parent dir of the bundle is closed to others (e.g. mkdtemp's or
    pytest's tmp_path, mode 0700): a user-namespaced container cannot reach its rootfs."""
    for d in bundle.resolve().parents:
        st = os.stat(d)
        if st.st_uid != uid and not st.st_mode & 0o001:
            print(f"mkbundle: warning: {d} (mode {st.st_mode & 0o7777:o}) is not searchable by others: "
                  f"a container in a user namespace (root = host uid {uid}) cannot reach "
                  f"{bundle}/rootfs; chmod o+x it or put the bundle elsewhere", file=sys.stderr)
            return


def build_rootfs(rootfs: str | os.PathLike, *, hostname: str = DEFAULT_HOSTNAME,
                 busybox: str | None = None) -> Path:
    """Create a busybox root filesystem at ``rootfs`` (must not exist or be empty)."""
    rootfs = Path(rootfs)
    busybox = busybox or find_busybox()
    rootfs.mkdir(parents=True, exist_ok=True)
    if any(rootfs.iterdir()):
        raise FileExistsError(f"{rootfs} is not empty (use force=True / --force to rebuild)")
    os.chmod(rootfs, 0o755)
    for d, mode in ROOTFS_DIRS.items():
        p = rootfs / d
        p.mkdir(exist_ok=True)
        os.chmod(p, mode)  # mkdir's mode is filtered by umask
    # A private copy, never a hard link: a container (or a --userns chown) must
    # not be able to change the host's /bin/busybox.
    shutil.copyfile(busybox, rootfs / "bin/busybox")
    os.chmod(rootfs / "bin/busybox", 0o755)
    for rel in _applets(busybox):
        if rel in ("bin/busybox", ""):
            continue
        link = rootfs / rel
        if not link.parent.is_dir():
            link.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink("/bin/busybox", link)
        except FileExistsError:
            pass
    for rel, text in ETC_FILES.items():
        (rootfs / rel).write_text(text)
    (rootfs / "etc/hostname").write_text(hostname + "\n")
    os.chown(rootfs / "home/user", 1000, 1000)
    return rootfs


def default_config(args: list[str] | None = None, *, terminal: bool = False,
                   hostname: str = DEFAULT_HOSTNAME, cgroupns: bool = True,
                   userns: bool | tuple[int, int] = False, uid: int = 0, gid: int = 0,
                   env: list[str] | None = None, cwd: str = "/",
                   rootfs: str = "rootfs", readonly: bool = True,
                   oci_version: str = OCI_VERSION) -> dict:
    """The config.json that `runc spec` would write (with the tweaks listed in the module doc)."""
    caps = list(DEFAULT_CAPS)
    namespaces = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]
    if cgroupns:
        namespaces.append({"type": "cgroup"})
    config: dict = {
        "ociVersion": oci_version,
        "process": {
            "terminal": bool(terminal),
            "user": {"uid": int(uid), "gid": int(gid)},
            "args": list(args) if args else list(DEFAULT_ARGS),
            "env": list(DEFAULT_ENV) + list(env or []),
            "cwd": cwd,
            "capabilities": {
                "bounding": list(caps),
                "effective": list(caps),
                "permitted": list(caps),
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": rootfs, "readonly": bool(readonly)},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": namespaces,
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
    if userns:
        host_id, size = DEFAULT_USERNS_MAP if userns is True else userns
        namespaces.append({"type": "user"})
        config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": int(host_id), "size": int(size)}]
        config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": int(host_id), "size": int(size)}]
    return config


def write_config(bundle: str | os.PathLike, config: dict) -> Path:
    path = Path(bundle) / "config.json"
    tmp = path.with_name(".config.json.tmp")
    tmp.write_text(json.dumps(config, indent="\t") + "\n")
    os.replace(tmp, path)
    return path


def _parse_map(value) -> tuple[int, int] | bool:
    if value in (None, False):
        return False
    if value is True:
        return DEFAULT_USERNS_MAP
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    host, _, size = str(value).partition(":")
    return int(host), int(size or DEFAULT_USERNS_MAP[1])


def make_bundle(bundle: str | os.PathLike, args: list[str] | None = None, *,
                terminal: bool = False, rootfs_only: bool = False, config_only: bool = False,
                cgroupns: bool = True, userns: bool | str | tuple[int, int] = False,
                hostname: str = DEFAULT_HOSTNAME, uid: int = 0, gid: int = 0,
                env: list[str] | None = None, cwd: str = "/", readonly: bool = True,
                force: bool = False, busybox: str | None = None,
                oci_version: str = OCI_VERSION) -> dict | None:
    """Build an OCI bundle at ``bundle``: ``bundle/rootfs`` and ``bundle/config.json``.

    Returns the config dict written (None with rootfs_only).
    userns: True for 0 -> 100000 (65536 ids), or (hostID, size), or "HOSTID[:SIZE]";
    the rootfs is then chowned into that range.
    force: replace an existing bundle/rootfs (only that directory is removed).
    config_only: (re)write config.json only, leaving the rootfs alone.
    """
    if os.geteuid() != 0 and not config_only:
        # Ownership (uid 1000 home, --userns) needs root; the runtimes do too.
        raise PermissionError("make_bundle needs root")
    bundle = Path(bundle)
    idmap = _parse_map(userns)
    bundle.mkdir(parents=True, exist_ok=True)
    rootfs = bundle / "rootfs"
    if not config_only:
        if force and (rootfs.exists() or rootfs.is_symlink()):
            if rootfs.is_symlink() or not rootfs.is_dir():
                rootfs.unlink()
            else:
                shutil.rmtree(rootfs)
        build_rootfs(rootfs, hostname=hostname, busybox=busybox)
        if idmap:
            _chown_tree(rootfs, idmap[0], idmap[0])
            # The container's root (host uid idmap[0]) must be able to reach rootfs.
            os.chmod(bundle, 0o755)
            _warn_unreachable(bundle, idmap[0])
    if rootfs_only:
        return None
    config = default_config(args, terminal=terminal, hostname=hostname, cgroupns=cgroupns,
                            userns=idmap, uid=uid, gid=gid, env=env, cwd=cwd, readonly=readonly,
                            oci_version=oci_version)
    write_config(bundle, config)
    return config


def _split_args(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """Everything after the first literal --args is the process argv."""
    if "--args" in argv:
        i = argv.index("--args")
        return argv[:i], argv[i + 1:]
    return argv, None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts_argv, proc_args = _split_args(argv)
    p = argparse.ArgumentParser(
        prog="mkbundle.py",
        description="Build an OCI bundle (DIR/rootfs from busybox-static, DIR/config.json like `runc spec`).",
        epilog="Everything after --args is the process argv, e.g.: "
               "mkbundle.py /tmp/b --hostname box --args sh -c 'echo hi; id'",
    )
    p.add_argument("dir", metavar="DIR", help="bundle directory (created if missing)")
    p.add_argument("--args", dest="_args_placeholder", action="store_true",
                   help="process argv: everything after it (default: sh)")
    p.add_argument("--terminal", action="store_true", help="process.terminal = true")
    p.add_argument("--rootfs-only", action="store_true", help="build DIR/rootfs only, no config.json")
    p.add_argument("--config-only", action="store_true", help="(re)write DIR/config.json only")
    p.add_argument("--no-cgroupns", dest="cgroupns", action="store_false", help="no cgroup namespace")
    def idmap_arg(v: str) -> str:
        if not v.replace(":", "", 1).isdigit():
            raise argparse.ArgumentTypeError(f"want HOSTID[:SIZE], got {v!r} (write --userns=HOSTID:SIZE)")
        return v

    p.add_argument("--userns", nargs="?", const="%d:%d" % DEFAULT_USERNS_MAP, default=None, type=idmap_arg,
                   metavar="HOSTID[:SIZE]",
                   help="add a user namespace mapping uid/gid 0 to HOSTID (default 100000:65536) "
                        "and chown the rootfs into that range")
    p.add_argument("--hostname", default=DEFAULT_HOSTNAME, help="default: %(default)s")
    p.add_argument("--user", default="0:0", metavar="UID[:GID]", help="process user (default 0:0)")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="extra env (repeatable)")
    p.add_argument("--cwd", default="/", help="process cwd (default /)")
    p.add_argument("--rw", action="store_true", help="root.readonly = false")
    p.add_argument("--force", action="store_true", help="replace an existing DIR/rootfs")
    p.add_argument("--oci-version", default=OCI_VERSION,
                   help="ociVersion (default %(default)s; crun 1.8 only takes 1.0.x/1.1.x)")
    ns = p.parse_args(opts_argv)
    if proc_args is not None and not proc_args:
        p.error("--args needs at least one argument")
    if ns.rootfs_only and ns.config_only:
        p.error("--rootfs-only and --config-only exclude each other")
    uid_s, _, gid_s = ns.user.partition(":")
    try:
        uid, gid = int(uid_s), int(gid_s or uid_s)
    except ValueError:
        p.error("--user wants numeric UID[:GID]")
    try:
        make_bundle(ns.dir, proc_args, terminal=ns.terminal, rootfs_only=ns.rootfs_only,
                    config_only=ns.config_only, cgroupns=ns.cgroupns, userns=ns.userns or False,
                    hostname=ns.hostname, uid=uid, gid=gid, env=ns.env, cwd=ns.cwd,
                    readonly=not ns.rw, force=ns.force, oci_version=ns.oci_version)
    except (OSError, ValueError, subprocess.CalledProcessError) as e:
        print(f"mkbundle: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
