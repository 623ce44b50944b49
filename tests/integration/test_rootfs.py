"""The container's root file system (runtime-spec v1.3.0 config.md "Mounts", config-linux.md
"Devices", "Masked/Readonly Paths", "Rootfs Mount Propagation"), as runc builds it.

Every test looks from inside (busybox reading its own /proc/self/mountinfo, stat, writes)
and from outside (/proc/PID/mountinfo and /proc/PID/root/... of a created container),
and checks that the host's mount table and files are left as they were.  Tests that
plant files in the rootfs (symlinks pointing out of it, mount destinations to create)
use a private copy of the busybox rootfs.  Tests that need a shared or nested source
mount build it in a throwaway mount namespace (unshare -m) around pyrunc, so the host's
mount table is never touched.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import edit_config, mkbundle, needs_root, new_id

pytestmark = needs_root

DEFAULT_DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8),
                   "urandom": (1, 9), "tty": (5, 0)}
# an unassigned "local/experimental" character major: no driver, so once the device
# cgroup lets an open through it fails with ENXIO, never touching real hardware
FREE_MAJOR = 240
EROFS_TEXT = "Read-only file system"


# ------------------------------------------------------------------------------ helpers


@dataclass
class Mnt:
    mount_id: int
    parent: int
    dev: str
    root: str
    point: str
    opts: set[str]
    optional: list[str]
    fstype: str
    source: str
    super_opts: set[str]


def parse_mountinfo(text: str) -> list[Mnt]:
    out = []
    for line in text.splitlines():
        if " - " not in line:
            continue
        left, _, right = line.partition(" - ")
        f = left.split()
        r = right.split()
        out.append(Mnt(int(f[0]), int(f[1]), f[2], f[3], f[4], set(f[5].split(",")), f[6:],
                       r[0], r[1], set(r[2].split(",")) if len(r) > 2 else set()))
    return out


def by_point(mounts: list[Mnt]) -> dict[str, Mnt]:
    """Mount point -> the mount on top there (the last one listed)."""
    return {m.point: m for m in mounts}


def host_mountinfo() -> list[Mnt]:
    with open("/proc/self/mountinfo") as f:
        return parse_mountinfo(f.read())


def sh(*script: str) -> list[str]:
    return ["sh", "-c", "\n".join(script)]


def wait_stopped(pyrunc, cid: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while pyrunc.state(cid)["status"] != "stopped":
        assert time.monotonic() < deadline, f"{cid} did not stop"
        time.sleep(0.02)


@dataclass
class Created:
    cid: str
    pid: int
    out: Path
    pyrunc: object

    @property
    def root(self) -> Path:
        return Path(f"/proc/{self.pid}/root")

    def mountinfo(self) -> list[Mnt]:
        return parse_mountinfo(Path(f"/proc/{self.pid}/mountinfo").read_text())

    def start_and_wait(self) -> str:
        """Let the process run to its end; return what it wrote (stdout and stderr)."""
        self.pyrunc("start", self.cid)  # type: ignore[operator]
        wait_stopped(self.pyrunc, self.cid)
        return self.out.read_text()


@contextmanager
def created(pyrunc, bundle: Path, *create_args: str, wrap: list[str] | None = None):  # type: ignore[no-untyped-def]
    """``pyrunc create`` (optionally run through ``wrap``, e.g. an unshare script); yields a
    Created whose process output goes to a file; deletes the container afterwards."""
    cid = new_id()
    out = bundle / f"out-{cid}"
    argv = pyrunc.argv("create", "-b", str(bundle), *create_args, cid)
    with open(out, "w") as f:
        p = subprocess.run((wrap or []) + argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f, timeout=60)
    assert p.returncode == 0, f"create failed ({p.returncode}): {out.read_text()}"
    try:
        yield Created(cid, pyrunc.state(cid)["pid"], out, pyrunc)
    finally:
        pyrunc("delete", "--force", cid)


def private_ns_wrapper(setup: str, after: str = "") -> list[str]:
    """argv prefix running the pyrunc command given after it inside a new, private mount
    namespace, between ``setup`` and ``after`` (sh code; the namespace dies with it)."""
    script = f"set -e\n{setup}\n\"$@\"\n{after}\n"
    return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "wrapper"]


@pytest.fixture
def private_rootfs(tmp_path: Path) -> Path:
    """A busybox rootfs of this test's own, to plant files in."""
    return mkbundle.build_rootfs(tmp_path / "rootfs")


@pytest.fixture
def bundle_on(make_bundle, private_rootfs: Path):  # type: ignore[no-untyped-def]
    """make_bundle, but on the private rootfs."""
    def make(args: list[str], **options: object) -> Path:
        bundle = make_bundle(args, **options)
        edit_config(bundle, lambda c: c["root"].update(path=str(private_rootfs)))
        return bundle
    return make


@pytest.fixture(autouse=True)
def host_mounts_untouched(pyrunc, tmp_path: Path, rootfs: Path, workdir: Path):  # type: ignore[no-untyped-def]
    """After every test (and the deletion of its containers) the host has no new mount of
    ours, nor any new mount under /dev."""
    before = {(m.mount_id, m.point) for m in host_mountinfo()}
    yield
    for cid in pyrunc.ids():
        pyrunc("delete", "--force", cid, check=False)
    ours = (str(tmp_path), str(rootfs), str(workdir))
    new = [m for m in host_mountinfo() if (m.mount_id, m.point) not in before
           and (m.point.startswith(ours + ("/dev/",)) or any(p in m.root for p in ours))]
    assert not new, f"new mounts on the host: {new}"


def add_mounts(bundle: Path, *mounts: dict) -> None:
    edit_config(bundle, lambda c: c["mounts"].extend(mounts))


# ------------------------------------------------------------------ default mounts, no host mounts


@pytest.mark.parametrize("cgroupns", [True, False], ids=["cgroupns", "no-cgroupns"])
def test_default_mounts_have_their_types_and_options(pyrunc, make_bundle, cgroupns: bool) -> None:
    bundle = make_bundle(sh("cat /proc/self/mountinfo", "echo ---",
                            "mkdir /sys/fs/cgroup/x; touch /sys/x; touch /x"), cgroupns=cgroupns)
    with created(pyrunc, bundle) as c:
        outside = c.mountinfo()
        own = {frozenset(filter(None, ctrl.split(","))): path for _, ctrl, path in
               (line.split(":", 2) for line in Path(f"/proc/{c.pid}/cgroup").read_text().splitlines())}
        text = c.start_and_wait()
    info, _, errors = text.partition("---\n")
    inside = parse_mountinfo(info)
    # the process sees exactly the tree that was built at create time
    assert [(m.point, m.fstype, m.opts, m.super_opts) for m in inside] == \
           [(m.point, m.fstype, m.opts, m.super_opts) for m in outside]
    mounts = by_point(inside)
    assert inside[0].point == "/" and "ro" in inside[0].opts  # root.readonly
    expect = {  # mount point: (fstype, source, per-mount options, superblock options)
        "/proc": ("proc", "proc", {"rw"}, set()),
        "/dev": ("tmpfs", "tmpfs", {"rw", "nosuid"}, {"size=65536k", "mode=755"}),
        "/dev/pts": ("devpts", "devpts", {"rw", "nosuid", "noexec"}, {"gid=5", "mode=620", "ptmxmode=666"}),
        "/dev/shm": ("tmpfs", "shm", {"rw", "nosuid", "nodev", "noexec"}, {"size=65536k"}),
        "/dev/mqueue": ("mqueue", "mqueue", {"rw", "nosuid", "nodev", "noexec"}, set()),
        "/sys": ("sysfs", "sysfs", {"ro", "nosuid", "nodev", "noexec"}, set()),
    }
    for point, (fstype, source, opts, super_opts) in expect.items():
        m = mounts[point]
        assert (m.fstype, m.source) == (fstype, source), point
        assert opts <= m.opts, (point, m.opts)
        assert super_opts <= m.super_opts, (point, m.super_opts)
    # strictatime on /dev: neither relatime nor noatime
    assert not {"relatime", "noatime"} & mounts["/dev"].opts
    # /sys/fs/cgroup: read-only, and it holds the cgroup file systems (v1 hierarchies on a
    # tmpfs on this hybrid host, or cgroup2 alone)
    cg = [m for m in inside if m.point == "/sys/fs/cgroup" or m.point.startswith("/sys/fs/cgroup/")]
    assert cg and all({"ro", "nosuid", "nodev", "noexec"} <= m.opts for m in cg), cg
    assert {m.fstype for m in cg} & {"cgroup", "cgroup2"}
    # each hierarchy shows the container's own cgroup as its root: a cgroup namespace makes
    # it "/", without one it is bound from the host's hierarchy at the container's path
    for m in cg:
        if m.fstype in ("cgroup", "cgroup2"):
            key = frozenset(o for o in m.super_opts if m.fstype == "cgroup" and o not in ("rw", "ro")
                            and not o.startswith(("release_agent", "clone_children", "noprefix", "xattr",
                                                  "cpuset_v2_mode")))
            assert m.root == ("/" if cgroupns else own[key]), (m, own)
    assert errors.count(EROFS_TEXT) == 3, errors


def test_container_sees_no_host_mount_and_leaves_none(pyrunc, make_bundle, rootfs: Path) -> None:
    host_before = host_mountinfo()
    bundle = make_bundle(["cat", "/proc/self/mountinfo"])
    with created(pyrunc, bundle) as c:
        outside = c.mountinfo()
        assert not [m for m in host_mountinfo() if str(rootfs) in m.point or c.cid in m.point]
        inside = parse_mountinfo(c.start_and_wait())
    for mounts in (inside, outside):
        # the root's line names the rootfs (the bind's source); no other names a host path
        assert mounts[0].point == "/" and mounts[0].root == str(rootfs)
        for m in mounts[1:]:
            assert str(rootfs) not in m.root and str(bundle) not in m.root, m
            assert m.point.split("/")[1] in ("proc", "dev", "sys"), m
        # none of the host's other mount points (e.g. /mnt/...) shows up inside
        host_only = {m.point for m in host_before if m.point.split("/")[1] not in ("", "proc", "dev", "sys")}
        assert not {m.point for m in mounts} & host_only
        # every mount is the container's own: none shares a mount id with the host
        assert not {m.mount_id for m in mounts} & {m.mount_id for m in host_before}
    after = {(m.mount_id, m.point) for m in host_mountinfo()}
    gone_or_same = {(m.mount_id, m.point) for m in host_before}
    assert not {x for x in after - gone_or_same if str(rootfs) in x[1] or str(bundle) in x[1]}


# ------------------------------------------------------------------------------ bind mounts


def test_bind_mounts_of_dirs_and_files_relative_to_the_bundle(pyrunc, bundle_on, private_rootfs: Path,
                                                              tmp_path: Path) -> None:
    bundle = bundle_on(sh("cat /data/a/b/hello /etc/conf/x/file.txt /abs/host.txt",
                          "stat -c '%n %F' /data/a/b /etc/conf/x/file.txt",
                          "echo from-inside > /data/a/b/new",
                          "grep -E ' /(data|etc|abs)' /proc/self/mountinfo"))
    (bundle / "datadir").mkdir()
    (bundle / "datadir" / "hello").write_text("hello\n")
    (bundle / "file.txt").write_text("a file\n")
    absdir = tmp_path / "absdir"
    absdir.mkdir()
    (absdir / "host.txt").write_text("absolute\n")
    add_mounts(bundle,
               # relative sources are relative to the bundle; destinations are created
               {"destination": "/data/a/b", "type": "bind", "source": "datadir", "options": ["rbind"]},
               {"destination": "/etc/conf/x/file.txt", "type": "bind", "source": "file.txt", "options": ["bind"]},
               {"destination": "/abs", "source": str(absdir), "options": ["bind", "ro"]})  # no type
    with created(pyrunc, bundle) as c:
        assert (c.root / "etc/conf/x/file.txt").read_text() == "a file\n"
        points = by_point(c.mountinfo())
        assert points["/data/a/b"].root.endswith("/datadir")
        assert points["/etc/conf/x/file.txt"].root.endswith("/file.txt")
        assert "ro" in points["/abs"].opts
        out = c.start_and_wait()
    assert out.startswith("hello\na file\nabsolute\n"), out
    assert "/data/a/b directory\n/etc/conf/x/file.txt regular file\n" in out
    # the write went through to the bundle's directory: a bind, not a copy
    assert (bundle / "datadir" / "new").read_text() == "from-inside\n"
    # the file target was created as an empty regular file inside the rootfs
    target = private_rootfs / "etc/conf/x/file.txt"
    assert target.is_file() and target.stat().st_size == 0


def test_bind_flags_ro_nosuid_nodev_noexec(pyrunc, bundle_on) -> None:
    bundle = bundle_on(sh(
        "for d in /mnt/locked /tmp/open; do",
        "  touch $d/new 2>/dev/null && echo $d write ok || echo $d write fails",
        "  $d/script.sh 2>/dev/null && echo $d exec ok || echo $d exec fails",
        "  echo x 2>/dev/null > $d/null && echo $d dev ok || echo $d dev fails",
        "done"))
    src = bundle / "src"
    src.mkdir()
    (src / "script.sh").write_text("#!/bin/sh\nexit 0\n")
    (src / "script.sh").chmod(0o755)
    os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    add_mounts(bundle,
               {"destination": "/mnt/locked", "type": "bind", "source": "src",
                "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]},
               {"destination": "/tmp/open", "type": "bind", "source": "src", "options": ["rbind", "rw"]})
    with created(pyrunc, bundle) as c:
        locked = by_point(c.mountinfo())["/mnt/locked"]
        assert {"ro", "nosuid", "nodev", "noexec"} <= locked.opts
        flags = os.statvfs(c.root / "mnt/locked").f_flag
        assert flags & os.ST_RDONLY and flags & os.ST_NOSUID and flags & os.ST_NODEV and flags & os.ST_NOEXEC
        assert not os.statvfs(c.root / "tmp/open").f_flag & (os.ST_RDONLY | os.ST_NOEXEC | os.ST_NODEV)
        out = c.start_and_wait()
    assert out.splitlines() == [
        "/mnt/locked write fails", "/mnt/locked exec fails", "/mnt/locked dev fails",
        "/tmp/open write ok", "/tmp/open exec ok", "/tmp/open dev ok"]
    assert (src / "new").exists()


# ------------------------------------------------------------------- tmpfs and data options


def test_tmpfs_size_mode_and_filesystem_options(pyrunc, bundle_on) -> None:
    bundle = bundle_on(sh("stat -c '%a %u %g' /mnt/t/a/b",
                          "dd if=/dev/zero of=/mnt/t/a/b/big bs=1k count=2048 2>&1 | grep -o 'No space left'",
                          "grep ' /mnt/t/a/b ' /proc/self/mountinfo"))
    add_mounts(bundle, {"destination": "/mnt/t/a/b", "type": "tmpfs", "source": "tmpfs",
                        # "defaults" is mount(8)'s no-op; uid/gid/nr_inodes are tmpfs's own
                        "options": ["defaults", "nodev", "size=1m", "mode=0710", "uid=1000", "gid=1000",
                                    "nr_inodes=50"]})
    with created(pyrunc, bundle) as c:
        st = os.stat(c.root / "mnt/t/a/b")
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o710, 1000, 1000)
        out = c.start_and_wait()
    lines = out.splitlines()
    assert lines[0] == "710 1000 1000"
    assert lines[1] == "No space left"
    m = parse_mountinfo(out)[0]
    assert m.fstype == "tmpfs" and "nodev" in m.opts
    assert {"size=1024k", "mode=710", "uid=1000", "gid=1000", "nr_inodes=50"} <= m.super_opts


def test_unknown_filesystem_option_is_refused_with_a_clear_error(pyrunc, make_bundle) -> None:
    bundle = make_bundle()
    add_mounts(bundle, {"destination": "/mnt", "type": "tmpfs", "source": "tmpfs", "options": ["bogus=1"]})
    cid = new_id()
    p = pyrunc("create", "-b", str(bundle), cid, check=False)
    assert p.returncode == 1
    assert "mounts[7] (tmpfs on /mnt): Invalid argument" in p.stderr
    assert cid not in pyrunc.ids()


# ------------------------------------------------------------------------------ propagation


def test_bind_propagation_options(pyrunc, bundle_on, tmp_path: Path) -> None:
    """rslave receives what the source's peers mount later, rprivate does not, rshared is
    a peer group of its own; rbind brings submounts along and bind does not."""
    src = tmp_path / "src"
    src.mkdir()
    bundle = bundle_on(["true"])
    add_mounts(bundle, *({"destination": f"/mnt/{name}", "type": "bind", "source": str(src), "options": opts}
                         for name, opts in (("slave", ["rbind", "rslave"]), ("private", ["rbind", "rprivate"]),
                                            ("shared", ["rbind", "rshared"]), ("plain", ["bind"]))))
    pid_file, snapshot = tmp_path / "pid", tmp_path / "mountinfo"
    wrap = private_ns_wrapper(
        f"mount -t tmpfs -o size=1m pyrunc-src {src}; mount --make-shared {src}\n"
        f"mkdir {src}/early {src}/late; mount -t tmpfs -o size=1m pyrunc-early {src}/early\n"
        f"touch {src}/early/in-early",
        # after create: a peer of the source gets a new mount; and while the source's peer
        # group still exists (it goes with this namespace), the container's mount table
        f"mount -t tmpfs -o size=1m pyrunc-late {src}/late; touch {src}/late/in-late\n"
        f"cat /proc/$(cat {pid_file})/mountinfo > {snapshot}")
    with created(pyrunc, bundle, "--pid-file", str(pid_file), wrap=wrap) as c:
        points = by_point(parse_mountinfo(snapshot.read_text()))
        seen = {name: ((c.root / f"mnt/{name}/early/in-early").exists(),
                       (c.root / f"mnt/{name}/late/in-late").exists())
                for name in ("slave", "private", "shared", "plain")}
        c.start_and_wait()
    assert seen == {"slave": (True, True), "private": (True, False), "shared": (True, True),
                    "plain": (False, True)}
    opt = {name: " ".join(points[f"/mnt/{name}"].optional) for name in ("slave", "private", "shared")}
    assert opt["slave"].startswith("master:") and "shared:" not in opt["slave"], opt
    assert opt["private"] == "", opt
    assert "shared:" in opt["shared"], opt
    assert not [m for m in host_mountinfo() if m.point.startswith(str(src))]


def test_rro_makes_submounts_read_only_too(pyrunc, bundle_on, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    bundle = bundle_on(sh("for f in /mnt/rro/x /mnt/rro/sub/x /mnt/ro/x /mnt/ro/sub/x; do",
                            "  touch $f 2>/dev/null && echo $f ok || echo $f fails; done"))
    add_mounts(bundle,
               {"destination": "/mnt/rro", "type": "bind", "source": str(src), "options": ["rbind", "rro"]},
               {"destination": "/mnt/ro", "type": "bind", "source": str(src), "options": ["rbind", "ro"]})
    wrap = private_ns_wrapper(f"mount -t tmpfs -o size=1m pyrunc-src {src}; mkdir {src}/sub\n"
                              f"mount -t tmpfs -o size=1m pyrunc-sub {src}/sub")
    with created(pyrunc, bundle, wrap=wrap) as c:
        points = by_point(c.mountinfo())
        out = c.start_and_wait()
    assert "ro" in points["/mnt/rro"].opts and "ro" in points["/mnt/rro/sub"].opts
    assert "ro" in points["/mnt/ro"].opts and "rw" in points["/mnt/ro/sub"].opts
    # "ro" alone is not recursive: that the last line says ok shows the test can tell them apart
    assert out.splitlines() == ["/mnt/rro/x fails", "/mnt/rro/sub/x fails", "/mnt/ro/x fails", "/mnt/ro/sub/x ok"]


@pytest.mark.parametrize("value,optional", [
    (None, "master:"), ("slave", "master:"), ("private", ""), ("shared", "shared:"), ("unbindable", "unbindable")])
def test_rootfs_propagation(pyrunc, make_bundle, tmp_path: Path, value: str | None, optional: str) -> None:
    """Created from a mount namespace whose mounts are all shared (like a systemd host's),
    the rootfs is a slave of it by default (runc's rslave) and follows rootfsPropagation."""
    bundle = make_bundle(["sh", "-c", "head -1 /proc/self/mountinfo"])
    if value:
        edit_config(bundle, lambda c: c["linux"].update(rootfsPropagation=value))
    pid_file, snapshot = tmp_path / "pid", tmp_path / "mountinfo"
    wrap = ["unshare", "--mount", "--propagation", "shared", "--", "/bin/sh", "-c",
            f'set -e; "$@"; cat /proc/$(cat {pid_file})/mountinfo > {snapshot}', "wrapper"]
    with created(pyrunc, bundle, "--pid-file", str(pid_file), wrap=wrap) as c:
        root = parse_mountinfo(snapshot.read_text())[0]
        inside = parse_mountinfo(c.start_and_wait())[0]
    assert root.point == inside.point == "/"
    got = " ".join(root.optional)
    assert got.startswith(optional) if optional else got == "", (value, got)
    if optional == "master:" or value == "shared":  # a slave of a shared mount of the wrapper's
        assert "master:" in got
    else:
        assert "master:" not in got
    if value in ("private", "unbindable"):  # the inside view, once the wrapper's namespace is gone
        assert " ".join(inside.optional) == got


# ------------------------------------------------------------------------ no symlink escape


def plant_host_dir(tmp_path: Path, private_rootfs: Path, name: str, *, inside_too: bool = True) -> tuple[Path, Path]:
    """A directory on the host, and the same path inside the private rootfs (where a
    symlink naming the host path must lead)."""
    host = tmp_path / name
    host.mkdir()
    (host / "host-file").write_text("host\n")
    inner = private_rootfs / str(host).lstrip("/")
    if inside_too:
        inner.mkdir(parents=True)
        (inner / "host-file").write_text("inner\n")
    return host, inner


def escape_link(target: Path) -> str:
    """A relative symlink climbing far above / and down to target."""
    return "../" * 16 + str(target).lstrip("/")


def assert_host_dir_untouched(host: Path) -> None:
    assert sorted(os.listdir(host)) == ["host-file"] and (host / "host-file").read_text() == "host\n"
    assert not [m for m in host_mountinfo() if m.point.startswith(str(host))]


def test_symlinked_mount_destinations_land_inside_the_rootfs(pyrunc, bundle_on, private_rootfs: Path,
                                                              tmp_path: Path) -> None:
    abs_host, abs_inner = plant_host_dir(tmp_path, private_rootfs, "abs")
    rel_host, rel_inner = plant_host_dir(tmp_path, private_rootfs, "rel")
    file_host, file_inner = plant_host_dir(tmp_path, private_rootfs, "file")
    os.symlink(abs_host, private_rootfs / "evil")
    os.symlink(escape_link(rel_host), private_rootfs / "mnt/evil")
    os.symlink(file_host / "host-file", private_rootfs / "evilfile")
    bundle = bundle_on(sh("touch /evil/by-container /mnt/evil/sub/by-container",
                          f"ls {abs_host} {rel_host}/sub", "cat /evilfile"))
    (bundle / "payload").write_text("payload\n")
    add_mounts(bundle,
               {"destination": "/evil", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
               {"destination": "/mnt/evil/sub", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
               {"destination": "/evilfile", "type": "bind", "source": "payload", "options": ["bind"]})
    with created(pyrunc, bundle) as c:
        points = by_point(c.mountinfo())
        # seen from inside the container, the mounts sit on the in-rootfs paths
        assert points[str(abs_host)].fstype == "tmpfs"
        assert points[str(rel_host / "sub")].fstype == "tmpfs"
        assert points[str(file_host / "host-file")].root.endswith("/payload")
        out = c.start_and_wait()
    # the container wrote into its tmpfs mounts, found where the links lead inside the rootfs
    assert out == f"{abs_host}:\nby-container\n\n{rel_host}/sub:\nby-container\npayload\n", out
    for host in (abs_host, rel_host, file_host):
        assert_host_dir_untouched(host)
    assert (rel_inner / "sub").is_dir() and (file_inner / "host-file").read_text() == "inner\n"


def test_dangling_symlink_destination_fails_without_touching_the_host(pyrunc, bundle_on, private_rootfs: Path,
                                                                       tmp_path: Path) -> None:
    host, inner = plant_host_dir(tmp_path, private_rootfs, "host", inside_too=False)
    os.symlink(host, private_rootfs / "evil")  # leads nowhere inside the rootfs
    bundle = bundle_on(["true"])
    for dest in ("/evil", "/evil/sub"):
        edit_config(bundle, lambda c, dest=dest: c.update(mounts=c["mounts"][:7] + [
            {"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}]))
        cid = new_id()
        p = pyrunc("create", "-b", str(bundle), cid, check=False)
        assert p.returncode == 1 and f"mounts[7] (tmpfs on {dest})" in p.stderr, p.stderr
        assert_host_dir_untouched(host)
        assert not inner.exists() and os.path.islink(private_rootfs / "evil")


def test_symlinked_masked_and_readonly_paths_resolve_inside(pyrunc, bundle_on, private_rootfs: Path,
                                                            tmp_path: Path) -> None:
    mhost, minner = plant_host_dir(tmp_path, private_rootfs, "masked")
    rhost, rinner = plant_host_dir(tmp_path, private_rootfs, "readonly")
    fhost, finner = plant_host_dir(tmp_path, private_rootfs, "maskedfile")
    os.symlink(mhost, private_rootfs / "mdir")
    os.symlink(escape_link(fhost / "host-file"), private_rootfs / "mfile")
    os.symlink(escape_link(rhost), private_rootfs / "rdir")
    bundle = bundle_on(sh("ls -A /mdir; cat /mfile; echo x > /mfile; echo rc=$?",
                          "touch /rdir/new 2>&1; cat /rdir/host-file"), readonly=False)
    edit_config(bundle, lambda c: (c["linux"]["maskedPaths"].extend(["/mdir", "/mfile"]),
                                   c["linux"]["readonlyPaths"].append("/rdir")))
    with created(pyrunc, bundle) as c:
        points = by_point(c.mountinfo())
        assert points[str(mhost)].fstype == "tmpfs" and "ro" in points[str(mhost)].opts
        assert points[str(fhost / "host-file")].root == "/null"
        assert "ro" in points[str(rhost)].opts
        out = c.start_and_wait()
    # the masked dir is empty, the masked file reads as /dev/null (and writes vanish)
    assert out.splitlines()[:1] == ["rc=0"], out
    assert EROFS_TEXT in out and out.rstrip().endswith("inner"), out
    for host in (mhost, rhost, fhost):
        assert_host_dir_untouched(host)
    assert (finner / "host-file").read_text() == "inner\n" and not (rinner / "new").exists()


def test_device_through_a_symlinked_dev_subdir_lands_inside(pyrunc, bundle_on, private_rootfs: Path,
                                                            tmp_path: Path) -> None:
    host, inner = plant_host_dir(tmp_path, private_rootfs, "devhost")
    bundle = bundle_on(sh("stat -c '%n %F %t %T' /dev/sub/abs/evil0 /dev/sub/rel/evil1"))
    devsub = bundle / "devsub"  # bound on /dev/sub: a /dev subdir holding links that point out
    devsub.mkdir()
    os.symlink(host, devsub / "abs")
    os.symlink(escape_link(host), devsub / "rel")
    add_mounts(bundle, {"destination": "/dev/sub", "type": "bind", "source": "devsub", "options": ["bind"]})
    edit_config(bundle, lambda c: c["linux"].update(devices=[
        {"type": "c", "path": "/dev/sub/abs/evil0", "major": 1, "minor": 3},
        {"type": "c", "path": "/dev/sub/rel/evil1", "major": 1, "minor": 5}]))
    with created(pyrunc, bundle) as c:
        out = c.start_and_wait()
    assert out.splitlines() == ["/dev/sub/abs/evil0 character special file 1 3",
                                "/dev/sub/rel/evil1 character special file 1 5"], out
    assert_host_dir_untouched(host)
    assert stat.S_ISCHR(os.lstat(inner / "evil0").st_mode) and os.lstat(inner / "evil1").st_rdev == os.makedev(1, 5)
    assert sorted(os.listdir(devsub)) == ["abs", "rel"]


# ------------------------------------------------------------------------------------- /dev


@pytest.mark.parametrize("dev_in_config", [True, False], ids=["dev-mount", "no-dev-mount"])
def test_dev_is_a_fresh_tmpfs_with_exactly_the_default_devices(pyrunc, bundle_on, private_rootfs: Path,
                                                               dev_in_config: bool) -> None:
    """Also when the config has no /dev mount: pyrunc then mounts the tmpfs itself, so
    device nodes are never made on the rootfs's disk."""
    bundle = bundle_on(sh("stat -c '%d' /dev", "echo $(ls -A /dev)",
                            "stat -c '%n %F %a %u %g %t %T' /dev/null /dev/zero /dev/full /dev/random "
                            "/dev/urandom /dev/tty",
                            "for l in fd stdin stdout stderr ptmx; do echo $l $(readlink /dev/$l); done",
                            "head -c 4 /dev/zero | wc -c; echo discard > /dev/null; echo null=$?"))
    if not dev_in_config:
        edit_config(bundle, lambda c: c["mounts"].pop(1))
    host_dev = os.stat("/dev")
    with created(pyrunc, bundle) as c:
        dev = os.stat(c.root / "dev")
        assert dev.st_dev != host_dev.st_dev
        assert by_point(c.mountinfo())["/dev"].fstype == "tmpfs"
        for name, (major, minor) in DEFAULT_DEVICES.items():
            st = os.lstat(c.root / "dev" / name)
            assert stat.S_ISCHR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o666, name
            assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (major, minor), name
        out = c.start_and_wait()
    lines = out.splitlines()
    assert int(lines[0]) != host_dev.st_dev
    entries = lines[1].split()
    expected = set(DEFAULT_DEVICES) | {"fd", "stdin", "stdout", "stderr", "ptmx", "pts", "shm", "mqueue"}
    if os.path.exists("/proc/kcore"):
        expected.add("core")
    assert set(entries) == expected
    for name, (major, minor) in DEFAULT_DEVICES.items():
        assert f"/dev/{name} character special file 666 0 0 {major:x} {minor:x}" in lines
    for link in ("fd /proc/self/fd", "stdin /proc/self/fd/0", "stdout /proc/self/fd/1",
                 "stderr /proc/self/fd/2", "ptmx pts/ptmx"):
        assert link in lines
    assert lines[-2:] == ["4", "null=0"]
    assert os.listdir(private_rootfs / "dev") == []


def test_linux_devices_are_created_with_their_mode_and_owner(pyrunc, make_bundle) -> None:
    bundle = make_bundle(sh("stat -c '%n|%F|%a|%u|%g|%t|%T' /dev/mychar /dev/deep/er/myblock /dev/myfifo "
                            "/dev/myu /dev/null"))
    edit_config(bundle, lambda c: c["linux"].update(devices=[
        {"type": "c", "path": "/dev/mychar", "major": FREE_MAJOR, "minor": 1, "fileMode": 0o620, "uid": 1000, "gid": 5},
        {"type": "b", "path": "/dev/deep/er/myblock", "major": 7, "minor": 200, "fileMode": 0o600},
        {"type": "p", "path": "/dev/myfifo", "fileMode": 0o640, "uid": 2, "gid": 3},
        {"type": "u", "path": "/dev/myu", "major": FREE_MAJOR, "minor": 3},
        # a linux.devices entry replaces the default device of the same path
        {"type": "c", "path": "/dev/null", "major": 1, "minor": 3, "fileMode": 0o600, "uid": 1000, "gid": 1000},
    ]))
    with created(pyrunc, bundle) as c:
        st = os.lstat(c.root / "dev/deep/er/myblock")
        assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(7, 200)
        assert stat.S_ISFIFO(os.lstat(c.root / "dev/myfifo").st_mode)
        out = c.start_and_wait()
    assert out.splitlines() == [
        f"/dev/mychar|character special file|620|1000|5|{FREE_MAJOR:x}|1",
        "/dev/deep/er/myblock|block special file|600|0|0|7|c8",
        "/dev/myfifo|fifo|640|2|3|0|0",
        f"/dev/myu|character special file|666|0|0|{FREE_MAJOR:x}|3",
        "/dev/null|character special file|600|1000|1000|1|3",
    ]


def test_device_cgroup_lets_only_allowed_devices_be_used(pyrunc, make_bundle) -> None:
    """runc's rules: mknod of any node is allowed (c *:* m, b *:* m), but only the default
    devices, the pts and linux.devices entries can be opened; the rest is EPERM."""
    bundle = make_bundle(sh(
        f"mknod /dev/unlisted c {FREE_MAJOR} 2 && echo mknod ok",
        "cat /dev/unlisted 2>&1",         # refused by the device cgroup
        "cat /dev/listed 2>&1",           # allowed: reaches the (absent) driver
        f"mknod /dev/listed2 c {FREE_MAJOR} 1; cat /dev/listed2 2>&1",  # the rule is by number, not path
        "mknod /dev/mem2 c 1 1; head -c 1 /dev/mem2 2>&1",
        "head -c 1 /dev/zero | wc -c"))
    edit_config(bundle, lambda c: c["linux"].update(
        devices=[{"type": "c", "path": "/dev/listed", "major": FREE_MAJOR, "minor": 1}]))
    with created(pyrunc, bundle) as c:
        cgroup = next(line.split(":", 2)[2] for line in Path(f"/proc/{c.pid}/cgroup").read_text().splitlines()
                      if line.split(":")[1] == "devices")
        rules = Path(f"/sys/fs/cgroup/devices{cgroup}/devices.list").read_text().split("\n")
        out = c.start_and_wait()
    assert f"c {FREE_MAJOR}:1 rwm" in rules and "a *:* rwm" not in rules
    lines = out.splitlines()
    assert lines[0] == "mknod ok"
    assert "/dev/unlisted" in lines[1] and "Operation not permitted" in lines[1]
    assert "/dev/listed" in lines[2] and "No such device or address" in lines[2]
    assert "/dev/listed2" in lines[3] and "No such device or address" in lines[3]
    assert "/dev/mem2" in lines[4] and "Operation not permitted" in lines[4]
    assert lines[5] == "1"


@pytest.mark.parametrize("source", ["/dev", "//dev", "/dev/.", "link"])
def test_binding_the_hosts_dev_onto_dev_is_refused(pyrunc, make_bundle, source: str) -> None:
    bundle = make_bundle()
    os.symlink("/dev", bundle / "link")
    # /dev/pts, /dev/shm, /dev/mqueue dropped: were the refusal missing they would land on the host's /dev
    edit_config(bundle, lambda c: c.update(mounts=[
        c["mounts"][0], {"destination": "/dev", "type": "bind", "source": source, "options": ["rbind"]}]))
    before = {name: os.lstat(f"/dev/{name}") for name in os.listdir("/dev")}
    cid = new_id()
    p = pyrunc("create", "-b", str(bundle), cid, check=False)
    assert p.returncode == 1
    assert "mounts[1]: bind-mounting the host's /dev would hand the container the host's devices" in p.stderr
    assert cid not in pyrunc.ids()
    after = {name: os.lstat(f"/dev/{name}") for name in os.listdir("/dev")}
    assert set(after) == set(before)
    assert all((a.st_ino, a.st_mode, a.st_uid, a.st_gid) == (b.st_ino, b.st_mode, b.st_uid, b.st_gid)
               for a, b in ((after[n], before[n]) for n in DEFAULT_DEVICES))


def test_bound_dev_directory_is_used_as_it_is(pyrunc, make_bundle) -> None:
    """A /dev the config binds from elsewhere is not populated (runc's needsSetupDev):
    the runtime must not create or unlink nodes in that host directory."""
    bundle = make_bundle(["ls", "-A", "/dev"])
    devdir = bundle / "devdir"
    devdir.mkdir()
    (devdir / "null").write_text("not a device\n")
    (devdir / "keep").write_text("mine\n")
    edit_config(bundle, lambda c: (c.update(mounts=[
        c["mounts"][0], {"destination": "/dev", "type": "bind", "source": "devdir", "options": ["rbind"]}]),
        c["linux"].update(devices=[{"type": "c", "path": "/dev/extra", "major": 1, "minor": 5}], maskedPaths=[])))
    p = pyrunc("run", "-b", str(bundle), new_id())
    assert sorted(p.stdout.split()) == ["keep", "null"]
    assert sorted(os.listdir(devdir)) == ["keep", "null"]
    assert (devdir / "null").read_text() == "not a device\n"


# -------------------------------------------------------------- masked and read-only paths


def test_masked_paths_hide_files_and_directories(pyrunc, bundle_on, private_rootfs: Path) -> None:
    (private_rootfs / "etc/secret").write_text("secret\n")
    (private_rootfs / "srv/private").mkdir(parents=True)
    (private_rootfs / "srv/private/inner").write_text("inner\n")
    kernel_files = [p for p in ("/proc/keys", "/proc/timer_list", "/proc/kcore") if os.path.exists(p)]
    kernel_dirs = [p for p in ("/proc/acpi", "/sys/firmware", "/proc/scsi") if os.path.isdir(p)]
    files, dirs = ["/etc/secret", *kernel_files], ["/srv/private", *kernel_dirs]
    bundle = bundle_on(sh(*(f"echo {f} $(wc -c < {f})" for f in files),
                          *(f"echo {d} $(ls -A {d} | wc -l)" for d in dirs),
                          "touch /srv/private/x 2>&1; echo x > /etc/secret; echo rc=$?",
                          "ls /srv/missing 2>&1 | grep -c 'No such'"), readonly=False)
    edit_config(bundle, lambda c: c["linux"]["maskedPaths"].extend(["/etc/secret", "/srv/private", "/srv/missing"]))
    with created(pyrunc, bundle) as c:
        points = by_point(c.mountinfo())
        for f in files:
            assert points[f].root == "/null" and points[f].fstype == "tmpfs", f  # /dev/null of the container
            assert (c.root / f.lstrip("/")).read_bytes() == b"", f
        for d in dirs:
            assert points[d].fstype == "tmpfs" and "ro" in points[d].opts, d
            assert os.listdir(c.root / d.lstrip("/")) == [], d
        out = c.start_and_wait()
    lines = out.splitlines()
    assert lines[:len(files) + len(dirs)] == [f"{p} 0" for p in files + dirs]
    assert EROFS_TEXT in out and "rc=0" in lines and lines[-1] == "1"
    assert (private_rootfs / "etc/secret").read_text() == "secret\n"  # writes went to /dev/null
    assert not (private_rootfs / "srv/missing").exists()  # a missing path is skipped, not created


def test_readonly_paths_refuse_writes(pyrunc, bundle_on, private_rootfs: Path) -> None:
    (private_rootfs / "srv/ro").mkdir(parents=True)
    (private_rootfs / "srv/ro/f").write_text("old\n")
    bundle = bundle_on(sh("echo pyrunc-test > /proc/sys/kernel/domainname 2>&1",
                          "echo new > /srv/ro/f 2>&1; touch /srv/ro/g 2>&1",
                          "touch /srv/rw 2>&1 && echo rw ok", "cat /srv/ro/f"), readonly=False)
    edit_config(bundle, lambda c: (c["linux"]["readonlyPaths"].append("/srv/ro"),
                                   c.update(domainname="before")))
    with created(pyrunc, bundle) as c:
        points = by_point(c.mountinfo())
        for p in ("/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq", "/srv/ro"):
            if p == "/srv/ro" or os.path.exists(p):
                assert "ro" in points[p].opts, p
                assert os.statvfs(c.root / p.lstrip("/")).f_flag & os.ST_RDONLY, p
        out = c.start_and_wait()
    assert out.count(EROFS_TEXT) == 3, out
    assert out.splitlines()[-2:] == ["rw ok", "old"]
    assert (private_rootfs / "srv/ro/f").read_text() == "old\n" and (private_rootfs / "srv/rw").exists()


@pytest.mark.parametrize("readonly", [True, False])
def test_root_readonly(pyrunc, bundle_on, private_rootfs: Path, readonly: bool) -> None:
    bundle = bundle_on(sh("touch /made-inside 2>&1; echo rc=$?; touch /tmp/x 2>&1; touch /dev/shm/x && echo shm ok"),
                       readonly=readonly)
    with created(pyrunc, bundle) as c:
        assert bool(os.statvfs(c.root).f_flag & os.ST_RDONLY) == readonly
        assert ("ro" in c.mountinfo()[0].opts) == readonly
        out = c.start_and_wait()
    assert (EROFS_TEXT in out) == readonly
    assert ("rc=0" in out) != readonly
    assert "shm ok" in out  # the mounts on top stay writable
    assert (private_rootfs / "made-inside").exists() != readonly


# -------------------------------------------------------------------------- pivot_root / --no-pivot


ESCAPE_C = r"""
#include <stdio.h>
#include <unistd.h>
/* the classic chroot escape: chroot into a subdirectory while the cwd stays outside it,
   climb with "..", chroot to where the climb stopped; then report which paths exist */
int main(int argc, char **argv) {
    if (chroot(argv[1]) != 0) { perror("chroot"); return 2; }
    for (int i = 0; i < 256; i++) chdir("..");
    if (chroot(".") != 0) { perror("chroot ."); return 2; }
    for (int i = 2; i < argc; i++) printf("%s %s\n", argv[i], access(argv[i], F_OK) == 0 ? "yes" : "no");
    return 0;
}
"""


@pytest.fixture(scope="module")
def escape_binary(workdir: Path) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if not gcc:
        pytest.skip("no C compiler for the static chroot-escape helper")
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        (Path(d) / "esc.c").write_text(ESCAPE_C)
        out = workdir / "esc"
        subprocess.run([gcc, "-static", "-O", "-o", str(out), str(Path(d) / "esc.c")], check=True,
                       capture_output=True)
    return out


@pytest.mark.parametrize("no_pivot", [False, True], ids=["pivot_root", "no-pivot"])
def test_host_root_is_unreachable(pyrunc, bundle_on, private_rootfs: Path, escape_binary: Path,
                                  tmp_path: Path, no_pivot: bool) -> None:
    marker = tmp_path / "host-marker"  # on the host only
    marker.write_text("host\n")
    shutil.copy(escape_binary, private_rootfs / "bin/esc")
    (private_rootfs / "jail/bin").mkdir(parents=True)
    (private_rootfs / "jail/dev").mkdir()
    shutil.copy(escape_binary, private_rootfs / "jail/bin/esc")
    (private_rootfs / "inside-marker").write_text("inside\n")
    bundle = bundle_on(sh(
        f"esc /dev {marker} /inside-marker /bin/busybox",
        # control: from a chroot inside the container the same escape does work
        "chroot /jail /bin/esc /dev /inside-marker",
        "ls -A /.. | tr '\\n' ' '; echo", "stat -c '%d:%i' / /.."))
    with created(pyrunc, bundle, *(["--no-pivot"] if no_pivot else [])) as c:
        root = os.stat(c.root)
        assert (root.st_dev, root.st_ino) == (os.stat(private_rootfs).st_dev, os.stat(private_rootfs).st_ino)
        mounts = c.mountinfo()
        assert mounts[0].point == "/" and mounts[0].root == str(private_rootfs)
        assert os.readlink(f"/proc/{c.pid}/root") == "/"
        out = c.start_and_wait()
    lines = out.splitlines()
    assert lines[:3] == [f"{marker} no", "/inside-marker yes", "/bin/busybox yes"], out
    assert lines[3] == "/inside-marker yes", out  # the control escape reached the container's root
    assert set(lines[4].split()) == set(os.listdir(private_rootfs))
    assert lines[5] == lines[6] == f"{root.st_dev}:{root.st_ino}"


def test_tmpcopyup_fills_the_tmpfs_with_what_it_covers(pyrunc, bundle_on, private_rootfs: Path) -> None:
    """runc's tmpcopyup (podman --read-only puts it on its tmpfs mounts): the tmpfs starts with a
    copy of the directory it covers (modes, owners, links kept); writes stay in the tmpfs."""
    etc = private_rootfs / "etc"
    (etc / "sub").mkdir()
    (etc / "sub" / "deep").write_text("deep\n")
    os.chown(etc / "sub" / "deep", 1000, 1000)
    os.chmod(etc / "sub" / "deep", 0o640)
    os.symlink("sub/deep", etc / "link")
    bundle = bundle_on(sh("cat /etc/link; stat -c '%u:%g %a' /etc/sub/deep; grep -c root /etc/passwd",
                          "echo new > /etc/written && cat /etc/written",
                          "grep -E ' /etc (tmpfs|.* - tmpfs)' /proc/self/mountinfo | wc -l"))
    edit_config(bundle, lambda c: c["mounts"].append(
        {"destination": "/etc", "type": "tmpfs", "source": "tmpfs", "options": ["tmpcopyup", "nosuid"]}))
    p = pyrunc("run", "-b", str(bundle), new_id())
    assert p.stdout.split("\n")[:5] == ["deep", "1000:1000 640", "1", "new", "1"], p.stdout
    assert not (etc / "written").exists()  # the rootfs's /etc got nothing
    bad = bundle_on(["true"])
    edit_config(bad, lambda c: c["mounts"].append(
        {"destination": "/etc", "type": "bind", "source": str(etc), "options": ["rbind", "tmpcopyup"]}))
    p = pyrunc("run", "-b", str(bad), new_id(), check=False)
    assert p.returncode == 1 and "tmpcopyup is for tmpfs mounts only" in p.stderr


def test_relative_mount_destination_is_taken_from_the_root(pyrunc, make_bundle) -> None:
    """config.md: a relative destination (deprecated) MUST be taken as relative to "/"."""
    bundle = make_bundle(["sh", "-c", "grep ' /data ' /proc/self/mountinfo | grep -c tmpfs"])
    edit_config(bundle, lambda c: c["mounts"].append({"destination": "data", "type": "tmpfs", "source": "tmpfs"}))
    assert pyrunc("run", "-b", str(bundle), new_id()).stdout.strip() == "1"
