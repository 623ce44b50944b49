"""Exploit regressions, part 3: the host around the containers.

- pyrunc changes nothing on the host outside the container's state and cgroup: the host's
  device nodes (/dev/null, /dev/zero, /dev/tty, ...: inode, type, mode, owner, rdev, mtime,
  ctime) and every file of the bundle are the same after a suite of containers that use them
  (user-namespaced and not, ``exec --user 1000:1000``, the host's nodes bound in, linux.devices
  with their own modes and owners, /dev/null on masked paths); a cgroupsPath with ``..`` stays
  inside the cgroup file systems;
- a ``kill -9`` of ``create`` after any of its steps, then ``delete --force``, leaves no state
  directory, cgroup, process or mount (the steps come from the PYRUNC_TEST_CRASH_AT hook in
  pyrunc/container.py);
- 50 concurrent create/start/delete on one --root all succeed, ``list`` stays consistent
  throughout, and nothing is left.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import TEST_PREFIX, build_userns_rootfs, edit_config, mkbundle, needs_root, new_id
from security_helpers import bundle_on, host_mount_points

pytestmark = needs_root

HOST_DEVICES = ["null", "zero", "tty", "full", "random", "urandom", "ptmx"]


def snapshot(paths: list[Path]) -> dict[str, tuple]:
    """What a runtime must not change: everything lstat says but the access time."""
    out = {}
    for top in paths:
        for p in [top] + (sorted(top.rglob("*")) if top.is_dir() and not top.is_symlink() else []):
            st = os.lstat(p)
            out[str(p)] = (st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_rdev, st.st_size, st.st_mtime_ns,
                           st.st_ctime_ns, os.readlink(p) if stat.S_ISLNK(st.st_mode) else None)
    return out


def changes(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    return [f"{k}: {before.get(k)} -> {after.get(k)}" for k in sorted(set(before) | set(after))
            if before.get(k) != after.get(k)]


def cgroup_dirs_named(name: str) -> list[str]:
    found = []
    for top, dirs, _ in os.walk("/sys/fs/cgroup"):
        found += [os.path.join(top, d) for d in dirs if d == name]
        if top.count("/") > 8:
            dirs[:] = []
    return found


def processes_marked(mark: str) -> list[int]:
    """Live processes whose environment or cgroup names ``mark`` (zombies are their reaper's)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                continue
            if mark.encode() in Path(f"/proc/{pid}/environ").read_bytes() or \
                    f"/{mark}\n" in Path(f"/proc/{pid}/cgroup").read_text():
                out.append(int(pid))
        except OSError:
            continue
    return out


# ------------------------------------------------------------------------- host files untouched


DEV_SCRIPT = ("echo x > /dev/null; head -c 8 /dev/zero > /dev/null; head -c 8 /dev/urandom > /dev/null; "
              "echo x > /dev/full 2>/dev/null; ls -l /dev > /dev/null; true")


def test_host_device_nodes_and_bundle_files_are_never_changed(pyrunc, make_bundle, scratch: Path) -> None:
    rootfs = mkbundle.build_rootfs(scratch / "rootfs")
    (rootfs / "etc/secret").write_text("secret\n")
    # a user namespace must be able to use it: its root owns it, as an engine would arrange
    for top, dirs, files in os.walk(rootfs):
        for name in dirs + files:
            os.lchown(os.path.join(top, name), 100000, 100000)
    os.lchown(rootfs, 100000, 100000)
    devices = [{"type": "c", "path": f"/dev/{n}", "major": os.major(os.stat(f"/dev/{n}").st_rdev),
                "minor": os.minor(os.stat(f"/dev/{n}").st_rdev), "fileMode": 0o600, "uid": 1000, "gid": 1000}
               for n in ("null", "zero", "tty", "full", "random", "urandom")]
    host_binds = [{"destination": f"/dev/{n}", "type": "bind", "source": f"/dev/{n}", "options": ["bind"]}
                  for n in ("null", "zero", "urandom")]
    allow = {"devices": [{"allow": True, "type": "c", "major": 1, "access": "rwm"},
                         {"allow": True, "type": "c", "major": 5, "access": "rwm"}]}
    variants = {
        "plain": {},
        "userns": {"userns": True},
        "devices": {"devices": devices},
        "userns-devices": {"userns": True, "devices": devices},
        "host-binds": {"mounts": host_binds, "masked": ["/dev/null", "/etc/secret"]},
        "userns-host-binds": {"userns": True, "mounts": host_binds, "masked": ["/etc/secret"]},
    }
    bundles = {}
    for name, v in variants.items():
        bundle = bundle_on(make_bundle, rootfs, ["sleep", "300"], userns=v.get("userns", False))

        def edit(c: dict, v: dict = v) -> None:
            c["linux"]["devices"] = v.get("devices", [])
            c["linux"]["resources"] = allow
            c["mounts"] += v.get("mounts", [])
            c["linux"]["maskedPaths"] += v.get("masked", [])
        edit_config(bundle, edit)
        bundles[name] = bundle
    watched = [Path(f"/dev/{n}") for n in HOST_DEVICES if os.path.exists(f"/dev/{n}")]
    before = snapshot(watched + [rootfs] + list(bundles.values()))
    for name, bundle in bundles.items():
        cid = new_id()
        out = scratch / f"out-{name}"  # (not in the bundle, which must stay as it was)
        with open(out, "w") as f:
            p = pyrunc("create", "-b", str(bundle), cid, stdout=f, stderr=f, check=False)
        assert p.returncode == 0, (name, out.read_text())
        pyrunc("start", cid)
        for user in (["--user", "1000:1000"], []):
            p = pyrunc("exec", *user, cid, "sh", "-c", DEV_SCRIPT, check=False)
            assert p.returncode == 0, (name, user, p.stderr)
        pyrunc("delete", "--force", cid)
    after = snapshot(watched + [rootfs] + list(bundles.values()))
    assert not changes(before, after), "\n".join(changes(before, after))


def test_cgroups_path_with_dot_dot_stays_in_the_cgroup_file_systems(pyrunc, make_bundle) -> None:
    """linux.cgroupsPath is cleaned as runc's CleanPath does: ``..`` cannot climb out of the cgroup
    mounts (a naive join would make /<name> on the host's root and write limits into it)."""
    for absolute in (False, True):
        name = new_id()
        path = ("/" if absolute else "") + "../" * 12 + name
        bundle = make_bundle(["true"])
        edit_config(bundle, lambda c, path=path: c["linux"].update(cgroupsPath=path))
        cid = new_id()
        pyrunc("create", "-b", str(bundle), cid)
        made = cgroup_dirs_named(name)
        assert made and all(d.startswith("/sys/fs/cgroup/") for d in made), made
        assert not os.path.exists(f"/{name}")
        pyrunc("delete", "--force", cid)
        assert cgroup_dirs_named(name) == []


# ------------------------------------------------------------------ kill -9 at every step of create

CRASH_STEPS = ["dir", "config", "state", "spawn", "cgroup-create", "cgroup-apply", "cgroup-add", "usermap", "pid",
               "hooks", "mount-fd", "ready", "pidfile"]


@pytest.fixture(scope="module")
def userns_rootfs(workdir: Path) -> Path:
    """A rootfs owned by the mapped range, so that the user namespace's root owns it."""
    return build_userns_rootfs(workdir / f"security-userns-rootfs-{os.getpid()}")


@pytest.mark.parametrize("step", CRASH_STEPS + ["no-such-step"])
def test_kill_9_after_each_step_of_create_then_delete_force_leaves_nothing(pyrunc, make_bundle, userns_rootfs: Path,
                                                                           scratch: Path, step: str) -> None:
    src = scratch / "idmap-src"
    src.mkdir()
    src.chmod(0o755)
    # every step happens: a user namespace (usermap), a createRuntime hook (hooks), an idmapped
    # mount (mount-fd), a pid file (pidfile)
    bundle = bundle_on(make_bundle, userns_rootfs, ["sleep", "300"], userns=True)
    edit_config(bundle, lambda c: (
        c["mounts"].append({"destination": "/mnt", "type": "bind", "source": str(src), "options": ["bind", "idmap"]}),
        c.update(hooks={"createRuntime": [{"path": "/bin/true"}]})))
    cid = new_id()
    mark = f"PYRUNC_TEST_MARK={cid}"
    mounts_before = host_mount_points()
    env = dict(os.environ, PYRUNC_TEST_CRASH_AT=step, PYRUNC_TEST_MARK=cid)
    p = pyrunc("create", "-b", str(bundle), "--pid-file", str(scratch / "pid"), cid, check=False, env=env)
    if step == "no-such-step":
        assert p.returncode == 0, p.stderr
    else:
        assert p.returncode == -9, f"create was not killed at {step}: {p.returncode} {p.stderr}"
        if step in CRASH_STEPS[CRASH_STEPS.index("state"):]:
            assert pyrunc.state(cid)["status"] == "stopped"  # a half-made container: only delete is left
    d = pyrunc("delete", "--force", cid, check=False)
    assert d.returncode == 0, d.stderr
    assert not (pyrunc.root / cid).exists(), os.listdir(pyrunc.root / cid)
    assert cid not in pyrunc.ids()
    assert cgroup_dirs_named(cid) == []
    deadline = time.monotonic() + 5
    while processes_marked(mark.split("=", 1)[1]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_marked(mark.split("=", 1)[1]) == []
    ours = (cid, str(scratch), str(userns_rootfs), str(pyrunc.root))  # other sessions may mount meanwhile
    assert {m for m in host_mount_points() - mounts_before if any(o in m for o in ours)} == set()
    assert os.listdir(src) == []


# -------------------------------------------------------------------- 50 at once on one --root


def test_fifty_concurrent_lifecycles_on_one_root(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["true"])
    ids = [new_id() for _ in range(50)]
    stop = threading.Event()
    listings: list[object] = []
    problems: list[str] = []

    def lister() -> None:
        while not stop.is_set():
            p = pyrunc("list", "--format", "json", check=False)
            if p.returncode != 0:
                problems.append(f"list failed: {p.stderr}")
                continue
            try:
                doc = json.loads(p.stdout) or []
            except ValueError:
                problems.append(f"list printed no JSON: {p.stdout!r}")
                continue
            for c in doc:
                if c["id"] not in ids or c["status"] not in ("created", "running", "stopped", "creating"):
                    problems.append(f"odd entry: {c}")
            listings.append(len(doc))

    def lifecycle(cid: str) -> str:
        steps = [("create", "-b", str(bundle), cid), ("start", cid)]
        for argv in steps:
            p = pyrunc(*argv, check=False, timeout=120)
            if p.returncode != 0:
                return f"{argv[0]} {cid}: {p.stderr}"
        deadline = time.monotonic() + 60
        while json.loads(pyrunc("state", cid).stdout)["status"] != "stopped":
            if time.monotonic() > deadline:
                return f"{cid} never stopped"
            time.sleep(0.05)
        p = pyrunc("delete", cid, check=False, timeout=120)
        return "" if p.returncode == 0 else f"delete {cid}: {p.stderr}"

    watcher = threading.Thread(target=lister)
    watcher.start()
    try:
        with ThreadPoolExecutor(max_workers=50) as pool:
            results = list(pool.map(lifecycle, ids))
    finally:
        stop.set()
        watcher.join()
    assert [r for r in results if r] == []
    assert problems == []
    assert listings and max(listings) > 1  # the lister did see them come and go
    assert pyrunc("list", "--format", "json").stdout.strip() == "null"
    assert not [n for n in os.listdir(pyrunc.root) if n.startswith(TEST_PREFIX)]
    assert not [d for cid in ids for d in cgroup_dirs_named(cid)]
    assert not [p for cid in ids for p in processes_marked(cid)]


def test_crash_hook_is_read_once_and_only_by_create() -> None:
    """The hook costs one environment lookup at import and a string compare per step of create."""
    pkg = Path(__file__).resolve().parents[2] / "pyrunc"
    users = sorted(str(f.relative_to(pkg)) for f in pkg.rglob("*.py") if "PYRUNC_TEST_CRASH_AT" in f.read_text())
    assert users == ["container.py"]
    src = (pkg / "container.py").read_text()
    assert src.count('os.environ.get("PYRUNC_TEST_CRASH_AT")') == 1 and src.count("os.environ") == 1
