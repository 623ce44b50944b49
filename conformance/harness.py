"""The machinery every check uses: the runtime's command line, bundles, containers, host probes.

A check is a function ``def check(c: Ctx) -> str | None`` registered with ``@check(row, ref)``.
It passes by returning (optionally a short note), fails by raising ``Fail`` and is skipped by
raising ``Skip`` with what the host lacks.  Every container a check makes goes through ``c.create``
and is removed with ``delete --force`` when the check ends, whatever happened.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parent.parent
SPEC_VERSION = "1.3.0"


def _load_mkbundle() -> Any:
    spec = importlib.util.spec_from_file_location("_conformance_mkbundle", REPO / "hack" / "mkbundle.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


mkbundle = _load_mkbundle()


class Fail(Exception):
    """The runtime did not do what the spec says."""


class Skip(Exception):
    """The check cannot run here; the message names what the host lacks."""


@dataclass
class Check:
    row: str          # the table row: a config field or a runtime.md rule
    ref: str          # where the spec says it, e.g. "config.md#process"
    fn: Callable[["Ctx"], str | None]


REGISTRY: list[Check] = []


def check(row: str, ref: str) -> Callable[[Callable[["Ctx"], str | None]], Callable[["Ctx"], str | None]]:
    def deco(fn: Callable[["Ctx"], str | None]) -> Callable[["Ctx"], str | None]:
        if any(c.row == row for c in REGISTRY):
            raise ValueError(f"duplicate check row {row!r}")
        REGISTRY.append(Check(row, ref, fn))
        return fn
    return deco


# ------------------------------------------------------------------------------------ the runtime


@dataclass
class Result:
    rc: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def why(self) -> str:
        text = (self.err.strip() or self.out.strip()).splitlines()
        return f"exit {self.rc}: {text[-1][:200] if text else ''}"


class Runtime:
    """One runtime command line, e.g. "runc --root /tmp/x"; global flags are kept in front."""

    def __init__(self, cmd: str, name: str | None = None) -> None:
        self.argv = shlex.split(cmd)
        if not self.argv:
            raise ValueError("empty runtime command")
        if name is None:
            words = [w for w in self.argv if not w.startswith("-")]
            base = os.path.basename(words[0])
            # a wrapper such as conformance/hide-cgroup2 is named after the runtime it runs
            if base.startswith("hide-cgroup2") and len(words) > 1:
                base = os.path.basename(words[1])
            name = base
        self.name = name

    def __call__(self, *args: str, timeout: float = 60, stdout: Any = None, stdin: Any = None,
                 input: bytes | None = None) -> Result:
        """Run one command.  Output goes through files: a container made by ``create`` keeps the
        runtime's stdio, and a pipe would stay open as long as the container lives."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                p = subprocess.run([*self.argv, *args], stdout=stdout or out, stderr=err, timeout=timeout,
                                   stdin=stdin if stdin is not None else (None if input is not None
                                                                          else subprocess.DEVNULL),
                                   input=input, start_new_session=True)
                rc = p.returncode
            except subprocess.TimeoutExpired:
                rc = -999
            out.seek(0)
            err.seek(0)
            return Result(rc, out.read().decode(errors="replace"), err.read().decode(errors="replace"))


# ------------------------------------------------------------------------------------ host facts


@dataclass
class Mount:
    mount_id: int
    parent: int
    devno: str
    root: str
    point: str
    opts: set[str]
    optional: list[str]
    fstype: str
    source: str
    super_opts: set[str]

    @property
    def all_opts(self) -> set[str]:
        return self.opts | self.super_opts


def _unescape(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mountinfo(pid: int | str = "self") -> list[Mount]:
    mounts = []
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        f = left.split()
        r = right.split()
        mounts.append(Mount(int(f[0]), int(f[1]), f[2], _unescape(f[3]), _unescape(f[4]), set(f[5].split(",")),
                            f[6:], r[0], _unescape(r[1]) if len(r) > 1 else "",
                            set(r[2].split(",")) if len(r) > 2 else set()))
    return mounts


def mount_at(pid: int, point: str) -> Mount:
    """The mount visible at ``point`` in the process's mount table (the last one stacked there)."""
    found = [m for m in mountinfo(pid) if m.point == point]
    if not found:
        raise Fail(f"nothing mounted at {point}")
    return found[-1]


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
        "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
        "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
        "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN",
        "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
        "CAP_CHECKPOINT_RESTORE"]


def cap_names(mask_hex: str) -> set[str]:
    mask = int(mask_hex, 16)
    return {name for i, name in enumerate(CAPS) if mask >> i & 1}


def cgroup_mounts() -> dict[str, str]:
    """controller -> mount point of its v1 hierarchy in our mount namespace; "" -> the cgroup2 mount."""
    out: dict[str, str] = {}
    for m in mountinfo():
        if m.fstype == "cgroup":
            for o in m.super_opts:
                if o not in ("rw", "ro", "relatime", "nosuid", "nodev", "noexec") and not o.startswith("release"):
                    out.setdefault(o, m.point)
        elif m.fstype == "cgroup2":
            out.setdefault("", m.point)
    return out


def proc_cgroup(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _id, ctrls, path = line.split(":", 2)
        for c in ctrls.split(",") if ctrls else [""]:
            out[c] = path
    return out


def cgroup_file(pid: int, controller: str, name: str) -> Path:
    """The file ``name`` of the process's cgroup for ``controller``: in its v1 hierarchy if the
    host mounts one, else in the cgroup2 hierarchy (where the controller must be enabled)."""
    mounts = cgroup_mounts()
    cg = proc_cgroup(pid)
    if controller in mounts and controller in cg:
        return Path(mounts[controller] + cg[controller]) / name
    if "" in mounts and "" in cg:
        base = Path(mounts[""] + cg[""])
        if controller in (base / "cgroup.controllers").read_text().split() or (base / name).exists():
            return base / name
    raise Skip(f"host has no {controller} cgroup controller (v1 or v2)")


def host_has_controller(controller: str) -> bool:
    mounts = cgroup_mounts()
    if controller in mounts:
        return True
    if "" in mounts:
        with contextlib.suppress(OSError):
            return controller in Path(mounts[""], "cgroup.controllers").read_text().split()
    return False


def ns_inode(pid: int | str, ns: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{ns}")


NS_FILES = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts", "user": "user",
            "cgroup": "cgroup", "time": "time"}

_NSEXEC = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
pid, kinds, code = sys.argv[1], sys.argv[2], sys.argv[3]
fds = [(k, os.open(f"/proc/{pid}/ns/{k}", os.O_RDONLY)) for k in kinds.split(",") if k]
for k, fd in fds:
    if libc.setns(fd, 0) != 0:
        raise OSError(ctypes.get_errno(), f"setns {k}")
os.chdir("/")
exec(code)
"""


def in_ns(pid: int, kinds: list[str], code: str, timeout: float = 20) -> str:
    """Run Python ``code`` in a fresh host interpreter that has joined the process's namespaces
    (names as in /proc/PID/ns); returns its stdout.  No helper needs to live in the rootfs."""
    p = subprocess.run([sys.executable, "-I", "-c", _NSEXEC, str(pid), ",".join(kinds), code],
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise Fail(f"setns helper failed: {p.stderr.strip()[-300:]}")
    return p.stdout


# ------------------------------------------------------------------------------------ per run


@dataclass
class Options:
    oci_version: str = SPEC_VERSION
    id_prefix: str = f"oci-conf-{os.getpid()}-"
    timeout: float = 30.0


class Session:
    """Per suite run: the rootfs cache, options and a counter for ids."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.tmp = Path(tempfile.mkdtemp(prefix="oci-conformance-", dir="/tmp"))
        self.tmp.chmod(0o755)  # a user-namespaced container must reach its rootfs
        self.rootfs = self.tmp / "rootfs"
        mkbundle.build_rootfs(self.rootfs)
        (self.rootfs / "etc/marker").write_text("conformance\n")
        # an executable only the container has (startContainer's path resolves in the container)
        os.symlink("busybox", self.rootfs / "bin/conformance-sh")
        for i in range(10):  # mount points, so that no runtime has to create them in a shared rootfs
            (self.rootfs / f"m{i}").mkdir()
        # a bind source with a file and a submount (for rbind and the recursive options)
        self.src = self.tmp / "src"
        (self.src / "sub").mkdir(parents=True)
        (self.src / "file").write_text("bind source\n")
        (self.src / "file").chmod(0o4755)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "conformance-sub", str(self.src / "sub")],
                       check=True)
        subprocess.run(["mount", "--make-private", str(self.src / "sub")], check=True)
        (self.src / "sub" / "subfile").write_text("submount\n")
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.holders: list[subprocess.Popen[bytes]] = []

    def new_id(self, slug: str) -> str:
        with self._lock:
            return f"{self.opts.id_prefix}{next(self._ids)}-{slug}"[:60]

    def close(self) -> None:
        for p in self.holders:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            p.wait()
        subprocess.run(["umount", str(self.src / "sub")], check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)


@dataclass
class Container:
    ctx: "Ctx"
    id: str
    bundle: Path
    config: dict[str, Any]
    create_result: Result
    stdout_path: Path
    pid: int = 0

    def state(self) -> dict[str, Any]:
        r = self.ctx.rt("state", self.id)
        if not r.ok:
            raise Fail(f"state {self.id}: {r.why()}")
        try:
            return dict(json.loads(r.out))
        except json.JSONDecodeError as e:
            raise Fail(f"state printed no JSON: {r.out[:200]!r}") from e

    def start(self) -> None:
        r = self.ctx.rt("start", self.id, timeout=self.ctx.opts.timeout)
        if not r.ok:
            raise Fail(f"start failed: {r.why()}")

    def kill(self, sig: str = "KILL") -> Result:
        return self.ctx.rt("kill", self.id, sig)

    def delete(self, force: bool = False) -> Result:
        return self.ctx.rt("delete", *(["--force"] if force else []), self.id, timeout=self.ctx.opts.timeout)

    def wait_status(self, want: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        st: dict[str, Any] = {}
        while time.monotonic() < deadline:
            st = self.state()
            if st.get("status") == want:
                return st
            time.sleep(0.05)
        raise Fail(f"status stayed {st.get('status')!r}, expected {want!r}")

    def output(self, timeout: float = 15) -> str:
        """The container's stdout+stderr (scripts from Ctx.script end with a marker line)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stdout_path.read_text(errors="replace")
            if "__END__" in text:
                return text.split("__END__")[0]
            time.sleep(0.05)
        raise Fail(f"the container's script did not finish; output so far: {text[-300:]!r}")

    def root(self, path: str = "/") -> Path:
        """A path inside the container, reached from outside through /proc/PID/root."""
        return Path(f"/proc/{self.pid}/root") / path.lstrip("/")


class Ctx:
    """What one check gets: the runtime, the session, and a place for its bundles."""

    def __init__(self, rt: Runtime, session: Session, slug: str) -> None:
        self.rt = rt
        self.session = session
        self.opts = session.opts
        self.slug = slug
        self.dir = Path(tempfile.mkdtemp(prefix=f"{rt.name}-{slug}-"[:40], dir=session.tmp))
        self.dir.chmod(0o755)
        self.containers: list[str] = []
        self.cleanups: list[Callable[[], None]] = []
        self._n = 0

    # -- bundles
    def config(self, args: list[str] | None = None, **kw: Any) -> dict[str, Any]:
        """runc spec's config (as hack/mkbundle.py writes it) for the shared busybox rootfs."""
        cfg: dict[str, Any] = mkbundle.default_config(args or ["sleep", "3600"], oci_version=self.opts.oci_version,
                                                      **kw)
        cfg["root"]["path"] = str(self.session.rootfs)
        return cfg

    def script_config(self, script: str, **kw: Any) -> dict[str, Any]:
        """A config whose process runs ``script`` under busybox sh, stdout+stderr to the runtime's
        stdout, then prints the end marker (Container.output)."""
        cfg = self.config(["sh", "-c", "{ " + script + "\n} 2>&1; echo __END__"], **kw)
        return cfg

    def bundle(self, cfg: dict[str, Any], name: str | None = None) -> Path:
        self._n += 1
        b = self.dir / (name or f"b{self._n}")
        b.mkdir(exist_ok=True)
        mkbundle.write_config(b, cfg)
        return b

    def new_id(self) -> str:
        cid = self.session.new_id(self.slug)
        self.containers.append(cid)
        return cid

    # -- containers
    def try_create(self, cfg: dict[str, Any], *extra: str, cid: str | None = None,
                   bundle: Path | None = None) -> Container:
        """create; returns the Container whatever the outcome (see .create_result)."""
        cid = cid or self.new_id()
        if cid not in self.containers:
            self.containers.append(cid)
        cfg.setdefault("linux", {}).setdefault("cgroupsPath", f"/{cid}")
        bundle = bundle or self.bundle(cfg)
        if bundle and not (bundle / "config.json").exists():
            mkbundle.write_config(bundle, cfg)
        out_path = self.dir / f"{cid}.out"
        with open(out_path, "wb") as out:
            r = self.rt("create", "--bundle", str(bundle), *extra, cid, stdout=out, timeout=self.opts.timeout)
        c = Container(self, cid, bundle, cfg, r, out_path)
        if r.ok:
            st = c.state()
            c.pid = int(st.get("pid") or 0)
        return c

    def create(self, cfg: dict[str, Any], *extra: str, **kw: Any) -> Container:
        c = self.try_create(cfg, *extra, **kw)
        if not c.create_result.ok:
            raise Fail(f"create failed: {c.create_result.why()}")
        return c

    def run(self, cfg: dict[str, Any], *extra: str) -> Container:
        """create + start."""
        c = self.create(cfg, *extra)
        c.start()
        return c

    def script(self, script: str, edit: Callable[[dict[str, Any]], None] | None = None, **kw: Any) -> str:
        """Run a busybox sh script in a container configured by ``edit``; return its output."""
        cfg = self.script_config(script, **kw)
        if edit:
            edit(cfg)
        c = self.run(cfg)
        return c.output()

    def applied_or_refused(self, cfg: dict[str, Any], what: str) -> Container | None:
        """For optional features: None when the runtime refused the config with an error (allowed),
        else the running container, on which the caller checks that the field was applied."""
        c = self.try_create(cfg)
        if not c.create_result.ok:
            return None
        c.start()
        return c

    def host_process(self, argv: list[str]) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.session.holders.append(p)
        return p

    def cleanup(self) -> list[str]:
        """delete --force every container made; returns problems (a container that survived)."""
        problems = []
        for cid in reversed(self.containers):
            r = self.rt("delete", "--force", cid, timeout=self.opts.timeout)
            if not r.ok and self.rt("state", cid).ok:
                time.sleep(0.5)
                r = self.rt("delete", "--force", cid, timeout=self.opts.timeout)
                if not r.ok and self.rt("state", cid).ok:
                    problems.append(f"{cid}: delete --force failed: {r.why()}")
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - report, keep cleaning
                problems.append(f"cleanup: {e}")
        return problems


def wait_for(pred: Callable[[], bool], timeout: float = 10, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def sweep_cgroups(prefix: str) -> list[str]:
    """Remove cgroup directories named with our prefix that a runtime left behind; returns them."""
    left = []
    for top in sorted({p for p in cgroup_mounts().values()}):
        for dirpath, dirnames, _ in os.walk(top, topdown=False):
            for d in dirnames:
                if d.startswith(prefix):
                    path = os.path.join(dirpath, d)
                    left.append(path)
                    _rm_cgroup(path)
    return left


def _rm_cgroup(path: str) -> None:
    for dirpath, _dirs, _ in os.walk(path, topdown=False):
        with contextlib.suppress(OSError):
            for pid in Path(dirpath, "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        for _ in range(20):
            try:
                os.rmdir(dirpath)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.05)


@contextlib.contextmanager
def unix_listener(path: Path) -> Iterator[Any]:
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(1)
    s.settimeout(20)
    try:
        yield s
    finally:
        s.close()


__all__ = ["Check", "Container", "Ctx", "Fail", "Mount", "Options", "REGISTRY", "Result", "Runtime", "Session",
           "Skip", "cap_names", "cgroup_file", "check", "field", "host_has_controller", "in_ns", "mount_at",
           "mountinfo", "ns_inode", "proc_cgroup", "proc_status", "sweep_cgroups", "unix_listener", "wait_for"]
