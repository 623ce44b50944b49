"""Shared fixtures: a busybox rootfs, bundles, a pyrunc runner with its own --root, leak checks.

Integration tests run real containers on the real kernel as root.  Every container
id starts with ``TEST_PREFIX`` so that its cgroups and processes can be found; at the
end of the session ``leak_check`` fails the run if any mount, cgroup, process or
state directory of ours is left on the host.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

# Fixtures shared by the security tests (probe, scratch, own_rootfs).
pytest_plugins = ["security_helpers"]

REPO = Path(__file__).resolve().parent.parent
PYRUNC = os.environ.get("PYRUNC", str(REPO / ".venv" / "bin" / "pyrunc"))
TEST_PREFIX = f"pyrunc-t{os.getpid()}-"

_spec = importlib.util.spec_from_file_location("mkbundle", REPO / "hack" / "mkbundle.py")
assert _spec is not None and _spec.loader is not None
mkbundle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mkbundle)

_ids = itertools.count(1)


def build_userns_rootfs(path: Path, host_id: int = 100000) -> Path:
    """A busybox rootfs owned by ``host_id`` (what the user namespace maps its root to), so that
    the container's root owns it."""
    mkbundle.build_rootfs(path)
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(top, name), host_id, host_id)
    os.lchown(path, host_id, host_id)
    return path


def new_id() -> str:
    return f"{TEST_PREFIX}{next(_ids)}"


def is_root() -> bool:
    return os.geteuid() == 0


needs_root = pytest.mark.skipif(not is_root(), reason="integration tests run containers and need root")


@pytest.fixture(scope="session")
def workdir() -> Path:
    # World-traversable (not pytest's 0700 tmp dirs): containers with a user namespace
    # must be able to reach their rootfs.
    d = Path(tempfile.mkdtemp(prefix="pyrunc-test-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def rootfs(workdir: Path) -> Path:
    path = workdir / "rootfs"
    mkbundle.build_rootfs(path)
    return path


@pytest.fixture(scope="session")
def state_root(workdir: Path) -> Path:
    return workdir / "state"


def run_captured(argv: list[str], *, input: str | None = None, stdin: object = None, stdout: object = None,
                 stderr: object = None, timeout: float = 60, **kw: object) -> subprocess.CompletedProcess:
    """Run ``argv``; its output is captured through files, not pipes: a container made by
    ``create`` (or an engine's conmon or shim) inherits the stdio and would hold a pipe open long
    after the command returns.  Without ``input`` or ``stdin``, stdin is /dev/null."""
    if stdin is None and input is None:
        stdin = subprocess.DEVNULL
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.run(argv, input=input.encode() if input is not None else None, stdin=stdin,
                           stdout=stdout or out, stderr=stderr or err, timeout=timeout, **kw)  # type: ignore[call-overload]
        out.seek(0)
        err.seek(0)
        p.stdout = out.read().decode(errors="replace")
        p.stderr = err.read().decode(errors="replace")
    return p  # type: ignore[no-any-return]


def fail_run(p: subprocess.CompletedProcess, what: str) -> None:
    raise AssertionError(f"{what} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")


class Pyrunc:
    """Runs the pyrunc command line with this session's --root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.extra_global: list[str] = []

    def argv(self, *args: str) -> list[str]:
        return [PYRUNC, "--root", str(self.root), *self.extra_global, *args]

    def __call__(self, *args: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess:
        """Run one command (see ``run_captured``)."""
        p = run_captured(self.argv(*args), **kw)  # type: ignore[arg-type]
        if check and p.returncode != 0:
            fail_run(p, f"pyrunc {' '.join(args)}")
        return p

    def state(self, cid: str) -> dict:
        return json.loads(self("state", cid).stdout)

    def ids(self) -> list[str]:
        out = self("list", "-q", check=False).stdout
        return [line for line in out.splitlines() if line]


@pytest.fixture
def pyrunc(state_root: Path) -> Pyrunc:
    runner = Pyrunc(state_root)
    yield runner
    left = runner.ids()
    for cid in left:
        runner("delete", "--force", cid, check=False)
    assert not runner.ids(), "containers survived delete --force"


class BundleFactory:
    def __init__(self, base: Path, rootfs: Path) -> None:
        self.base = base
        self.rootfs = rootfs
        self.n = 0

    def __call__(self, args: list[str] | None = None, **options: object) -> Path:
        """A bundle whose rootfs is the shared busybox tree; ``options`` go to mkbundle's
        default_config (e.g. terminal, hostname); edit the returned bundle's config with
        ``edit_config``."""
        self.n += 1
        bundle = self.base / f"bundle{self.n}"
        bundle.mkdir()
        cfg = mkbundle.default_config(args or ["true"], **options)
        cfg["root"]["path"] = str(self.rootfs)
        mkbundle.write_config(bundle, cfg)
        return bundle


@pytest.fixture
def make_bundle(tmp_path: Path, rootfs: Path) -> BundleFactory:
    return BundleFactory(tmp_path, rootfs)


def proc_cgroups(pid: int) -> dict[str, str]:
    """/proc/PID/cgroup as controller -> path ("" for the cgroup2 hierarchy)."""
    out = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _id, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            out[c] = path
    return out


def read_config(bundle: Path) -> dict:
    return json.loads((bundle / "config.json").read_text())


def write_config(bundle: Path, cfg: dict) -> None:
    (bundle / "config.json").write_text(json.dumps(cfg, indent=2))


def edit_config(bundle: Path, fn) -> dict:  # type: ignore[no-untyped-def]
    cfg = read_config(bundle)
    fn(cfg)
    write_config(bundle, cfg)
    return cfg


# ------------------------------------------------------------------------------------ leak check


def _our_mounts(workdir: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.strip() for line in f if str(workdir) in line or TEST_PREFIX in line]


def cgroups_matching(match: Callable[[str], bool], max_depth: int = 8) -> list[str]:
    """Cgroup directories (at most ``max_depth`` slashes deep) whose name ``match`` accepts."""
    found = []
    for top, dirs, _files in os.walk("/sys/fs/cgroup"):
        for d in dirs:
            if match(d):
                found.append(os.path.join(top, d))
        if top.count("/") > max_depth:
            dirs[:] = []
    return found


def _our_cgroups() -> list[str]:
    return cgroups_matching(lambda d: d.startswith(TEST_PREFIX))


def _our_processes() -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                text = f.read()
        except OSError:
            continue
        if TEST_PREFIX in text and not is_zombie(pid):
            found.append(pid)
    return found


def is_zombie(pid: str) -> bool:
    """A dead container init waits for its reaper (the host's init, once pyrunc has exited):
    that is not ours to clean up."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


@pytest.fixture(scope="session", autouse=True)
def leak_check(workdir: Path, state_root: Path) -> None:
    yield
    problems = []
    if state_root.exists() and os.listdir(state_root):
        problems.append(f"state directories left: {os.listdir(state_root)}")
    mounts = _our_mounts(workdir)
    if mounts:
        problems.append(f"mounts left: {mounts}")
    cgroups = _our_cgroups()
    if cgroups:
        problems.append(f"cgroups left: {cgroups}")
    procs = _our_processes()
    deadline = time.monotonic() + 3
    while procs and time.monotonic() < deadline:  # SIGKILLed processes take a moment to go
        time.sleep(0.1)
        procs = _our_processes()
    if procs:
        problems.append(f"processes left in our cgroups: {procs}")
    assert not problems, "leaks after the test session:\n" + "\n".join(problems)


# ------------------------------------------------------------------------------------ shared helpers


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict of its fields."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


class FdListener:
    """The receiving end of --console-socket or --pidfd-socket, as containerd's shim or conmon has
    it: an AF_UNIX stream listener; ``receive`` takes the next connection's fd and the bytes sent
    with it."""

    def __init__(self, path: Path) -> None:
        import socket
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.sock.settimeout(20)

    def receive(self) -> tuple[int, bytes]:
        import array
        import socket
        conn, _ = self.sock.accept()
        with conn:
            fds = array.array("i")
            data, anc, _flags, _addr = conn.recvmsg(4096, socket.CMSG_SPACE(fds.itemsize))
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[:fds.itemsize])
        assert len(fds) == 1, f"no fd came with {data!r}"
        return fds[0], data

    def close(self) -> None:
        self.sock.close()
