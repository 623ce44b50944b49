"""config.md: ociVersion, root, process (POSIX and Linux), hostname, domainname, annotations, extensibility."""

from __future__ import annotations

import array
import ctypes
import fcntl
import json
import os
import shutil
import socket
import stat
import struct
import termios
from pathlib import Path
from typing import Any

from ..harness import Ctx, Fail, Skip, cap_names, check, in_ns, mount_at, proc_status, unix_listener

CF = "config.md"


@check("ociVersion: an older 1.x bundle is accepted", f"{CF}#specification-version")
def oci_version_old(c: Ctx) -> None:
    cfg = c.config()
    cfg["ociVersion"] = "1.0.0"
    c.run(cfg)


@check("root.path: relative to the bundle", f"{CF}#root")
def root_relative(c: Ctx) -> None:
    cfg = c.config()
    cfg["root"]["path"] = "rootfs"
    b = c.bundle(cfg)
    shutil.copytree(c.session.rootfs, b / "rootfs", symlinks=True)
    k = c.create(cfg, bundle=b)
    if not k.root("/etc/marker").exists():
        raise Fail("the container's root is not the bundle's rootfs")


@check("root.readonly: true", f"{CF}#root")
def root_readonly(c: Ctx) -> None:
    k = c.run(c.config(readonly=True))
    if "ro" not in mount_at(k.pid, "/").opts:
        raise Fail(f"/ is mounted {sorted(mount_at(k.pid, '/').opts)}")


@check("root.readonly: false", f"{CF}#root")
def root_readwrite(c: Ctx) -> None:
    cfg = c.config(readonly=False)
    k = c.run(cfg)
    if "rw" not in mount_at(k.pid, "/").opts:
        raise Fail(f"/ is mounted {sorted(mount_at(k.pid, '/').opts)}")


@check("process.args (execvp semantics, PATH lookup)", f"{CF}#process")
def process_args(c: Ctx) -> None:
    k = c.run(c.config(["sleep", "3601"]))
    argv = Path(f"/proc/{k.pid}/cmdline").read_bytes().split(b"\0")[:-1]
    if argv != [b"sleep", b"3601"]:
        raise Fail(f"argv is {argv}")
    exe = os.readlink(f"/proc/{k.pid}/exe")
    if not exe.endswith("busybox"):
        raise Fail(f"exe is {exe}")


@check("process.env", f"{CF}#process")
def process_env(c: Ctx) -> None:
    cfg = c.config(env=["FOO=bar baz", "EMPTY="])
    k = c.run(cfg)
    env = Path(f"/proc/{k.pid}/environ").read_bytes().split(b"\0")
    for want in (b"FOO=bar baz", b"EMPTY=", b"TERM=xterm"):
        if want not in env:
            raise Fail(f"{want!r} not in the environment {env}")


@check("process.cwd", f"{CF}#process")
def process_cwd(c: Ctx) -> None:
    k = c.run(c.config(cwd="/etc"))
    if os.stat(f"/proc/{k.pid}/cwd").st_ino != os.stat(k.root("/etc")).st_ino:
        raise Fail(f"cwd is {os.readlink(f'/proc/{k.pid}/cwd')}")


@check("process.user.uid/gid", f"{CF}#user")
def process_user(c: Ctx) -> None:
    k = c.run(c.config(uid=1000, gid=1001))
    st = proc_status(k.pid)
    if st["Uid"].split() != ["1000"] * 4 or st["Gid"].split() != ["1001"] * 4:
        raise Fail(f"Uid {st['Uid']} Gid {st['Gid']}")


@check("process.user.additionalGids", f"{CF}#user")
def process_groups(c: Ctx) -> None:
    cfg = c.config(uid=1000, gid=1000)
    cfg["process"]["user"]["additionalGids"] = [5, 1234]
    st = proc_status(c.run(cfg).pid)
    if sorted(int(g) for g in st["Groups"].split()) not in ([5, 1234], [5, 1000, 1234]):
        raise Fail(f"Groups: {st['Groups']}")


@check("process.user.umask", f"{CF}#user")
def process_umask(c: Ctx) -> None:
    cfg = c.config()
    cfg["process"]["user"]["umask"] = 0o027
    st = proc_status(c.run(cfg).pid)
    if st.get("Umask") != "0027":
        raise Fail(f"Umask: {st.get('Umask')}")


_LIMITS = {"RLIMIT_NOFILE": "Max open files", "RLIMIT_CORE": "Max core file size", "RLIMIT_NPROC": "Max processes",
           "RLIMIT_MSGQUEUE": "Max msgqueue size"}


def _limits(pid: int) -> dict[str, tuple[str, str]]:
    out = {}
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        name = line[:26].strip()
        parts = line[26:].split()
        out[name] = (parts[0], parts[1])
    return out


@check("process.rlimits", f"{CF}#posix-process")
def process_rlimits(c: Ctx) -> None:
    cfg = c.config()
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456},
                                 {"type": "RLIMIT_CORE", "soft": 0, "hard": 4096},
                                 {"type": "RLIMIT_MSGQUEUE", "soft": 1000, "hard": 2000}]
    lim = _limits(c.run(cfg).pid)
    for rl in cfg["process"]["rlimits"]:
        got = lim[_LIMITS[rl["type"]]]
        if got != (str(rl["soft"]), str(rl["hard"])):
            raise Fail(f"{rl['type']}: {got}, want {rl['soft']}/{rl['hard']}")


@check("process.rlimits: duplicate type is an error", f"{CF}#posix-process")
def rlimits_dup(c: Ctx) -> None:
    cfg = c.config()
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 100},
                                 {"type": "RLIMIT_NOFILE", "soft": 200, "hard": 200}]
    k = c.try_create(cfg)
    if k.create_result.ok:
        try:
            k.start()
        except Fail:
            return
        raise Fail("duplicate RLIMIT_NOFILE accepted")


@check("process.rlimits: unknown type is an error", f"{CF}#posix-process")
def rlimits_unknown(c: Ctx) -> None:
    cfg = c.config()
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]
    k = c.try_create(cfg)
    if k.create_result.ok:
        try:
            k.start()
        except Fail:
            return
        raise Fail("RLIMIT_BOGUS accepted")


def _caps_cfg(c: Ctx, sets: dict[str, list[str]], uid: int = 0) -> dict[str, Any]:
    cfg = c.config(uid=uid, gid=uid)
    cfg["process"]["capabilities"] = sets
    cfg["process"]["noNewPrivileges"] = False
    return cfg


_CAPSETS = {
    "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN"],
    "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
    "effective": ["CAP_CHOWN", "CAP_KILL"],
    "inheritable": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
    "ambient": ["CAP_NET_BIND_SERVICE"],
}
_STATUS_KEY = {"bounding": "CapBnd", "permitted": "CapPrm", "effective": "CapEff", "inheritable": "CapInh",
               "ambient": "CapAmb"}


def _cap_check(setname: str) -> Any:
    def fn(c: Ctx) -> None:
        # uid 1000 so that exec does not fill permitted/effective from the bounding set
        st = proc_status(c.run(_caps_cfg(c, _CAPSETS, uid=1000)).pid)
        got = cap_names(st[_STATUS_KEY[setname]])
        want = set(_CAPSETS[setname])
        if setname in ("permitted", "effective"):
            # execve of a file without file capabilities by a non-root user: P' = E' = ambient,
            # which the runtime can only have raised from its permitted (and inheritable) set
            want = set(_CAPSETS["ambient"])
        if got != want:
            raise Fail(f"{_STATUS_KEY[setname]} = {sorted(got)}, want {sorted(want)}")
    fn.__name__ = f"caps_{setname}"
    return fn


for _s in ("bounding", "effective", "inheritable", "permitted", "ambient"):
    check(f"process.capabilities.{_s}", f"{CF}#linux-process")(_cap_check(_s))


@check("process.capabilities: unknown name is a warning, not an error", f"{CF}#linux-process")
def caps_unknown(c: Ctx) -> None:
    sets = {k: v + ["CAP_NOT_A_CAPABILITY"] for k, v in _CAPSETS.items() if k != "ambient"}
    k = c.try_create(_caps_cfg(c, sets))
    if not k.create_result.ok:
        raise Fail(f"an unknown capability failed create: {k.create_result.why()}")
    k.start()
    if cap_names(proc_status(k.pid)["CapBnd"]) != set(_CAPSETS["bounding"]):
        raise Fail("the known capabilities were not applied")


@check("process.noNewPrivileges", f"{CF}#linux-process")
def nnp(c: Ctx) -> None:
    for value in (True, False):
        cfg = c.config()
        cfg["process"]["noNewPrivileges"] = value
        got = proc_status(c.run(cfg).pid)["NoNewPrivs"]
        if got != str(int(value)):
            raise Fail(f"noNewPrivileges {value}: NoNewPrivs {got}")


@check("process.oomScoreAdj", f"{CF}#linux-process")
def oom_score_adj(c: Ctx) -> None:
    cfg = c.config()
    cfg["process"]["oomScoreAdj"] = 123
    got = Path(f"/proc/{c.run(cfg).pid}/oom_score_adj").read_text().strip()
    if got != "123":
        raise Fail(f"oom_score_adj {got}")


@check("process.oomScoreAdj: unset leaves it unchanged", f"{CF}#linux-process")
def oom_score_adj_unset(c: Ctx) -> None:
    ours = Path("/proc/self/oom_score_adj").read_text().strip()
    got = Path(f"/proc/{c.run(c.config()).pid}/oom_score_adj").read_text().strip()
    if got != ours:
        raise Fail(f"oom_score_adj {got}, the caller's is {ours}")


@check("process.scheduler", f"{CF}#linux-process")
def scheduler(c: Ctx) -> str | None:
    cfg = c.config()
    cfg["process"]["scheduler"] = {"policy": "SCHED_BATCH", "nice": 7}
    k = c.applied_or_refused(cfg, "scheduler")
    if k is None:
        return "refused (unsupported: allowed)"
    fields = Path(f"/proc/{k.pid}/stat").read_text().rsplit(")", 1)[1].split()
    nice, policy = int(fields[16]), int(fields[38])
    if policy != 3 or nice != 7:
        raise Fail(f"accepted but policy={policy} nice={nice} (want SCHED_BATCH=3, 7)")
    return None


@check("process.ioPriority", f"{CF}#linux-process")
def io_priority(c: Ctx) -> str | None:
    cfg = c.config()
    cfg["process"]["ioPriority"] = {"class": "IOPRIO_CLASS_IDLE", "priority": 4}
    k = c.applied_or_refused(cfg, "ioPriority")
    if k is None:
        return "refused (unsupported: allowed)"
    libc = ctypes.CDLL(None, use_errno=True)
    prio = libc.syscall(252, 1, k.pid)  # ioprio_get(IOPRIO_WHO_PROCESS, pid), x86_64
    if prio < 0 or prio >> 13 != 3 or prio & 0x1FFF != 4:
        raise Fail(f"accepted but ioprio is class {prio >> 13} level {prio & 0x1fff} (want IDLE=3, 4)")
    return None


@check("process.execCPUAffinity", f"{CF}#linux-process")
def exec_cpu_affinity(c: Ctx) -> None:
    raise Skip("applies to exec'd processes only; exec is not a runtime-spec operation")


@check("process.apparmorProfile", f"{CF}#linux-process")
def apparmor(c: Ctx) -> None:
    if not Path("/sys/kernel/security/apparmor").exists():
        raise Skip("host lacks AppArmor")
    raise Skip("AppArmor checks not written")


@check("process.selinuxLabel", f"{CF}#linux-process")
def selinux(c: Ctx) -> None:
    if not Path("/sys/fs/selinux/enforce").exists():
        raise Skip("host lacks SELinux")
    raise Skip("SELinux checks not written")


def _recv_fd(conn: socket.socket) -> int:
    fds = array.array("i")
    msg, anc, _flags, _addr = conn.recvmsg(4096, socket.CMSG_SPACE(4 * fds.itemsize))
    for level, typ, data in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    if not fds:
        raise Fail("nothing received on the console socket")
    return fds[0]


@check("process.terminal and consoleSize, /dev/console", f"{CF}#process")
def terminal(c: Ctx) -> None:
    cfg = c.config(terminal=True)
    cfg["process"]["consoleSize"] = {"height": 33, "width": 111}
    sock = c.dir / "console.sock"
    with unix_listener(sock) as srv:
        import threading
        got: dict[str, int] = {}

        def accept() -> None:
            try:
                conn, _ = srv.accept()
                with conn:
                    got["fd"] = _recv_fd(conn)
            except OSError:
                pass
        t = threading.Thread(target=accept, daemon=True)
        t.start()
        k = c.create(cfg, "--console-socket", str(sock))
        t.join(10)
    if "fd" not in got:
        raise Fail("no pty master arrived on --console-socket")
    master = got["fd"]
    c.cleanups.append(lambda: os.close(master))
    k.start()
    if not os.isatty(master):
        raise Fail("the fd sent is not a terminal")
    link = os.readlink(f"/proc/{k.pid}/fd/0")
    if "/dev/pts/" not in link:
        raise Fail(f"stdin of the process is {link}, not a pty")
    rows, cols = struct.unpack("HHHH", fcntl.ioctl(master, termios.TIOCGWINSZ, b"\0" * 8))[:2]
    if (rows, cols) != (33, 111):
        raise Fail(f"window size {rows}x{cols}, want 33x111 (consoleSize)")
    if not stat.S_ISCHR(os.stat(k.root("/dev/console")).st_mode):
        raise Fail("/dev/console is not a character device")
    if os.stat(k.root("/dev/console")).st_rdev != os.stat(f"/proc/{k.pid}/fd/0").st_rdev:
        raise Fail("/dev/console is not the process's pty")


@check("hostname", f"{CF}#hostname")
def hostname(c: Ctx) -> None:
    k = c.run(c.config(hostname="conf-host"))
    got = in_ns(k.pid, ["uts"], "import socket; print(socket.gethostname())").strip()
    if got != "conf-host":
        raise Fail(f"hostname {got!r}")


@check("domainname", f"{CF}#domainname")
def domainname(c: Ctx) -> None:
    cfg = c.config()
    cfg["domainname"] = "conf.example"
    k = c.run(cfg)
    got = in_ns(k.pid, ["uts"], "print(open('/proc/sys/kernel/domainname').read().strip())").strip()
    if got != "conf.example":
        raise Fail(f"domainname {got!r}")


@check("extensibility: unknown properties are ignored", f"{CF}#extensibility")
def unknown_props(c: Ctx) -> None:
    cfg = c.config()
    cfg["org.example.unknown"] = {"a": 1}
    cfg["process"]["org.example.unknown"] = True
    cfg["linux"]["org.example.unknown"] = [1, 2]
    k = c.try_create(cfg)
    if not k.create_result.ok:
        raise Fail(f"unknown properties failed create: {k.create_result.why()}")


@check("valid values: an invalid value is an error", f"{CF}#valid-values")
def invalid_value(c: Ctx) -> None:
    cfg = c.config()
    cfg["linux"]["namespaces"].append({"type": "not-a-namespace"})
    if c.try_create(cfg).create_result.ok:
        raise Fail("namespace type 'not-a-namespace' accepted")


def _json_ok(text: str) -> dict[str, Any]:
    try:
        return dict(json.loads(text))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise Fail(f"not JSON: {text[:200]!r}") from e
