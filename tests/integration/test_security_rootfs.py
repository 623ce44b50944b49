"""Exploit regressions, part 2: the root file system and procfs.

- CVE-2021-30465: a mount destination inside a (shared) rootfs is swapped for a symlink that
  leads out of it -- statically, or by a process of another container on the same rootfs
  (renameat2 RENAME_EXCHANGE in a tight loop) while containers are being created.  Where the mounts landed is read from the init's own
  mount table before pivot_root (a createContainer hook, which runs in the container's mount
  namespace at that point): every mount pyrunc made must lie inside the rootfs.  (Static links
  through other kinds of paths -- files, masked and read-only paths, devices -- are in
  test_rootfs.py.)
- CVE-2025-31133: the /dev/null that masked paths are covered with is a symlink (to a procfs
  file, e.g. /proc/sys/kernel/core_pattern), a plain file or another device -- placed there by a
  /dev the config binds from a directory, statically or racing.  The masked paths must be the
  null device or the container must not be created.  (Nothing is ever written to the target.)
- CVE-2025-52881: the procfs files pyrunc writes (sysctls, oom_score_adj) have a file of the
  container bound over them at the path the container sees: the writes must reach the kernel,
  not the file.  (LSM attr files: pyrunc writes them through the host's /proc, see
  pyrunc/init/lsm.py; this host has no LSM to test them with.)
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import edit_config, needs_root, new_id
from security_helpers import bundle_on, create, host_mount_points, unescape

pytestmark = needs_root


class Racer:
    """``probe swap A B`` in the background: A and B trade places as fast as the kernel allows."""

    def __init__(self, probe: Path, a: Path, b: Path, seconds: float = 120) -> None:
        self.proc = subprocess.Popen([str(probe), "swap", str(a), str(b), str(seconds)],
                                     stdout=subprocess.PIPE, text=True)

    def stop(self) -> int:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return self.proc.returncode


def mount_dump_hook(bundle: Path) -> dict:
    """A createContainer hook that saves the init's mount table (host paths: before pivot_root)."""
    (bundle / "mi").mkdir()
    return {"path": "/bin/sh", "args": ["sh", "-c", f"cat /proc/self/mountinfo > {bundle}/mi/$$"]}


def new_mount_points(bundle: Path, before: set[str]) -> list[str]:
    """The mount points in the saved tables that the host's own table did not have."""
    points = []
    for dump in (bundle / "mi").iterdir():
        points += [unescape(line.split()[4]) for line in dump.read_text().splitlines()]
    return sorted(set(points) - before)


def inside(path: str, root: Path) -> bool:
    return path == str(root) or path.startswith(f"{root}/")


# ------------------------------------------------------------------------------ CVE-2021-30465


@pytest.mark.parametrize("link", ["absolute", "relative", "root"])
@pytest.mark.parametrize("race", [False, True], ids=["static", "racing"])
def test_cve_2021_30465_mounts_never_land_outside_the_rootfs(pyrunc, make_bundle, own_rootfs: Path, scratch: Path,
                                                             probe: Path, race: bool, link: str) -> None:
    outside = scratch / "outside"  # a host directory next to the rootfs
    outside.mkdir()
    (outside / "host-file").write_text("host\n")
    target = {"absolute": str(outside), "relative": "../../../../../../../../../.." + str(outside),
              "root": "/"}[link]
    mnt = own_rootfs / "mnt"
    for name in ("tmp", "bind"):
        if race:  # the directory and the link trade places
            (mnt / name).mkdir()
            os.symlink(target, mnt / f"{name}.link")
        else:  # the destination is the link
            os.symlink(target, mnt / name)
    bundle = bundle_on(make_bundle, own_rootfs, ["true"])
    (bundle / "payload").mkdir()
    edit_config(bundle, lambda c: (c["mounts"].extend([
        {"destination": "/mnt/tmp/sub", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
        {"destination": "/mnt/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
        {"destination": "/mnt/bind", "type": "bind", "source": "payload", "options": ["rbind"]}]),
        c.update(hooks={"createContainer": [mount_dump_hook(bundle)]})))
    before = host_mount_points()
    racer = None
    if race:  # a container that shares the rootfs swaps the destinations with the links
        racer_bundle = bundle_on(make_bundle, own_rootfs, ["sh", "-c", "probe swap /mnt/tmp /mnt/tmp.link 300 & "
                                                            "probe swap /mnt/bind /mnt/bind.link 300 & wait"],
                                 readonly=False)
        racer = new_id()
        pyrunc("run", "-d", "-b", str(racer_bundle), racer)
    made = failed = 0
    try:
        for _ in range(80 if race else 1):  # until the race has gone both ways a few times
            if race and made >= 5 and failed >= 5:
                break
            cid = new_id()
            p = pyrunc("create", "-b", str(bundle), cid, check=False)
            if p.returncode == 0:
                made += 1
                pyrunc("delete", "--force", cid)
            else:  # refused, or (a tmpfs over the root) nothing left to run: never out of the rootfs
                failed += 1
                assert "Traceback" not in p.stderr, p.stderr
    finally:
        if racer:
            pyrunc("delete", "--force", racer)
    new = new_mount_points(bundle, before) if (bundle / "mi").exists() else []
    escaped = [p for p in new if not inside(p, own_rootfs)]
    assert not escaped, f"mounts outside the rootfs {own_rootfs}: {escaped}"
    assert sorted(os.listdir(outside)) == ["host-file"] and (outside / "host-file").read_text() == "host\n"
    if race:  # mounts were made (on the directory) and the links were met
        assert made > 0 and failed > 0, f"the race went one way only ({made} made, {failed} failed)"


# ------------------------------------------------------------------------------ CVE-2025-31133


MASKED = "/etc/hostname"  # a file of the rootfs, masked (this kernel may have no /proc/kcore)


def dev_from_dir(bundle: Path, devdir: Path) -> None:
    """/dev bound from ``devdir`` (no /dev tmpfs, pts, shm, mqueue): nothing in it is made by pyrunc."""
    edit_config(bundle, lambda c: (c.update(mounts=[
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "bind", "source": str(devdir), "options": ["rbind"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}]),
        c["linux"]["maskedPaths"].append(MASKED)))


def masked_file_is_null(pid: int, path: str = MASKED.lstrip("/")) -> bool:
    st = os.stat(f"/proc/{pid}/root/{path}")
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)


@pytest.mark.parametrize("null", ["symlink-to-core_pattern", "regular-file", "dev-zero", "missing"])
def test_cve_2025_31133_masked_paths_get_only_the_null_device(pyrunc, make_bundle, own_rootfs: Path, scratch: Path,
                                                              null: str) -> None:
    devdir = scratch / "dev"
    devdir.mkdir()
    if null.startswith("symlink-to-"):
        os.symlink("/proc/sys/kernel/core_pattern", devdir / "null")  # global: a host escape if writable
    elif null == "regular-file":
        (devdir / "null").write_text("attacker's content\n")
    elif null == "dev-zero":  # ("missing": no /dev/null at all)
        os.mknod(devdir / "null", stat.S_IFCHR | 0o666, os.makedev(1, 5))
    bundle = bundle_on(make_bundle, own_rootfs, ["true"])
    dev_from_dir(bundle, devdir)
    listing = sorted(os.listdir(devdir))
    cid = new_id()
    p = pyrunc("create", "-b", str(bundle), cid, check=False)
    if p.returncode == 0:  # only a runtime that masked with whatever /dev/null was gets here
        pid = pyrunc.state(cid)["pid"]
        ok = masked_file_is_null(pid)
        pyrunc("delete", "--force", cid)
        assert ok, f"{MASKED} of the container was masked with {null}, not the null device"
    assert p.returncode != 0 and "/dev/null" in p.stderr, p.stderr
    assert sorted(os.listdir(devdir)) == listing  # nothing made, nothing removed in the bound directory


def test_cve_2025_31133_racing_dev_null(pyrunc, make_bundle, own_rootfs: Path, scratch: Path, probe: Path) -> None:
    """/dev/null trades places with a link to /proc/sys/kernel/core_pattern while containers are
    created: each is either refused or has the null device on its masked paths."""
    devdir = scratch / "dev"
    devdir.mkdir()
    os.mknod(devdir / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.symlink("/proc/sys/kernel/core_pattern", devdir / "evil")
    bundle = bundle_on(make_bundle, own_rootfs, ["true"])
    dev_from_dir(bundle, devdir)
    racer = Racer(probe, devdir / "null", devdir / "evil")
    made = refused = 0
    wrong = []
    try:
        for _ in range(30):
            cid = new_id()
            p = pyrunc("create", "-b", str(bundle), cid, check=False)
            if p.returncode == 0:
                made += 1
                if not masked_file_is_null(pyrunc.state(cid)["pid"]):
                    wrong.append(cid)
                pyrunc("delete", "--force", cid)
            else:
                refused += 1
                assert "/dev/null in the container is not the null device" in p.stderr, p.stderr
    finally:
        racer.stop()
    assert not wrong, f"containers masked with the race's link: {wrong}"
    assert made and refused, f"the race should go both ways ({made} made, {refused} refused)"


# ------------------------------------------------------------------------------ CVE-2025-52881


def netns_read(pid: int, path: str) -> str:
    """A procfs file as the container's namespaces make it (read by the host, through nsenter)."""
    return subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", f"--uts=/proc/{pid}/ns/uts", "cat", path],
                          check=True, capture_output=True, text=True).stdout


def test_cve_2025_52881_sysctls_reach_the_kernel_not_a_file_bound_over_them(pyrunc, make_bundle, own_rootfs: Path,
                                                                             scratch: Path) -> None:
    decoys = {}
    for name in ("ip_forward", "domainname"):
        decoys[name] = scratch / f"decoy-{name}"
        decoys[name].write_text("decoy\n")
    bundle = bundle_on(make_bundle, own_rootfs, ["true"])
    edit_config(bundle, lambda c: (c["mounts"].extend([
        {"destination": "/proc/sys/net/ipv4/ip_forward", "type": "bind", "source": str(decoys["ip_forward"]),
         "options": ["bind"]},
        {"destination": "/proc/sys/kernel/domainname", "type": "bind", "source": str(decoys["domainname"]),
         "options": ["bind"]}]),
        c["linux"].update(sysctl={"net.ipv4.ip_forward": "1", "kernel.domainname": "pyrunc-sysctl"})))
    cid, pid, _ = create(pyrunc, bundle)
    # the container sees the decoys at those paths ...
    seen = pyrunc("exec", cid, "cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/kernel/domainname").stdout
    assert seen == "decoy\ndecoy\n", seen
    # ... but the values went to its namespaces' kernel settings
    assert netns_read(pid, "/proc/sys/net/ipv4/ip_forward") == "1\n"
    assert netns_read(pid, "/proc/sys/kernel/domainname") == "pyrunc-sysctl\n"
    assert all(d.read_text() == "decoy\n" for d in decoys.values())
    pyrunc("delete", "--force", cid)


def test_cve_2025_52881_oom_score_adj_reaches_the_kernel(pyrunc, make_bundle, own_rootfs: Path,
                                                         scratch: Path) -> None:
    decoy = scratch / "decoy-oom"
    decoy.write_text("decoy\n")
    bundle = bundle_on(make_bundle, own_rootfs, ["sleep", "300"])
    # /proc/self is the init (pid 1 in there) when the mount is made: the decoy covers /proc/1/oom_score_adj
    edit_config(bundle, lambda c: (c["mounts"].append(
        {"destination": "/proc/self/oom_score_adj", "type": "bind", "source": str(decoy), "options": ["bind"]}),
        c["process"].update(oomScoreAdj=123)))
    cid, pid, _ = create(pyrunc, bundle)
    assert Path(f"/proc/{pid}/root/proc/1/oom_score_adj").read_text() == "decoy\n"
    assert Path(f"/proc/{pid}/oom_score_adj").read_text() == "123\n"
    pyrunc("start", cid)
    # exec's own process: written before it joins anything, so the decoy is not in its way either
    p = pyrunc("exec", "--process", str(process_json(bundle, scratch, 321)), cid)
    assert p.stdout.split() == ["321"], p.stdout
    assert decoy.read_text() == "decoy\n"
    pyrunc("delete", "--force", cid)


def process_json(bundle: Path, scratch: Path, oom: int) -> Path:
    import json

    proc = json.loads((bundle / "config.json").read_text())["process"]
    proc.update(args=["cat", "/proc/self/oom_score_adj"], oomScoreAdj=oom)
    path = scratch / "process.json"
    path.write_text(json.dumps(proc))
    return path
