"""End-to-end fixtures: podman, containerd and dockerd driving pyrunc, each with private directories.

Every engine runs as the Debian package installs it (hack/setup.sh), but with its data, state,
sockets and configuration under one temporary directory per engine, started by the fixture and
stopped at the end of the module.  The fixture's teardown then checks that nothing the engine made
is left on the host: mounts under its directory, cgroups and processes of its containers, pyrunc
state directories, the engine's own processes.  An engine that is not installed or cannot start on
this host skips its tests with the reason.

The busybox image is built from busybox-static (hack/mkbundle.py) and imported: no registry.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/conftest.py: container ids with its TEST_PREFIX are covered by its session leak check
from conftest import PYRUNC, TEST_PREFIX, cgroups_matching, fail_run, is_zombie, mkbundle, run_captured

PYRUNC_DEFAULT_ROOT = Path("/run/pyrunc")
# Limits a container may be given here: the host's bounding set may lack CAP_SYS_RESOURCE, so
# neither runc nor pyrunc can raise a hard limit above the engine's own (podman's default is 1048576).
NOFILE = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 4096)
NPROC = 4096


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: end-to-end test through a real container engine")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


def have(*binaries: str) -> str | None:
    """None, or why the engine cannot be tested."""
    if os.geteuid() != 0:
        return "e2e tests start container engines and need root"
    missing = [b for b in binaries if not shutil.which(b) and not os.path.exists(b)]
    return f"not installed: {', '.join(missing)} (hack/setup.sh installs them)" if missing else None


class Engine:
    """Runs one engine's command line with its private flags and environment."""

    nofile = NOFILE
    nproc = NPROC

    def __init__(self, name: str, base: list[str], env: dict[str, str], home: Path) -> None:
        self.name = name
        self.base = base
        self.env = {**os.environ, **env}
        self.home = home

    def __call__(self, *args: str, check: bool = True, timeout: float = 60, input: str | None = None,
                 stdin: object = None) -> subprocess.CompletedProcess:
        """Output goes through files (``run_captured``): conmon and shims outlive the command."""
        p = run_captured([*self.base, *args], input=input, stdin=stdin, timeout=timeout, env=self.env,
                         cwd=self.home)  # conmon writes files such as "oom" where it runs
        if check and p.returncode != 0:
            fail_run(p, f"{self.name} {' '.join(args)}")
        return p

    def argv(self, *args: str) -> list[str]:
        return [*self.base, *args]


# ------------------------------------------------------------------------------------ images


@pytest.fixture(scope="session")
def e2e_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="pyrunc-e2e-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def busybox_tar(e2e_dir: Path) -> Path:
    """A flat tar of the busybox rootfs (for `podman import` / `docker import`)."""
    rootfs = mkbundle.build_rootfs(e2e_dir / "image-rootfs")
    tar = e2e_dir / "busybox.tar"
    with tarfile.open(tar, "w") as t:
        for entry in sorted(os.listdir(rootfs)):
            t.add(rootfs / entry, arcname=entry)
    shutil.rmtree(rootfs)
    return tar


@pytest.fixture(scope="session")
def busybox_archive(e2e_dir: Path, busybox_tar: Path) -> Path:
    """A docker-archive (`docker save` format) with one layer, for `ctr image import`."""
    return make_docker_archive(busybox_tar, e2e_dir / "busybox-docker-archive.tar")


def make_docker_archive(busybox_tar: Path, out: Path) -> Path:
    layer = busybox_tar.read_bytes()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "created": "2024-01-01T00:00:00Z",
    }).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_name = diff_id[7:] + "/layer.tar"
    manifest = json.dumps([{"Config": config_name, "RepoTags": ["busybox:e2e"], "Layers": [layer_name]}]).encode()
    with tarfile.open(out, "w") as t:
        for name, data in ((config_name, config), (layer_name, layer), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            t.addfile(info, io.BytesIO(data))
    return out


# ------------------------------------------------------------------------------------ leftovers


def processes_matching(needles: list[str]) -> list[str]:
    """Live processes whose cgroup or command line names one of ``needles``."""
    found = []
    me = str(os.getpid())
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid == me:
            continue
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                cg = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(n in cg or n in cmd for n in needles) and not is_zombie(pid):
            found.append(f"{pid}: {cmd[:200]}")
    return found


def leftovers(home: Path, ids: set[str], state_roots: list[Path]) -> list[str]:
    """What the engine left behind: mounts under ``home`` or naming a container id, cgroups and
    processes of its containers (or its own processes, found by ``home`` in their command line),
    and pyrunc state directories of its containers."""
    problems = []
    needles = [str(home), *ids]
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f if any(n in line for n in needles)]
    if mounts:
        problems.append(f"mounts left: {mounts}")
    cgroups = cgroups_matching(lambda d: any(i in d for i in ids), max_depth=7) if ids else []
    if cgroups:
        problems.append(f"cgroups left: {cgroups}")
    deadline = time.monotonic() + 5
    procs = processes_matching(needles)
    while procs and time.monotonic() < deadline:
        time.sleep(0.2)
        procs = processes_matching(needles)
    if procs:
        problems.append(f"processes left: {procs}")
    for root in state_roots:
        if root.is_dir():
            left = [d for d in os.listdir(root) if d in ids]
            if left:
                problems.append(f"pyrunc state left in {root}: {left}")
    return problems


def remove_parent_cgroups(name: str) -> None:
    """rmdir the engine's parent cgroup (podman's libpod_parent, dockerd's docker) where it is
    empty: the runtime removes a container's cgroup, not the parents it made (runc neither);
    podman also leaves libpod_parent/conmon, where conmon ran."""
    for top in cgroups_matching(lambda d: d == name, max_depth=7):
        for d, _dirs, _files in os.walk(top, topdown=False):
            try:
                os.rmdir(d)
            except OSError:
                pass


def umount_under(home: Path) -> None:
    """Last resort before removing ``home``: lazily unmount what is still mounted below it."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f if str(home) in line.split()[4]]
    for p in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", p], check=False, capture_output=True)


def stop_daemon(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_socket(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 30) -> str | None:
    """None once a connection to the unix socket succeeds, else why not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited {proc.returncode}: {log.read_text()[-2000:]}"
        if path.exists():
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(str(path))
                return None
            except OSError:
                pass
            finally:
                s.close()
        time.sleep(0.1)
    return f"no socket {path} after {timeout}s: {log.read_text()[-2000:]}"


def container_ids_from_pyrunc(root: Path, since: float) -> set[str]:
    """Ids of pyrunc state directories made after ``since`` (the engine's containers)."""
    if not root.is_dir():
        return set()
    out = set()
    for d in os.listdir(root):
        try:
            if os.stat(root / d).st_mtime >= since:
                out.add(d)
        except OSError:
            pass
    return out


# ------------------------------------------------------------------------------------ podman


PODMAN_CONF = """\
[containers]
netns = "none"
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{home}/events.log"
runtime = "pyrunc"
runtime_supports_json = ["pyrunc", "crun", "runc"]
static_dir = "{home}/static"
tmp_dir = "{home}/tmp"
volume_path = "{home}/volumes"
network_cmd_options = []

[engine.runtimes]
pyrunc = ["{pyrunc}"]
"""


@pytest.fixture(scope="module")
def podman(e2e_dir: Path, busybox_tar: Path) -> Iterator[Engine]:
    why = have("podman", "conmon")
    if why:
        pytest.skip(why)
    home = e2e_dir / "podman"
    home.mkdir()
    conf = home / "containers.conf"
    conf.write_text(PODMAN_CONF.format(home=home, pyrunc=PYRUNC, nofile=NOFILE, nproc=NPROC))
    (home / "registries.conf").write_text("")
    (home / "storage.conf").write_text(f'[storage]\ndriver = "vfs"\nrunroot = "{home}/runroot"\n'
                                       f'graphroot = "{home}/root"\n')
    env = {"CONTAINERS_CONF": str(conf), "CONTAINERS_REGISTRIES_CONF": str(home / "registries.conf"),
           "CONTAINERS_STORAGE_CONF": str(home / "storage.conf")}
    base = ["podman", "--root", f"{home}/root", "--runroot", f"{home}/runroot", "--storage-driver", "vfs",
            "--tmpdir", f"{home}/libpod-tmp", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
            "--network-config-dir", f"{home}/net"]
    eng = Engine("podman", base, env, home)
    since = time.time()
    try:
        p = eng("import", str(busybox_tar), "localhost/busybox:e2e", check=False)
        if p.returncode != 0:
            pytest.skip(f"podman cannot import an image here: {p.stderr.strip()}")
        yield eng
    finally:
        ids = set(eng("ps", "-aq", "--no-trunc", check=False).stdout.split())
        eng("rm", "-af", "-t", "0", check=False, timeout=120)
        ids |= _podman_event_ids(home / "events.log")
        ids |= container_ids_from_pyrunc(PYRUNC_DEFAULT_ROOT, since) & ids
        eng("rmi", "-af", check=False)
        eng("system", "reset", "-f", check=False, timeout=120)
        problems = leftovers(home, ids, [PYRUNC_DEFAULT_ROOT])
        remove_parent_cgroups("libpod_parent")
        for i in ids:  # podman passes no --root: pyrunc's default root is shared with the host
            shutil.rmtree(PYRUNC_DEFAULT_ROOT / i, ignore_errors=True)
        umount_under(home)
        shutil.rmtree(home, ignore_errors=True)
        assert not problems, "podman left behind:\n" + "\n".join(problems)


def _podman_event_ids(log: Path) -> set[str]:
    ids = set()
    try:
        text = log.read_text()
    except OSError:
        return ids
    for line in text.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("Type") == "container" and ev.get("ID"):
            ids.add(ev["ID"])
    return ids


# ------------------------------------------------------------------------------------ containerd


CONTAINERD_CONF = """\
version = 2
root = "{home}/root"
state = "{home}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{home}/containerd.sock"

[ttrpc]
  address = "{home}/containerd.sock.ttrpc"

[debug]
  address = "{home}/debug.sock"
  level = "debug"

[metrics]
  address = ""

[plugins."io.containerd.runtime.v1.linux"]
  runtime = "{pyrunc}"
"""

CTR_NS = "pyrunc-e2e"


class Containerd(Engine):
    """`ctr` against a private containerd; `run_args` are the flags that make a task use pyrunc."""

    def __init__(self, home: Path) -> None:
        super().__init__("ctr", ["ctr", "--address", str(home / "containerd.sock"), "--namespace", CTR_NS],
                         {}, home)
        self.runc_root = home / "runc-root"
        self.prefix = TEST_PREFIX
        self.run_args = ["--runtime", "io.containerd.runc.v2", "--runc-binary", PYRUNC,
                         "--runc-root", str(self.runc_root), "--snapshotter", "native"]
        self.image = "docker.io/library/busybox:e2e"


def start_containerd(home: Path) -> tuple[subprocess.Popen, Path]:
    home.mkdir(exist_ok=True)
    conf = home / "config.toml"
    conf.write_text(CONTAINERD_CONF.format(home=home, pyrunc=PYRUNC))
    log = home / "containerd.log"
    proc = subprocess.Popen(["containerd", "--config", str(conf)], stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    return proc, log


@pytest.fixture(scope="module")
def containerd(e2e_dir: Path, busybox_archive: Path) -> Iterator[Containerd]:
    why = have("containerd", "ctr", "containerd-shim-runc-v2")
    if why:
        pytest.skip(why)
    home = e2e_dir / "containerd"
    proc, log = start_containerd(home)
    eng = Containerd(home)
    try:
        why = wait_socket(home / "containerd.sock", proc, log)
        if why:
            pytest.skip(f"containerd does not start here: {why}")
        p = eng("image", "import", "--snapshotter", "native", str(busybox_archive), check=False)
        if p.returncode != 0:
            pytest.skip(f"ctr cannot import an image here: {p.stderr.strip()}")
        yield eng
    finally:
        ids = set()
        if proc.poll() is None:
            ids = set(eng("containers", "ls", "-q", check=False).stdout.split())
            for cid in ids:
                eng("task", "kill", "-s", "SIGKILL", cid, check=False)
                eng("task", "delete", "-f", cid, check=False)
                eng("containers", "delete", cid, check=False)
            eng("image", "rm", eng.image, check=False)
        stop_daemon(proc)
        ns_root = eng.runc_root / CTR_NS
        ids |= set(os.listdir(ns_root) if ns_root.is_dir() else [])
        remove_parent_cgroups(CTR_NS)
        problems = leftovers(home, ids | {TEST_PREFIX}, [eng.runc_root / CTR_NS])
        umount_under(home)
        shutil.rmtree(home, ignore_errors=True)
        assert not problems, "containerd left behind:\n" + "\n".join(problems)


# ------------------------------------------------------------------------------------ docker


@pytest.fixture(scope="module")
def docker(e2e_dir: Path, busybox_tar: Path) -> Iterator[Engine]:
    why = have("dockerd", "/usr/bin/docker", "containerd")
    if why:
        pytest.skip(why)
    home = e2e_dir / "docker"
    home.mkdir()
    sock = home / "docker.sock"
    (home / "daemon.json").write_text(json.dumps({
        "runtimes": {"pyrunc": {"path": PYRUNC}},
        "default-runtime": "pyrunc",
        "default-ulimits": {"nofile": {"Name": "nofile", "Soft": NOFILE, "Hard": NOFILE}},
    }, indent=2))
    log = home / "dockerd.log"
    argv = ["dockerd", "--config-file", str(home / "daemon.json"), "--data-root", str(home / "data"),
            "--exec-root", str(home / "exec"), "--pidfile", str(home / "dockerd.pid"), "-H", f"unix://{sock}",
            "--iptables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none", "--storage-driver=vfs",
            "--exec-opt", "native.cgroupdriver=cgroupfs", "--userland-proxy=false", "--log-level=debug"]
    proc = subprocess.Popen(argv, stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    (home / "cli").mkdir()
    eng = Engine("docker", ["/usr/bin/docker", "-H", f"unix://{sock}"], {"DOCKER_CONFIG": str(home / "cli")}, home)
    since = time.time()
    try:
        why = wait_socket(sock, proc, log, timeout=60)
        if why:
            pytest.skip(f"dockerd does not start here: {why}")
        p = eng("import", str(busybox_tar), "busybox:e2e", check=False)
        if p.returncode != 0:
            pytest.skip(f"docker cannot import an image here: {p.stderr.strip()}")
        yield eng
    finally:
        ids: set[str] = set()
        if proc.poll() is None:
            ids = set(eng("ps", "-aq", "--no-trunc", check=False).stdout.split())
            if ids:
                eng("rm", "-f", *ids, check=False, timeout=120)
            eng("rmi", "-f", "busybox:e2e", check=False)
        stop_daemon(proc, timeout=30)
        # dockerd's own bind of the host's netns (libnetwork's "default" sandbox) outlives it, with runc too
        umount_under(home / "exec" / "netns")
        moby_root = home / "exec" / "runtime-runc" / "moby"
        ids |= container_ids_from_pyrunc(moby_root, since)
        ids |= _docker_ids_from_log(log)
        problems = leftovers(home, ids, [moby_root])
        remove_parent_cgroups("docker")
        umount_under(home)
        shutil.rmtree(home, ignore_errors=True)
        assert not problems, "dockerd left behind:\n" + "\n".join(problems)


def _docker_ids_from_log(log: Path) -> set[str]:
    import re
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return set()
    return set(re.findall(r"container=([0-9a-f]{64})", text)) | set(re.findall(r"\b([0-9a-f]{64})\b", text)) \
        - set(re.findall(r"sha256:([0-9a-f]{64})", text))


# ------------------------------------------------------------------------------------ host side


def host_cgroup_file(pid: int | str, ctrl: str, name: str) -> str:
    """A v1 cgroup file of process ``pid`` read from the host (its path from /proc/PID/cgroup)."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _n, ctrls, path = line.rstrip("\n").split(":", 2)
            if ctrl in ctrls.split(","):
                for mnt in (ctrls, ctrl):
                    p = Path("/sys/fs/cgroup") / mnt / path.lstrip("/") / name
                    if p.exists():
                        return p.read_text().strip()
    raise AssertionError(f"no {ctrl} cgroup file {name} for pid {pid}")


def status_field(pid: int | str, field: str) -> str:
    """A field of /proc/PID/status, seen from the host."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def missing_bounding_caps() -> list[int]:
    """Capability numbers the host's bounding set lacks (runc and pyrunc cannot grant them)."""
    bnd = int(status_field(os.getpid(), "CapBnd"), 16)
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    return [c for c in range(last + 1) if not bnd & (1 << c)]


SECCOMP_DENY_MKDIR = {  # the docker/podman profile format (also a valid runtime-spec LinuxSeccomp)
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
}
