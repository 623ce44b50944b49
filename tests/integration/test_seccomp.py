"""linux.seccomp on real containers: what the process sees of its filter.

Most tests run ``sys NR [ARG...]`` (tests/seccomp_helpers.py: a static binary, bind-mounted
read-only on /home) to make exactly the syscall a rule is about, and read back ``ret=R errno=E``;
busybox's own applets show the errors as users see them.  Syscall numbers are x86_64's.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import select
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import edit_config, needs_root, new_id, proc_status
from seccomp_helpers import (CONTAINERS_SECCOMP, build_syscall_helper, parse_sys, podman_caps,
                             podman_profile)

pytestmark = [needs_root, pytest.mark.skipif(platform.machine() != "x86_64",
                                             reason="the syscall numbers in these tests are x86_64's")]

# x86_64 syscall numbers
NR_SOCKET, NR_GETPPID, NR_UMASK, NR_PERSONALITY, NR_MKDIR = 41, 110, 95, 135, 83
NR_ADD_KEY, NR_IO_URING_SETUP = 248, 425
HELPER = "/home/sys"  # the helper directory is bind-mounted on the rootfs's (existing) /home


# ---------------------------------------------------------------------------- helpers


@pytest.fixture(scope="session")
def helper_dir(workdir: Path) -> Path:
    d = workdir / "seccomp-bin"
    if build_syscall_helper(d) is None:
        pytest.skip("gcc -static is not available to build the syscall helper")
    return d


@pytest.fixture
def bundle(make_bundle, helper_dir):  # type: ignore[no-untyped-def]
    """``bundle(args, seccomp, nnp=True, edit=None)``: a busybox bundle with a writable /tmp, the
    syscall helper at /home and ``seccomp`` as linux.seccomp."""
    def make(args: list[str], seccomp: dict | None, nnp: bool = True, edit=None, **options) -> Path:  # type: ignore[no-untyped-def]
        b = make_bundle(args, **options)

        def fn(c: dict) -> None:
            c["process"]["noNewPrivileges"] = nnp
            c["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"})
            c["mounts"].append({"destination": "/home", "type": "bind", "source": str(helper_dir),
                                "options": ["rbind", "ro"]})
            if seccomp is not None:
                c["linux"]["seccomp"] = seccomp
            if edit is not None:
                edit(c)
        edit_config(b, fn)
        return b
    return make


def run(pyrunc, b: Path, *flags: str):  # type: ignore[no-untyped-def]
    return pyrunc(*flags, "run", "-b", str(b), new_id(), check=False)


def allow_but(action: str, names: list[str], **extra: object) -> dict:
    return {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": names, "action": action, **extra}]}


def kernel_log_has(*words: str, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout
        if any(all(w in line for w in words) for line in out.splitlines()):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def state_dirs(pyrunc) -> list[str]:  # type: ignore[no-untyped-def]
    return os.listdir(pyrunc.root) if pyrunc.root.exists() else []


# ---------------------------------------------------------------------------- actions


def test_errno_default_eperm_and_errno_ret(pyrunc, bundle) -> None:
    b = bundle(["sh", "-c", "mkdir /tmp/a; echo rc=$?"], allow_but("SCMP_ACT_ERRNO", ["mkdir", "mkdirat"]))
    p = run(pyrunc, b)
    assert p.returncode == 0, p.stderr
    assert "rc=1" in p.stdout and "Operation not permitted" in p.stderr

    b = bundle(["sh", "-c", "mkdir /tmp/a; echo rc=$?; mkdir -p /tmp/b/c && echo still-there"],
               allow_but("SCMP_ACT_ERRNO", ["mkdir", "mkdirat"], errnoRet=errno.EDQUOT))
    p = run(pyrunc, b)
    assert "Disk quota exceeded" in p.stderr and "still-there" not in p.stdout


def test_without_seccomp_the_same_commands_work(pyrunc, bundle) -> None:
    """The control for the tests above: the bundle itself lets mkdir through."""
    p = run(pyrunc, bundle(["sh", "-c", "mkdir /tmp/a && echo made; grep ^Seccomp: /proc/self/status"], None))
    assert p.stdout.split() == ["made", "Seccomp:", "0"], p.stderr


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS"])
def test_kill_actions_end_the_process_with_sigsys(pyrunc, bundle, action: str) -> None:
    p = run(pyrunc, bundle(["mkdir", "/tmp/a"], allow_but(action, ["mkdir", "mkdirat"])))
    assert p.returncode == 128 + 31, (p.returncode, p.stderr)  # SIGSYS
    p = run(pyrunc, bundle(["sh", "-c", "echo before; mkdir /tmp/a; echo shell-rc=$?"],
                           allow_but(action, ["mkdir", "mkdirat"])))
    assert p.stdout.split() == ["before", f"shell-rc={128 + 31}"], p.stderr


def test_trap_delivers_sigsys_to_a_handler(pyrunc, bundle) -> None:
    script = 'trap "echo trapped" SYS; cd /tmp; echo went-on'
    p = run(pyrunc, bundle(["sh", "-c", script], allow_but("SCMP_ACT_TRAP", ["chdir"])))
    assert p.returncode == 0 and p.stdout.split() == ["trapped", "went-on"], (p.stdout, p.stderr)


def test_trace_without_a_tracer_is_enosys(pyrunc, bundle) -> None:
    p = run(pyrunc, bundle(["sh", "-c", "mkdir /tmp/a; echo rc=$?"], allow_but("SCMP_ACT_TRACE", ["mkdir", "mkdirat"])))
    assert "rc=1" in p.stdout and "Function not implemented" in p.stderr


def test_log_action_lets_the_syscall_through_and_logs_it(pyrunc, bundle) -> None:
    prof = allow_but("SCMP_ACT_LOG", ["mkdir", "mkdirat", "getppid"])
    p = run(pyrunc, bundle(["sh", "-c", "mkdir /tmp/a && echo made"], prof))
    assert (p.returncode, p.stdout) == (0, "made\n"), p.stderr
    b = bundle([HELPER, str(NR_GETPPID)], prof)
    cid, out = new_id(), b / "out"
    with open(out, "w") as f:  # the container's stdout is create's
        pyrunc("create", "-b", str(b), cid, stdout=f)
    pid = pyrunc.state(cid)["pid"]
    pyrunc("start", cid)
    deadline = time.monotonic() + 10
    while "ret=" not in out.read_text():
        assert time.monotonic() < deadline, "the container never printed its result"
        time.sleep(0.02)
    assert parse_sys(out.read_text()) == (0, 0)  # getppid of PID 1: 0, and no error
    assert kernel_log_has(f"pid={pid} ", "syscall=110", "code=0x7ffc0000"), \
        "no audit record of the logged getppid in the kernel log"
    pyrunc("delete", "--force", cid)


def test_flag_log_logs_the_errno_action(pyrunc, bundle) -> None:
    prof = allow_but("SCMP_ACT_ERRNO", ["getppid"])
    prof["flags"] = ["SECCOMP_FILTER_FLAG_LOG"]
    cid = new_id()
    b = bundle([HELPER, str(NR_GETPPID)], prof)
    pyrunc("create", "-b", str(b), cid)
    pid = pyrunc.state(cid)["pid"]
    pyrunc("start", cid)
    assert kernel_log_has(f"pid={pid} ", "syscall=110", "code=0x50000"), \
        "SECCOMP_FILTER_FLAG_LOG: the denied getppid was not logged"
    pyrunc("delete", "--force", cid)


def test_allow_rules_over_a_deny_default(pyrunc, bundle) -> None:
    """defaultAction ERRNO with defaultErrnoRet: only the listed syscalls run.  umask is not
    listed: it fails with defaultErrnoRet; a syscall above every listed one (io_uring_setup)
    gets ENOSYS from runc's stub instead, so that a libc falls back from it."""
    allowed = ["execve", "brk", "arch_prctl", "set_tid_address", "set_robust_list", "rseq", "prlimit64",
               "mprotect", "readlink", "uname", "getrandom", "newfstatat", "fstat", "write", "exit_group",
               "ioctl", "mmap", "munmap", "read", "close", "getpid"]
    prof = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.EREMOTEIO,
            "syscalls": [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]}
    p = run(pyrunc, bundle([HELPER, "39"], prof))
    assert p.returncode == 0 and parse_sys(p.stdout) == (1, 0), (p.stdout, p.stderr)  # getpid: PID 1
    p = run(pyrunc, bundle([HELPER, str(NR_UMASK), "0"], prof))
    assert parse_sys(p.stdout) == (-1, errno.EREMOTEIO)
    p = run(pyrunc, bundle([HELPER, str(NR_IO_URING_SETUP), "0", "0"], prof))
    assert parse_sys(p.stdout) == (-1, errno.ENOSYS)
    # the control: the kernel itself answers these differently
    p = run(pyrunc, bundle(["sh", "-c", f"{HELPER} {NR_UMASK} 0; {HELPER} {NR_IO_URING_SETUP} 0 0"], None))
    assert [e for _, e in _sys_lines(p)] == [0, errno.EFAULT], p.stdout


# ---------------------------------------------------------------------------- argument conditions


def _sys_lines(p) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
    return [parse_sys(line) for line in p.stdout.splitlines() if line.startswith("ret=")]


def test_condition_on_one_argument(pyrunc, bundle) -> None:
    prof = allow_but("SCMP_ACT_ERRNO", ["personality"], errnoRet=errno.EUCLEAN,
                     args=[{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_EQ"}])
    p = run(pyrunc, bundle(["sh", "-c", f"{HELPER} {NR_PERSONALITY} 0xffffffff; {HELPER} {NR_PERSONALITY} 0"], prof))
    (_, e1), (r2, e2) = _sys_lines(p)
    assert e1 == errno.EUCLEAN and (r2, e2) == (0, 0), p.stdout


@pytest.mark.parametrize("op, denied", [
    ("SCMP_CMP_NE", [0o77, 0o101]), ("SCMP_CMP_LT", [0o77]), ("SCMP_CMP_LE", [0o77, 0o100]),
    ("SCMP_CMP_EQ", [0o100]), ("SCMP_CMP_GE", [0o100, 0o101]), ("SCMP_CMP_GT", [0o101]),
])
def test_each_comparison_operator(pyrunc, bundle, op: str, denied: list[int]) -> None:
    prof = allow_but("SCMP_ACT_ERRNO", ["umask"], errnoRet=errno.EBADE,
                     args=[{"index": 0, "value": 0o100, "op": op}])
    tried = [0o77, 0o100, 0o101]
    p = run(pyrunc, bundle(["sh", "-c", "; ".join(f"{HELPER} {NR_UMASK} {v}" for v in tried)], prof))
    got = [v for v, (_, e) in zip(tried, _sys_lines(p)) if e == errno.EBADE]
    assert got == denied, p.stdout


def test_masked_eq(pyrunc, bundle) -> None:
    """value is the mask, valueTwo what the masked argument must equal (runc, libseccomp):
    deny datagram sockets whatever the SOCK_* flags."""
    prof = allow_but("SCMP_ACT_ERRNO", ["socket"], errnoRet=errno.EPROTONOSUPPORT,
                     args=[{"index": 1, "value": 0xF, "valueTwo": 2, "op": "SCMP_CMP_MASKED_EQ"}])
    tries = [(2, 2), (2, 2 | 0x80000), (2, 1), (1, 2 | 0x800)]
    p = run(pyrunc, bundle(["sh", "-c", "; ".join(f"{HELPER} {NR_SOCKET} {d} {t} 0" for d, t in tries)], prof))
    denied = [e == errno.EPROTONOSUPPORT for _, e in _sys_lines(p)]
    assert denied == [True, True, False, True], p.stdout


def test_conditions_on_different_arguments_must_all_hold(pyrunc, bundle) -> None:
    prof = allow_but("SCMP_ACT_ERRNO", ["socket"], errnoRet=errno.ESOCKTNOSUPPORT,
                     args=[{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 1, "op": "SCMP_CMP_EQ"}])
    tries = [(2, 1), (2, 2), (10, 1)]
    p = run(pyrunc, bundle(["sh", "-c", "; ".join(f"{HELPER} {NR_SOCKET} {d} {t} 0" for d, t in tries)], prof))
    assert [e == errno.ESOCKTNOSUPPORT for _, e in _sys_lines(p)] == [True, False, False], p.stdout


def test_conditions_on_the_same_argument_become_separate_rules(pyrunc, bundle) -> None:
    """runc's rule: when one argument has several conditions, each is a rule of its own (any may
    hold), so this denies both AF_INET and AF_INET6 sockets, and not AF_UNIX ones."""
    prof = allow_but("SCMP_ACT_ERRNO", ["socket"], errnoRet=errno.EAFNOSUPPORT,
                     args=[{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 10, "op": "SCMP_CMP_EQ"}])
    tries = [(2, 2), (10, 2), (1, 2)]
    p = run(pyrunc, bundle(["sh", "-c", "; ".join(f"{HELPER} {NR_SOCKET} {d} {t} 0" for d, t in tries)], prof))
    assert [e == errno.EAFNOSUPPORT for _, e in _sys_lines(p)] == [True, True, False], p.stdout


# ---------------------------------------------------------------------------- names, order, exec


def test_unknown_syscall_names_are_ignored_with_a_debug_message(pyrunc, bundle) -> None:
    b = bundle(["sh", "-c", "mkdir /tmp/a; echo rc=$?"],
               allow_but("SCMP_ACT_ERRNO", ["no_such_syscall_x", "mkdir", "mkdirat"]))
    p = run(pyrunc, b)
    assert "rc=1" in p.stdout and "no_such_syscall_x" not in p.stderr, p.stderr
    p = run(pyrunc, b, "--debug")
    assert "rc=1" in p.stdout
    assert 'syscall \\"no_such_syscall_x\\" (linux.seccomp.syscalls[0]) is not known to libseccomp' in p.stderr


def test_with_no_new_privs_the_init_stage_is_not_filtered(pyrunc, bundle) -> None:
    """Loaded right before execve: what the init does after pivot_root (capabilities, user, cwd,
    the start gate, closing fds, signals) does not go through the filter."""
    init_syscalls = ["capset", "capget", "prctl", "setresuid", "setresgid", "setgroups", "chdir", "close_range",
                     "rt_sigaction", "select", "pselect6", "sendto", "recvfrom", "recvmsg", "newfstatat", "access",
                     "openat", "close", "read", "fcntl", "getcwd"]
    p = run(pyrunc, bundle(["echo", "ran"], allow_but("SCMP_ACT_ERRNO", init_syscalls), nnp=True))
    assert (p.returncode, p.stdout) == (0, "ran\n"), p.stderr


def test_without_no_new_privs_the_filter_comes_before_the_user_switch(pyrunc, bundle) -> None:
    """runc's order: without no_new_privs, loading needs CAP_SYS_ADMIN, so the filter is loaded
    before the capabilities and the user change -- which then go through it."""
    def user(c: dict) -> None:
        c["process"]["user"] = {"uid": 1000, "gid": 1000}
    prof = allow_but("SCMP_ACT_ERRNO", ["setresuid"])
    p = run(pyrunc, bundle(["true"], prof, nnp=False, edit=user))
    assert p.returncode != 0 and "process.user.uid 1000: Operation not permitted" in p.stderr, p.stderr
    p = run(pyrunc, bundle(["id", "-u"], prof, nnp=True, edit=user))
    assert (p.returncode, p.stdout) == (0, "1000\n"), p.stderr


def test_without_no_new_privs_and_without_cap_sys_admin(pyrunc, bundle) -> None:
    def caps(c: dict) -> None:
        c["process"]["capabilities"] = {k: ["CAP_KILL"] for k in ("bounding", "effective", "permitted")}
    p = run(pyrunc, bundle(["sh", "-c", "mkdir /tmp/a; grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status"],
                           allow_but("SCMP_ACT_ERRNO", ["mkdir", "mkdirat"]), nnp=False, edit=caps))
    assert "Operation not permitted" in p.stderr
    assert p.stdout.split() == ["CapEff:", "0000000000000020", "NoNewPrivs:", "0", "Seccomp:", "2"], p.stdout


@pytest.mark.parametrize("nnp", [False, True])
def test_in_a_user_namespace(pyrunc, bundle, nnp: bool) -> None:
    """Without no_new_privs, loading takes CAP_SYS_ADMIN in the container's own user namespace."""
    prof = allow_but("SCMP_ACT_ERRNO", ["mkdir", "mkdirat"], errnoRet=errno.ENOTNAM)
    p = run(pyrunc, bundle(["sh", "-c", "mkdir /tmp/a; grep ^Seccomp: /proc/self/status"], prof, nnp=nnp,
                           userns=True))
    assert p.returncode == 0 and p.stdout.split() == ["Seccomp:", "2"], p.stderr
    assert os.strerror(errno.ENOTNAM) in p.stderr


def test_exec_gets_the_container_filter(pyrunc, bundle) -> None:
    prof = allow_but("SCMP_ACT_ERRNO", ["mkdir", "mkdirat"], errnoRet=errno.ENOLINK)
    cid = new_id()
    pyrunc("run", "-d", "-b", str(bundle(["sleep", "300"], prof)), cid)
    p = pyrunc("exec", cid, "sh", "-c", "grep -E '^Seccomp(_filters)?:' /proc/self/status; mkdir /tmp/x",
               check=False)
    assert p.stdout.split() == ["Seccomp:", "2", "Seccomp_filters:", "1"], p.stdout
    assert "Link has been severed" in p.stderr
    # --no-new-privs or not, the same filter
    p = pyrunc("exec", "--no-new-privs", cid, HELPER, str(NR_MKDIR), "0", check=False)
    assert parse_sys(p.stdout) == (-1, errno.ENOLINK)
    # exec loads the program create compiled and kept; without it, it compiles the config's again
    kept = Path(pyrunc.root) / cid / "seccomp-filter.json"
    assert kept.exists()
    kept.unlink()
    p = pyrunc("exec", cid, HELPER, str(NR_MKDIR), "0", check=False)
    assert parse_sys(p.stdout) == (-1, errno.ENOLINK)
    pid_file = Path(pyrunc.root).parent / f"{cid}.pid"
    pyrunc("exec", "-d", "--pid-file", str(pid_file), cid, "sleep", "100")
    st = proc_status(int(pid_file.read_text()))
    assert (st["Seccomp"], st["Seccomp_filters"]) == ("2", "1")
    pid_file.unlink()
    pyrunc("delete", "--force", cid)


def test_flags(pyrunc, bundle) -> None:
    for flags in ([], ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"], ["SECCOMP_FILTER_FLAG_LOG"]):
        prof = allow_but("SCMP_ACT_ERRNO", ["mkdir", "mkdirat"])
        prof["flags"] = flags
        p = run(pyrunc, bundle(["sh", "-c", "mkdir /tmp/a; echo rc=$?"], prof))
        assert (p.returncode, p.stdout) == (0, "rc=1\n"), (flags, p.stderr)


# ---------------------------------------------------------------------------- podman's default profile


@pytest.fixture(scope="session")
def podman_default() -> dict:
    if not CONTAINERS_SECCOMP.exists():
        pytest.skip(f"{CONTAINERS_SECCOMP} is not installed (Debian: golang-github-containers-common)")
    return podman_profile(json.loads(CONTAINERS_SECCOMP.read_text()), podman_caps())


@pytest.mark.parametrize("nnp", [False, True])
def test_podman_default_profile(pyrunc, bundle, podman_default, nnp: bool) -> None:
    """podman's profile for a default container (its capabilities, noNewPrivileges as podman
    leaves it: false): allowed syscalls work, a rule's errno comes back, a syscall the profile
    does not name gets defaultErrnoRet (ENOSYS), and personality only takes the listed values."""
    caps = podman_caps()

    def podman(c: dict) -> None:
        c["process"]["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted")}
    calls = [
        ("39",),                                  # getpid: allowed
        (str(NR_SOCKET), "16", "3", "0"),         # socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE): allowed
        (str(NR_SOCKET), "16", "3", "9"),         # ... NETLINK_AUDIT without CAP_AUDIT_WRITE: EINVAL
        (str(NR_ADD_KEY),),                       # add_key: not in the profile -> ENOSYS (the kernel: EFAULT)
        (str(NR_PERSONALITY), "0xffffffff"),      # personality(query): allowed
        (str(NR_PERSONALITY), "1"),               # other personalities: not listed -> ENOSYS
        ("1000",),                                # beyond every syscall: ENOSYS
    ]
    script = "; ".join(" ".join((HELPER, *c)) for c in calls) + "; mkdir /tmp/d && echo made"
    p = run(pyrunc, bundle(["sh", "-c", script], podman_default, nnp=nnp, edit=podman))
    assert p.returncode == 0, p.stderr
    errnos = [e for _, e in _sys_lines(p)]
    assert errnos == [0, 0, errno.EINVAL, errno.ENOSYS, 0, errno.ENOSYS, errno.ENOSYS], p.stdout
    assert p.stdout.endswith("made\n")
    # the control: without the profile, add_key and personality(1) reach the kernel
    p = run(pyrunc, bundle(["sh", "-c", script], None, nnp=nnp, edit=podman))
    errnos = [e for _, e in _sys_lines(p)]
    assert errnos[3] == errno.EFAULT and errnos[5] == 0 and errnos[2] != errno.EINVAL, p.stdout


# ---------------------------------------------------------------------------- SCMP_ACT_NOTIFY


NOTIF_RECV, NOTIF_SEND, NOTIF_FLAG_CONTINUE = 0xC0502100, 0xC0182101, 1


class Agent:
    """A seccomp agent at ``path``: keeps every container process state it is sent (with the fd),
    and answers every notification on those fds: ``errno`` (a negative error) or, if None, let the
    syscall continue.  ``notes`` records (pid, syscall number) of each notification."""

    def __init__(self, path: Path, errno_ret: int | None = None) -> None:
        self.path = path
        self.errno_ret = errno_ret
        self.states: list[dict] = []
        self.notes: list[tuple[int, int]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.fds: list[int] = []
        self.errors: list[str] = []
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        while not self._stop:
            for fd, events in poller.poll(50):
                try:
                    if fd == self.sock.fileno():
                        new = self._accept()
                        if new >= 0:
                            poller.register(new, select.POLLIN)
                    elif events & select.POLLIN:
                        self._answer(fd)
                    elif events & (select.POLLHUP | select.POLLERR):
                        poller.unregister(fd)  # no process left with that filter
                except Exception as e:  # noqa: BLE001 - reported by the test
                    self.errors.append(repr(e))

    def _accept(self) -> int:
        conn, _ = self.sock.accept()
        with conn:
            data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 4)
            while True:
                more = conn.recv(1 << 16)
                if not more:
                    break
                data += more
        self.states.append(json.loads(data))
        self.fds += fds
        return fds[0] if len(fds) == 1 else -1

    def _answer(self, fd: int) -> None:
        buf = bytearray(80)
        try:
            fcntl.ioctl(fd, NOTIF_RECV, buf, True)
        except OSError as e:
            if e.errno == errno.ENOENT:  # the process went away meanwhile
                return
            raise
        nid, pid, _flags, nr = struct.unpack_from("=QIIi", buf)
        self.notes.append((pid, nr))
        if self.errno_ret is None:
            resp = struct.pack("=QqiI", nid, 0, 0, NOTIF_FLAG_CONTINUE)
        else:
            resp = struct.pack("=QqiI", nid, 0, -self.errno_ret, 0)
        try:
            fcntl.ioctl(fd, NOTIF_SEND, bytearray(resp), True)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise

    def close(self) -> None:
        self._stop = True
        self.thread.join(5)
        for fd in self.fds:
            os.close(fd)
        self.sock.close()


@pytest.fixture
def agent(tmp_path: Path):  # type: ignore[no-untyped-def]
    made: list[Agent] = []

    def make(errno_ret: int | None = None) -> Agent:
        a = Agent(tmp_path / f"agent{len(made)}.sock", errno_ret)
        made.append(a)
        return a
    yield make
    for a in made:
        a.close()
        assert not a.errors, a.errors


def notify_profile(agent: Agent, names: list[str], **extra: object) -> dict:
    return {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": str(agent.path), "listenerMetadata": "bar",
            "syscalls": [{"names": names, "action": "SCMP_ACT_NOTIFY"}], **extra}


@pytest.mark.parametrize("nnp", [False, True])
def test_notify_fd_and_state_reach_the_listener(pyrunc, bundle, agent, nnp: bool) -> None:
    a = agent(errno.ENOMEDIUM)
    b = bundle([HELPER, str(NR_MKDIR), "0"], notify_profile(a, ["mkdir"]), nnp=nnp)
    cid = new_id()
    out = Path(str(b) + ".out")
    with open(out, "w") as f:  # the container's stdout is create's
        pyrunc("create", "-b", str(b), cid, stdout=f)
    pid = pyrunc.state(cid)["pid"]
    assert len(a.states) == 1  # sent during create, before the start gate
    doc = a.states[0]
    assert doc["fds"] == ["seccompFd"] and doc["pid"] == pid and doc["metadata"] == "bar"
    assert doc["state"]["id"] == cid and doc["state"]["status"] == "creating" and doc["state"]["pid"] == pid
    assert doc["state"]["bundle"] == str(b) and doc["ociVersion"] == doc["state"]["ociVersion"]
    pyrunc("start", cid)
    deadline = time.monotonic() + 10
    while "ret=" not in out.read_text():
        assert time.monotonic() < deadline, "the container never printed its result"
        time.sleep(0.02)
    assert parse_sys(out.read_text()) == (-1, errno.ENOMEDIUM)  # the agent's answer
    assert a.notes == [(pid, NR_MKDIR)]
    pyrunc("delete", "--force", cid)


def test_notify_on_exec(pyrunc, bundle, agent) -> None:
    a = agent(errno.EKEYREJECTED)
    flags = ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]
    cid = new_id()
    pyrunc("run", "-d", "-b", str(bundle(["sleep", "300"], notify_profile(a, ["mkdir"], flags=flags))), cid)
    init_pid = pyrunc.state(cid)["pid"]
    p = pyrunc("exec", cid, HELPER, str(NR_MKDIR), "0", check=False)
    assert parse_sys(p.stdout) == (-1, errno.EKEYREJECTED), (p.stdout, p.stderr)
    assert len(a.states) == 2
    doc = a.states[1]
    assert doc["state"]["status"] == "running" and doc["state"]["pid"] == init_pid
    assert doc["pid"] != init_pid and a.notes == [(doc["pid"], NR_MKDIR)]
    pyrunc("delete", "--force", cid)


@pytest.mark.parametrize("nnp", [False, True])
def test_notify_on_the_syscalls_the_init_stage_makes(pyrunc, bundle, agent, nnp: bool) -> None:
    """runc's "important syscalls" case: the agent lets them all continue, and the container runs
    (the init waits for the agent like any process would)."""
    a = agent(None)
    names = ["execve", "openat", "read", "close", "fcntl", "write", "sendto", "recvfrom", "select",
             "rt_sigaction", "close_range", "prctl", "capset", "newfstatat"]
    p = run(pyrunc, bundle([HELPER, "39"], notify_profile(a, names), nnp=nnp))
    assert p.returncode == 0 and parse_sys(p.stdout) == (1, 0), (p.stdout, p.stderr)
    assert a.notes, "no notification reached the agent"


def test_notify_listener_missing_fails_create(pyrunc, bundle, tmp_path) -> None:
    prof = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": str(tmp_path / "nobody.sock"),
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}
    before = state_dirs(pyrunc)
    p = run(pyrunc, bundle(["true"], prof))
    assert p.returncode != 0
    assert "failed to connect with seccomp agent specified in the seccomp profile" in p.stderr, p.stderr
    assert state_dirs(pyrunc) == before


# ---------------------------------------------------------------------------- bad profiles


@pytest.mark.parametrize("profile, where", [
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ALLOW"},
                                                      {"names": ["x"], "action": "SCMP_ACT_DENY"}]},
     "linux.seccomp.syscalls[1].action"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_VAX"]},
     "linux.seccomp.architectures[1]"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_NEW_LISTENER"]}, "linux.seccomp.flags[0]"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 5}, "linux.seccomp.defaultErrnoRet"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_KILL", "errnoRet": 1}]},
     "linux.seccomp.syscalls[0].errnoRet"),
    ({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/x"}, "linux.seccomp.defaultAction"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]},
     "linux.seccomp.syscalls[0].action"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
     "linux.seccomp.syscalls[0].args[0].index"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", ""], "action": "SCMP_ACT_ERRNO"}]},
     "linux.seccomp.syscalls[0].names[1]"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]},
     "linux.seccomp.flags[0]"),
    # refused by libseccomp in the init stage, after the runtime made the state directory
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_M68K"]},
     "linux.seccomp.architectures[1]"),
])
def test_bad_profiles_name_the_json_path(pyrunc, bundle, profile: dict, where: str) -> None:
    if "SCMP_ARCH_M68K" in profile.get("architectures", ()):
        from pyrunc.seccomp import libseccomp
        if libseccomp().lib.seccomp_arch_resolve_name(b"m68k"):
            pytest.skip(f"libseccomp {libseccomp().version} knows m68k")
    b = bundle(["true"], profile)
    before = state_dirs(pyrunc)
    p = run(pyrunc, b)
    assert p.returncode != 0 and f"{where}:" in p.stderr, p.stderr
    assert state_dirs(pyrunc) == before
    p = pyrunc("validate", "--bundle", str(b), check=False)
    if "M68K" not in str(profile):  # what needs libseccomp is found at create time only
        assert p.returncode == 1 and where in p.stdout + p.stderr, p.stdout + p.stderr
