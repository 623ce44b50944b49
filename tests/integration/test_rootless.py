"""Rootless pyrunc: an unprivileged user runs containers with a user namespace, as with runc.

The tests run pyrunc as ``pyrunc-rootless``, a normal user made here with useradd if missing
and kept (reused idempotently by later runs and concurrent sessions: removing it while
another session runs as it would break that session).  Its commands get a clean environment
with XDG_RUNTIME_DIR set to a directory of its own, made per test, so that the state lands
in ``$XDG_RUNTIME_DIR/pyrunc``; each test deletes its containers and checks that state root
is empty, and that their processes are gone.  The bundles and a busybox rootfs belong to
the user.

The user must be able to run pyrunc: when the checkout is in a directory it cannot reach
(CI may clone into root's 0700 home), the tests run a readable copy of the package (and
python-prctl's C module) under the session's /tmp work directory, with the base interpreter
the venv was made from.  PYRUNC_ROOTLESS_COPY=1 forces the copy.

On this kind of host a normal user has no delegated cgroup: a rootless container then has
no cgroup at all (``ps`` and ``kill --all`` go by its PID namespace), and a limit is an
error naming it.  One test delegates a v1 pids cgroup to the user to show that what is
delegated is used.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pty
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import PYRUNC, REPO, TEST_PREFIX, fail_run, mkbundle, needs_root, new_id, run_captured

pytestmark = needs_root

USER = "pyrunc-rootless"
# runc spec's capabilities: AUDIT_WRITE (29), KILL (5), NET_BIND_SERVICE (10)
SPEC_CAPS = (1 << 29) | (1 << 5) | (1 << 10)


# ------------------------------------------------------------------------------------ set-up


@pytest.fixture(scope="module")
def user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        pass
    p = subprocess.run(["useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell",
                        "/usr/sbin/nologin", "--user-group", USER], capture_output=True, text=True, check=False)
    if p.returncode not in (0, 9):  # 9: a concurrent session made it meanwhile
        pytest.fail(f"useradd {USER} failed: {p.stderr}")
    return pwd.getpwnam(USER)


def _user_can_run(argv: list[str], pw: pwd.struct_passwd) -> bool:
    try:
        p = subprocess.run(argv + ["--version"], user=pw.pw_uid, group=pw.pw_gid, extra_groups=[], cwd="/",
                           env={"PATH": "/usr/bin:/bin"}, capture_output=True, check=False, timeout=30)
    except OSError:  # e.g. EACCES: the checkout is in a directory the user cannot reach
        return False
    return p.returncode == 0


class Install:
    """What the user runs: ``launcher`` (pyrunc's command line), ``python`` with ``paths``."""

    def __init__(self, launcher: str, python: str, paths: list[str]) -> None:
        self.launcher, self.python, self.paths = launcher, python, paths

    def python_argv(self, code: str) -> list[str]:
        return [self.python, "-I", "-S", "-c", f"import sys; sys.path[:0] = {self.paths!r}\n{code}"]


@pytest.fixture(scope="module")
def install(user: pwd.struct_passwd, workdir: Path) -> Install:
    """The checkout's launcher, or a copy of pyrunc the user can read."""
    spec = importlib.util.find_spec("_prctl")
    assert spec is not None and spec.origin is not None
    if os.environ.get("PYRUNC_ROOTLESS_COPY") != "1" and _user_can_run([PYRUNC], user):
        return Install(PYRUNC, sys.executable, [str(REPO), os.path.dirname(spec.origin)])
    base = Path(tempfile.mkdtemp(prefix="rootless-install-", dir=workdir))
    base.chmod(0o755)
    shutil.copytree(REPO / "pyrunc", base / "pyrunc", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "spec", base / "spec")
    site = base / "site"
    site.mkdir()
    shutil.copy(spec.origin, site)
    from pyrunc.launcher import TEMPLATE
    dest = base / "pyrunc-launcher"
    python, paths = os.path.realpath(sys.executable), [str(base), str(site)]
    dest.write_text(TEMPLATE.format(python=python, paths=paths))
    for p in [base, *base.rglob("*")]:
        p.chmod(0o755 if p.is_dir() or p == dest or p.suffix == ".so" else 0o644)
    if not _user_can_run([str(dest)], user):
        pytest.skip(f"{USER} can run neither {PYRUNC} nor a copy of pyrunc in {base}")
    return Install(str(dest), python, paths)


@pytest.fixture(scope="module")
def user_rootfs(user: pwd.struct_passwd, workdir: Path) -> Path:
    """A busybox rootfs that belongs to the user."""
    base = Path(tempfile.mkdtemp(prefix="rootless-rootfs-", dir=workdir))
    base.chmod(0o755)
    path = base / "rootfs"
    mkbundle.build_rootfs(path)
    _chown_tree(path, user)
    return path


def _chown_tree(path: Path, pw: pwd.struct_passwd) -> None:
    os.lchown(path, pw.pw_uid, pw.pw_gid)
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(top, name), pw.pw_uid, pw.pw_gid)


class AsUser:
    """Runs the pyrunc command line as the user, in ``bundle``, with XDG_RUNTIME_DIR = ``xdg``."""

    def __init__(self, install: Install, pw: pwd.struct_passwd, base: Path) -> None:
        self.install = install
        self.launcher = install.launcher
        self.pw = pw
        self.base = base
        self.xdg = base / "xdg"
        self.bundle = base / "bundle"
        self.ids: list[str] = []
        self.pids: list[int] = []
        os.chown(base, pw.pw_uid, pw.pw_gid)  # 0755: everything below is the user's
        for d in (self.xdg, self.bundle):
            d.mkdir(mode=0o700)
            os.chown(d, pw.pw_uid, pw.pw_gid)

    @property
    def root(self) -> Path:
        return self.xdg / "pyrunc"

    def env(self, xdg: bool = True) -> dict[str, str]:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.base), "USER": USER, "LOGNAME": USER}
        if xdg:
            env["XDG_RUNTIME_DIR"] = str(self.xdg)
        return env

    def run_argv(self, argv: list[str], check: bool = True, xdg: bool = True, timeout: float = 60,
                 cwd: Path | None = None) -> subprocess.CompletedProcess:
        p = run_captured(argv, user=self.pw.pw_uid, group=self.pw.pw_gid, extra_groups=[],
                         env=self.env(xdg), cwd=cwd or self.bundle, timeout=timeout)
        if check and p.returncode != 0:
            fail_run(p, f"as {USER}: {' '.join(argv)}")
        return p

    def __call__(self, *args: str, **kw: object) -> subprocess.CompletedProcess:
        return self.run_argv([self.launcher, *args], **kw)  # type: ignore[arg-type]

    def new_id(self) -> str:
        cid = new_id()
        self.ids.append(cid)
        return cid

    def state(self, cid: str) -> dict:
        st = json.loads(self("state", cid).stdout)
        if st["pid"]:
            self.pids.append(st["pid"])
        return st

    def spec(self, args: list[str], **process: object) -> dict:
        """`pyrunc spec --rootless` in the bundle (as the user), then our edits."""
        cfg_path = self.bundle / "config.json"
        if cfg_path.exists():
            cfg_path.unlink()
        self("spec", "--rootless")
        cfg = json.loads(cfg_path.read_text())
        cfg["process"].update({"terminal": False, "args": args, **process})
        self.write(cfg)
        return cfg

    def write(self, cfg: dict) -> None:
        path = self.bundle / "config.json"
        path.write_text(json.dumps(cfg, indent=1))
        os.chown(path, self.pw.pw_uid, self.pw.pw_gid)

    def cleanup(self) -> list[str]:
        problems = []
        if self.root.exists():
            for cid in json.loads(self("list", "--format", "json", check=False).stdout or "null") or []:
                self("delete", "--force", cid["id"], check=False)
            left = os.listdir(self.root)
            if left:
                problems.append(f"state directories left in {self.root}: {left}")
        deadline = time.monotonic() + 5
        alive = [pid for pid in self.pids if _alive(pid)]
        while alive and time.monotonic() < deadline:
            time.sleep(0.05)
            alive = [pid for pid in alive if _alive(pid)]
        if alive:
            problems.append(f"container processes left: {alive}")
        cgroups = [str(p) for p in Path("/sys/fs/cgroup").glob("*/**/") if p.name in self.ids]
        if cgroups:
            problems.append(f"cgroups left: {cgroups}")
        return problems


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for the host's init does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.fixture
def rl(install: Install, user: pwd.struct_passwd, user_rootfs: Path, workdir: Path) -> AsUser:
    base = Path(tempfile.mkdtemp(prefix="rootless-", dir=workdir))
    base.chmod(0o755)
    runner = AsUser(install, user, base)
    (runner.bundle / "rootfs").symlink_to(user_rootfs)
    os.lchown(runner.bundle / "rootfs", user.pw_uid, user.pw_gid)
    yield runner
    problems = runner.cleanup()
    shutil.rmtree(base, ignore_errors=True)
    assert not problems, "\n".join(problems)


def _our_cgroup_dirs(cid: str) -> list[str]:
    found = []
    for top, dirs, _files in os.walk("/sys/fs/cgroup"):
        found.extend(os.path.join(top, d) for d in dirs if d == cid)
        if top.count("/") > 8:
            dirs[:] = []
    return found


# ------------------------------------------------------------------------------------ spec


def test_spec_rootless_is_runcs_to_rootless(rl: AsUser, user: pwd.struct_passwd) -> None:
    rl("spec", "--rootless")
    cfg = json.loads((rl.bundle / "config.json").read_text())
    linux = cfg["linux"]
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": user.pw_uid, "size": 1}]
    assert linux["gidMappings"] == [{"containerID": 0, "hostID": user.pw_gid, "size": 1}]
    kinds = [n["type"] for n in linux["namespaces"]]
    assert "network" not in kinds and kinds[-1] == "user" and kinds.count("user") == 1
    assert "resources" not in linux
    sys_mount = [m for m in cfg["mounts"] if m["destination"] == "/sys"]
    assert sys_mount == [{"destination": "/sys", "type": "none", "source": "/sys",
                          "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}]
    assert not [o for m in cfg["mounts"] for o in m.get("options", []) if o.startswith(("uid=", "gid="))]
    assert "ambient" not in cfg["process"]["capabilities"]  # runc 1.2+: ambient needs inheritable
    runc = shutil.which("runc")
    if runc is None:
        return
    # The same mounts, namespaces and mappings as the runc installed here writes (its other
    # fields differ by version: hostname, capabilities).
    other = rl.base / "runc-spec"
    other.mkdir()
    os.chown(other, user.pw_uid, user.pw_gid)
    rl.run_argv([runc, "spec", "--rootless"], cwd=other)
    theirs = json.loads((other / "config.json").read_text())
    assert cfg["mounts"] == theirs["mounts"]
    assert linux["namespaces"] == theirs["linux"]["namespaces"]
    for key in ("uidMappings", "gidMappings", "maskedPaths", "readonlyPaths"):
        assert linux[key] == theirs["linux"][key], key
    assert "resources" not in theirs["linux"]


# ------------------------------------------------------------------------------------ run


def test_run_as_an_unprivileged_user(rl: AsUser, user: pwd.struct_passwd) -> None:
    shared = rl.base / "shared"
    shared.mkdir()
    os.chown(shared, user.pw_uid, user.pw_gid)
    cfg = rl.spec(["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups; id; hostname;"
                   " grep -E '^Cap(Eff|Amb|Bnd)' /proc/self/status; echo made > /data/file;"
                   " ls -ln /dev/null; touch /x 2>/dev/null || echo read-only root"])
    cfg["mounts"].append({"destination": "/data", "type": "bind", "source": str(shared), "options": ["rbind", "rw"]})
    rl.write(cfg)
    cid = rl.new_id()
    p = rl("run", cid)
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["0", str(user.pw_uid), "1"]
    assert lines[1].split() == ["0", str(user.pw_gid), "1"]
    assert lines[2] == "deny"  # a one-id gid map of our own: setgroups denied first (kernel rule)
    assert lines[3].startswith("uid=0(root) gid=0(root)")
    assert lines[4] == "pyrunc"
    caps = dict(line.split(":\t") for line in lines[5:8])
    assert int(caps["CapEff"], 16) == SPEC_CAPS and int(caps["CapBnd"], 16) == SPEC_CAPS
    assert int(caps["CapAmb"], 16) == 0
    # /dev/null is the host's node bound in (mknod is not allowed in a user namespace), so it
    # belongs to an unmapped id: the overflow id
    assert lines[8].startswith("crw-rw-rw-") and " 65534 " in lines[8] and "1,   3" in lines[8]
    assert lines[9] == "read-only root"
    assert p.stderr == ""  # no resources, no cgroup: nothing to warn about
    st = os.stat(shared / "file")
    assert (st.st_uid, st.st_gid) == (user.pw_uid, user.pw_gid)
    assert (shared / "file").read_text() == "made\n"
    # the state root is runc's: $XDG_RUNTIME_DIR/<runtime>, 0700 with the sticky bit, the user's
    st = os.stat(rl.root)
    assert stat.S_IMODE(st.st_mode) == 0o1700 and st.st_uid == user.pw_uid
    assert os.listdir(rl.root) == []  # run deleted it
    assert _our_cgroup_dirs(cid) == []


def test_lifecycle_exec_ps_list_as_the_user(rl: AsUser, user: pwd.struct_passwd) -> None:
    rl.spec(["sh", "-c", "sleep 1000 & exec sleep 1001"])
    cid = rl.new_id()
    pid_file = rl.base / "pid"
    rl("create", "--pid-file", str(pid_file), cid)
    st = rl.state(cid)
    assert st["status"] == "created" and st["pid"] == int(pid_file.read_text())
    assert os.stat(f"/proc/{st['pid']}").st_uid == user.pw_uid  # the container runs as the user
    assert (rl.root / cid).is_dir()
    listed = json.loads(rl("list", "--format", "json").stdout)
    assert [(c["id"], c["status"], c["owner"]) for c in listed] == [(cid, "created", USER)]
    assert rl("list", "-q").stdout == cid + "\n"

    rl("start", cid)
    init = rl.state(cid)["pid"]
    assert rl.state(cid)["status"] == "running"
    p = rl("exec", cid, "sh", "-c", "id -u; cat /proc/self/uid_map; hostname")
    assert p.stdout.split("\n")[0] == "0" and p.stdout.split()[1:4] == ["0", str(user.pw_uid), "1"]
    assert p.stdout.splitlines()[-1] == "pyrunc"
    assert rl("exec", cid, "sh", "-c", "exit 3", check=False).returncode == 3

    # no cgroup (not delegated): ps goes by the container's PID namespace
    assert _our_cgroup_dirs(cid) == []
    deadline = time.monotonic() + 10
    while True:
        pids = json.loads(rl("ps", "--format", "json", cid).stdout)
        if len(pids) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert init in pids and len(pids) == 2, pids
    rl.pids.extend(pids)
    table = rl("ps", cid).stdout.splitlines()
    assert "PID" in table[0] and any("sleep 1001" in line for line in table[1:])

    # so does a limit set by update
    p = rl("update", "--pids-limit", "50", cid, check=False)
    assert p.returncode == 1 and "cannot set pids limit: container could not join or create cgroup" in p.stderr

    # pause needs a freezer cgroup: runc's words
    p = rl("pause", cid, check=False)
    assert p.returncode == 1 and "cannot toggle freezer: cgroups not configured for container" in p.stderr

    # kill --all reaches every process of the PID namespace (PID 1 ignores SIGTERM)
    rl("kill", "--all", cid, "TERM")
    deadline = time.monotonic() + 10
    while json.loads(rl("ps", "--format", "json", cid).stdout) != [init] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert json.loads(rl("ps", "--format", "json", cid).stdout) == [init]
    rl("kill", cid, "KILL")
    deadline = time.monotonic() + 10
    while rl.state(cid)["status"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rl.state(cid)["status"] == "stopped"
    rl("delete", cid)
    assert os.listdir(rl.root) == []
    assert json.loads(rl("list", "--format", "json").stdout) is None
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if _alive(pid)]


def test_terminal_of_the_default_rootless_spec(rl: AsUser, user: pwd.struct_passwd) -> None:
    """`spec --rootless` asks for a terminal: a devpts of the container's user namespace (no gid=5)."""
    cfg = rl.spec(["sh", "-c", "tty; stat -c '%u %g' $(tty)"], terminal=True)
    assert cfg["process"]["terminal"] is True
    cid = rl.new_id()
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.chdir(rl.bundle)
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            os.execve(rl.launcher, [rl.launcher, "run", cid], rl.env())
        finally:
            os._exit(127)
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        out += chunk
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace").replace("\r", "")
    assert os.waitstatus_to_exitcode(status) == 0, text
    lines = text.splitlines()
    assert lines[0].startswith("/dev/pts/"), text
    assert lines[1] == "0 0", text  # owned by the container's root, in its own devpts
    assert os.listdir(rl.root) == []


# ------------------------------------------------------------------------------------ state root


def test_state_root_without_xdg_runtime_dir_is_runcs_fallback(rl: AsUser) -> None:
    rl.spec(["true"])
    cid = rl.new_id()
    p = rl("create", cid, xdg=False, check=False)
    if os.path.isdir("/run/pyrunc") and os.stat("/run/pyrunc").st_mode & 0o002:
        pytest.skip("/run/pyrunc is world-writable here")
    # runc falls back to /run/runc, which the user cannot write: so does pyrunc, and says why
    assert p.returncode == 1
    assert "/run/pyrunc" in p.stderr and "XDG_RUNTIME_DIR" in p.stderr and "Traceback" not in p.stderr
    assert not os.path.exists(f"/run/pyrunc/{cid}")
    # --root works without it
    own = rl.base / "own-root"
    rl("--root", str(own), "run", cid, xdg=False)
    assert os.listdir(own) == []
    assert not rl.xdg.joinpath("pyrunc").exists()


# ------------------------------------------------------------------------------------ cgroups


def test_limits_without_a_delegated_cgroup_are_errors_naming_them(rl: AsUser) -> None:
    cfg = rl.spec(["true"])
    for resources, name in (({"memory": {"limit": 64 << 20}}, "memory"), ({"pids": {"limit": 10}}, "pids"),
                            ({"cpu": {"shares": 512}}, "cpu")):
        cfg["linux"]["resources"] = resources
        rl.write(cfg)
        cid = rl.new_id()
        p = rl("run", cid, check=False)
        assert p.returncode == 1, p.stderr
        # runc: "cannot set memory limit: container could not join or create cgroup"
        assert f"cannot set {name} limit: container could not join or create cgroup" in p.stderr, p.stderr
        assert "linux.resources." in p.stderr and "Permission denied" in p.stderr
        assert os.listdir(rl.root) == [] and _our_cgroup_dirs(cid) == []


def test_device_rules_are_ignored_with_a_warning(rl: AsUser) -> None:
    cfg = rl.spec(["sh", "-c", "head -c 4 /dev/zero | od -An -tx1"])
    # runc's default spec denies every device; a rootless container cannot enforce it (runc
    # ignores it silently), so it can still open /dev/zero, and we warn
    cfg["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"}], "memory": {}}
    rl.write(cfg)
    p = rl("run", rl.new_id())
    assert p.stdout.split() == ["00", "00", "00", "00"]
    assert "linux.resources.devices: ignored" in p.stderr and "level=warning" in p.stderr


def test_no_pid_namespace_and_no_cgroup_is_warned_about(rl: AsUser) -> None:
    cfg = rl.spec(["true"])
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "pid"]
    # proc can only be mounted by the owner of the PID namespace (runc fails alike)
    cfg["mounts"] = [m for m in cfg["mounts"] if m["type"] != "proc"]
    rl.write(cfg)
    p = rl("run", rl.new_id())
    assert "no cgroup and no private pid namespace" in p.stderr


def test_rootless_false_or_a_cgroups_path_make_permission_errors_fatal(rl: AsUser) -> None:
    cfg = rl.spec(["true"])
    cid = rl.new_id()
    p = rl("--rootless", "false", "run", cid, check=False)
    assert p.returncode == 1 and "cannot create cgroup" in p.stderr and "Permission denied" in p.stderr
    assert os.listdir(rl.root) == [] and _our_cgroup_dirs(cid) == []
    # runc: "rootless + no limits + cgrouppath + no permission fails with permission error"
    cfg["linux"]["cgroupsPath"] = f"/{cid}"
    rl.write(cfg)
    p = rl("run", cid, check=False)
    assert p.returncode == 1 and "cannot create cgroup /sys/fs/cgroup/" in p.stderr, p.stderr
    assert "Permission denied" in p.stderr
    assert os.listdir(rl.root) == [] and _our_cgroup_dirs(cid) == []


def test_a_delegated_cgroup_is_used(rl: AsUser, user: pwd.struct_passwd) -> None:
    """Delegation of one v1 hierarchy: the container gets a cgroup there (and its limit), and
    goes without the others."""
    from pyrunc.cgroups.paths import host_mounts

    mounts = host_mounts()
    if mounts.layout == "v2" or "pids" not in mounts.v1:
        pytest.skip("needs a cgroup v1 pids hierarchy (v2 delegation is systemd's business)")
    if mounts.v1["pids"].root != "/":
        pytest.skip("the pids hierarchy is not mounted from its root here")
    deleg = Path(mounts.v1["pids"].mountpoint) / f"{TEST_PREFIX}deleg"
    deleg.mkdir()
    try:
        for p in (deleg, deleg / "cgroup.procs", deleg / "tasks"):
            os.chown(p, user.pw_uid, user.pw_gid)
        rl.spec(["sh", "-c", "grep pids /proc/self/cgroup; sleep 1000"])
        cfg = json.loads((rl.bundle / "config.json").read_text())
        cfg["linux"]["resources"] = {"pids": {"limit": 42}}
        rl.write(cfg)
        cid = rl.new_id()
        # the user's pyrunc runs in the delegated cgroup: a relative (default) cgroup path is below it
        enter = f'echo $$ > {deleg}/cgroup.procs && exec "$@"'
        rl.run_argv(["/bin/sh", "-c", enter, "sh", rl.launcher, "run", "--detach", cid])
        init = rl.state(cid)["pid"]
        mine = deleg / cid
        assert (mine / "pids.max").read_text().strip() == "42"
        assert init in [int(x) for x in (mine / "cgroup.procs").read_text().split()]
        assert rl("ps", "--format", "json", cid).stdout.strip() == f"[{init}]"
        out = rl("exec", cid, "grep", "pids", "/proc/self/cgroup").stdout
        assert out.strip().endswith(f"{deleg.name}/{cid}")
        assert [d for d in _our_cgroup_dirs(cid) if not d.startswith(str(deleg))] == []
        rl("delete", "--force", cid)
        assert not mine.exists()
        assert os.listdir(rl.root) == []
    finally:
        for cid in rl.ids:  # after a failure: what is left below the delegated cgroup first
            rl("delete", "--force", cid, check=False)
        for _ in range(50):
            try:
                deleg.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:  # processes still leaving it
                time.sleep(0.1)


_V2_SCRIPT = """
import os
from pyrunc.cgroups import manager_from_state
from pyrunc.cgroups.base import CgroupError
from pyrunc.cgroups.v2 import V2Manager
from pyrunc.config import DeviceRule, Memory, Pids, Resources
mount, path = sys.argv[1], sys.argv[2]
def expect(fn, words):
    try:
        fn()
    except CgroupError as e:
        assert all(w in str(e) for w in words), str(e)
    else:
        raise AssertionError(f"no error, expected {words}")
# rootless, no cgroupsPath, no limits: no cgroup, no error (runc's ErrRootless)
m = V2Manager(path, mount, rootless=True, may_skip=True)
m.create(Resources())
assert m.dir == "" and not m.exists() and "Permission denied" in m.skipped[""]
m.apply(Resources(devices=[DeviceRule(False)]))
assert m.devices_ignored
m.add(os.getpid())
assert m.pids() == [] and m.oom_kills() is None and not m.frozen()
expect(m.freeze, ["pause", "cannot toggle freezer: cgroups not configured for container"])
expect(lambda: m.apply(Resources(pids=Pids(limit=5))),
       ["linux.resources.pids.limit", "cannot set pids limit: container could not join or create cgroup"])
again = manager_from_state(m.to_state())
assert again.rootless and again.dir == "" and not again.exists()
again.kill_all(9)
again.destroy()
# a limit that needs the cgroup: runc's "rootless needs no limits + no cgrouppath", naming it
m = V2Manager(path, mount, rootless=True, may_skip=True)
expect(lambda: m.create(Resources(memory=Memory(limit=1 << 26))),
       ["linux.resources.memory", "cannot set memory limit", "Permission denied"])
# with a cgroupsPath (no skipping), or not rootless: the permission error itself
for m in (V2Manager(path, mount, rootless=True, may_skip=False), V2Manager(path, mount)):
    expect(lambda: m.create(Resources()), ["cannot create cgroup", "Permission denied"])
print("ok")
"""


def test_cgroup_v2_without_delegation(rl: AsUser) -> None:
    """The cgroup v2 manager's rootless rules, as the user, against this host's cgroup2 mount
    (on a pure v2 host the tests above go through them from the command line)."""
    from pyrunc.cgroups.paths import host_mounts

    unified = host_mounts().unified
    if unified is None:
        pytest.skip("no cgroup2 mount")
    path = f"{unified.mountpoint}/{rl.new_id()}"
    p = rl.run_argv(rl.install.python_argv(_V2_SCRIPT) + [unified.mountpoint, path])
    assert p.stdout == "ok\n"
    assert not os.path.exists(path)


# ------------------------------------------------------------------------------------ ids and process


def test_more_ids_are_mapped_with_newuidmap(rl: AsUser, user: pwd.struct_passwd) -> None:
    if not (shutil.which("newuidmap") and shutil.which("newgidmap")):
        pytest.skip("newuidmap/newgidmap (package uidmap) are not installed")
    ranges = {}
    for kind in ("uid", "gid"):
        for line in Path(f"/etc/sub{kind}").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in (USER, str(user.pw_uid)):
                start, _, count = rest.partition(":")
                ranges[kind] = (int(start), int(count))
                break
    if len(ranges) != 2 or min(c for _, c in ranges.values()) < 1001:
        pytest.skip(f"{USER} has no /etc/subuid and /etc/subgid ranges of 1001 ids or more")
    cfg = rl.spec(["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups; id"],
                  user={"uid": 1000, "gid": 1000})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": user.pw_uid, "size": 1},
                                   {"containerID": 1, "hostID": ranges["uid"][0], "size": 1000}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": user.pw_gid, "size": 1},
                                   {"containerID": 1, "hostID": ranges["gid"][0], "size": 1000}]
    rl.write(cfg)
    lines = rl("run", rl.new_id()).stdout.splitlines()
    assert [line.split() for line in lines[:4]] == [
        ["0", str(user.pw_uid), "1"], ["1", str(ranges["uid"][0]), "1000"],
        ["0", str(user.pw_gid), "1"], ["1", str(ranges["gid"][0]), "1000"]]
    assert lines[4] == "allow"  # newgidmap's way: setgroups stays usable
    assert lines[5].startswith("uid=1000(user) gid=1000(user)")

    # ids the user has no right to: newuidmap refuses, and the error says which mapping
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 0, "size": 1}]
    rl.write(cfg)
    cid = rl.new_id()
    p = rl("run", cid, check=False)
    assert p.returncode == 1 and "linux.uidMappings: newuidmap failed" in p.stderr, p.stderr
    assert os.listdir(rl.root) == []


def test_oom_score_adj_can_only_be_raised(rl: AsUser) -> None:
    cfg = rl.spec(["cat", "/proc/self/oom_score_adj"])
    own = int(Path("/proc/self/oom_score_adj").read_text())
    cfg["process"]["oomScoreAdj"] = min(own + 100, 1000)
    rl.write(cfg)
    assert rl("run", rl.new_id()).stdout.strip() == str(min(own + 100, 1000))
    if own <= -1000:
        return
    cfg["process"]["oomScoreAdj"] = own - 1
    rl.write(cfg)
    cid = rl.new_id()
    p = rl("run", cid, check=False)
    assert p.returncode == 1 and f"process.oomScoreAdj {own - 1}" in p.stderr and "only raise" in p.stderr
    assert os.listdir(rl.root) == []


def test_sysfs_needs_a_network_namespace_of_its_own(rl: AsUser) -> None:
    """As with runc: sysfs cannot be mounted in a user namespace without a network namespace
    owned by it (that is why `spec --rootless` binds /sys); with one it can."""
    cfg = rl.spec(["sh", "-c", "awk '$5 == \"/sys\" { print $9 }' /proc/self/mountinfo"])
    i = next(n for n, m in enumerate(cfg["mounts"]) if m["destination"] == "/sys")
    cfg["mounts"][i] = {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                        "options": ["nosuid", "noexec", "nodev", "ro"]}
    rl.write(cfg)
    cid = rl.new_id()
    p = rl("run", cid, check=False)
    assert p.returncode == 1 and f"mounts[{i}] (sysfs on /sys)" in p.stderr, p.stderr
    assert os.listdir(rl.root) == []
    cfg["linux"]["namespaces"].append({"type": "network"})
    rl.write(cfg)
    assert rl("run", rl.new_id()).stdout.strip() == "sysfs"


# ------------------------------------------------------------------------------------ runc's rules


def test_default_root_and_rootless_auto_follow_runc(monkeypatch: pytest.MonkeyPatch) -> None:
    """runc's shouldHonorXDGRuntimeDir and shouldUseRootlessCgroupManager (cgroupfs driver)."""
    from pyrunc import rootless as R

    in_userns = False
    monkeypatch.setattr(R, "running_in_userns", lambda: in_userns)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/7")
    monkeypatch.setattr(R.os, "geteuid", lambda: 7)
    assert R.default_root() == ("/run/user/7/pyrunc", True)
    assert R.use_rootless_cgroups("auto") and R.use_rootless_cgroups(None)
    assert not R.use_rootless_cgroups("false") and R.use_rootless_cgroups("true")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert R.default_root() == ("/run/pyrunc", False)  # runc's fallback, /run/runc
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/0")
    monkeypatch.setattr(R.os, "geteuid", lambda: 0)
    assert R.default_root() == ("/run/pyrunc", False)  # the real root ignores XDG_RUNTIME_DIR
    assert not R.use_rootless_cgroups("auto") and R.use_rootless_cgroups("true")
    in_userns = True  # root of a user namespace: rootless cgroups; XDG unless $USER is root
    assert R.use_rootless_cgroups("auto")
    monkeypatch.setenv("USER", "root")
    assert R.default_root() == ("/run/pyrunc", False)
    monkeypatch.delenv("USER")
    assert R.default_root() == ("/run/user/0/pyrunc", True)


def test_root_flag_is_made_absolute_and_never_slash(tmp_path: Path) -> None:
    p = subprocess.run([PYRUNC, "--root", "/", "list"], capture_output=True, text=True, check=False)
    assert p.returncode == 1 and "Option --root argument should not be set to /" in p.stderr
    p = subprocess.run([PYRUNC, "--root", "rel", "list", "-q"], capture_output=True, text=True, check=False,
                       cwd=tmp_path)
    assert p.returncode == 0 and p.stdout == ""
