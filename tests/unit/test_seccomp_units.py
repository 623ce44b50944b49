"""pyrunc.seccomp without containers: the semantic checks, runc's rule expansion, runc's -ENOSYS
stub, and compiled filters run through a cBPF interpreter (tests/seccomp_helpers.py) instead of
the kernel.  Compiling needs libseccomp.so.2 (not root)."""

from __future__ import annotations

import errno
import json
import os
import platform
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from seccomp_helpers import CONTAINERS_SECCOMP, podman_caps, podman_profile, run_bpf  # noqa: E402

from pyrunc import seccomp as S  # noqa: E402
from pyrunc.config import validate  # noqa: E402

X86_64 = 0xC000003E
X86 = 0x40000003
X32_BIT = 0x40000000
ALLOW, KILL = S.ACT_ALLOW, S.ACT_KILL_THREAD
ENOSYS_RET = S.ACT_ERRNO | errno.ENOSYS


def errno_ret(e: int) -> int:
    return S.ACT_ERRNO | e


def have_libseccomp() -> bool:
    try:
        S.libseccomp()
    except S.SeccompError:
        return False
    return True


needs_libseccomp = pytest.mark.skipif(not have_libseccomp(), reason="libseccomp.so.2 is not installed")
x86_64_only = pytest.mark.skipif(platform.machine() != "x86_64", reason="x86_64 syscall numbers")


# ---------------------------------------------------------------------------- check()


@pytest.mark.parametrize("profile, expected", [
    ({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1},
     "linux.seccomp.defaultErrnoRet: SCMP_ACT_ALLOW does not return an errno"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 5000},
     "linux.seccomp.defaultErrnoRet: 5000 is not an errno"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_LOG", "errnoRet": 1}]},
     "linux.seccomp.syscalls[0].errnoRet: SCMP_ACT_LOG does not return an errno"),
    ({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/x"},
     "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be used as default action"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]},
     "linux.seccomp.syscalls[0].action: SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x",
      "syscalls": [{"names": ["mkdir", "sendmsg"], "action": "SCMP_ACT_NOTIFY"}]},
     "linux.seccomp.syscalls[0].names[1]: SCMP_ACT_NOTIFY cannot be used for the sendmsg syscall"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [""], "action": "SCMP_ACT_KILL"}]},
     "linux.seccomp.syscalls[0].names[0]: empty string is not a valid syscall"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["x"], "action": "SCMP_ACT_KILL", "args": [{"index": 9, "value": 0, "op": "SCMP_CMP_EQ"}]}]},
     "linux.seccomp.syscalls[0].args[0].index: 9 is out of range"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]},
     "linux.seccomp.flags[1]: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs a rule with SCMP_ACT_NOTIFY"),
])
def test_check_names_the_path(profile: dict, expected: str) -> None:
    problems = S.check(profile)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_check_accepts_good_profiles() -> None:
    assert S.check({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_TRACE", "errnoRet": 0},
        {"names": ["write"], "action": "SCMP_ACT_NOTIFY"},
        {"names": ["x"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 5, "value": 1, "op": "SCMP_CMP_EQ"},
                                                              {"index": 5, "value": 2, "op": "SCMP_CMP_EQ"}]}],
        "listenerPath": "/run/agent.sock", "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}) == []


def test_config_validation_runs_the_checks() -> None:
    doc = {"ociVersion": "1.3.0", "root": {"path": "rootfs"}, "process": {"args": ["true"], "cwd": "/"},
           "linux": {"seccomp": {"defaultAction": "SCMP_ACT_KILL", "defaultErrnoRet": 1,
                                 "syscalls": [{"names": ["x"], "action": "SCMP_ACT_DENY"}]}}}
    # the schema first (an unknown action), then -- once that is fixed -- the semantics
    assert any(p.startswith("linux.seccomp.syscalls[0].action") for p in validate(doc))
    doc["linux"]["seccomp"]["syscalls"][0]["action"] = "SCMP_ACT_ALLOW"
    assert validate(doc) == ["linux.seccomp.defaultErrnoRet: SCMP_ACT_KILL does not return an errno "
                             "(only SCMP_ACT_ERRNO and SCMP_ACT_TRACE do)"]


# ---------------------------------------------------------------------------- rules()


def test_actions_as_runc_maps_them() -> None:
    assert S.action_value("SCMP_ACT_KILL") == S.action_value("SCMP_ACT_KILL_THREAD") == 0
    assert S.action_value("SCMP_ACT_KILL_PROCESS") == 0x80000000
    assert S.action_value("SCMP_ACT_ERRNO") == 0x50001  # EPERM without errnoRet
    assert S.action_value("SCMP_ACT_ERRNO", 38) == 0x50026
    assert S.action_value("SCMP_ACT_TRACE") == 0x7FF00001
    assert S.action_value("SCMP_ACT_TRACE", 0) == 0x7FF00000
    assert S.action_value("SCMP_ACT_NOTIFY") == 0x7FC00000


def test_rules_one_per_name_and_runcs_argument_grouping() -> None:
    eq, ne = S.OPERATORS["SCMP_CMP_EQ"], S.OPERATORS["SCMP_CMP_NE"]
    got = S.rules({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["a", "b"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5},
        {"names": ["c"], "action": "SCMP_ACT_KILL", "args": [
            {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 2, "value": 3, "op": "SCMP_CMP_NE"}]},
        {"names": ["d"], "action": "SCMP_ACT_LOG", "args": [
            {"index": 1, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 7, "valueTwo": 9,
                                                           "op": "SCMP_CMP_MASKED_EQ"}]}]})
    assert got == [
        S.Rule("a", 0x50005, [], "linux.seccomp.syscalls[0]"),
        S.Rule("b", 0x50005, [], "linux.seccomp.syscalls[0]"),
        S.Rule("c", 0, [(0, eq, 1, 0), (2, ne, 3, 0)], "linux.seccomp.syscalls[1]"),  # one rule: AND
        S.Rule("d", S.ACT_LOG, [(1, eq, 1, 0)], "linux.seccomp.syscalls[2]"),  # same argument: two rules
        S.Rule("d", S.ACT_LOG, [(1, S.OPERATORS["SCMP_CMP_MASKED_EQ"], 7, 9)], "linux.seccomp.syscalls[2]"),
    ]


# ---------------------------------------------------------------------------- the -ENOSYS stub


def with_stub(last: dict, tail: list | None = None) -> bytes:
    """runc's stub in front of a stand-in filter that allows everything."""
    return S.assemble(S.enosys_stub(last) + (tail or [(0x06, 0, 0, ALLOW)]))


def test_stub_single_arch() -> None:
    prog = with_stub({X86_64: {X86_64: 100}})
    assert run_bpf(prog, 100) == ALLOW and run_bpf(prog, 0) == ALLOW
    assert run_bpf(prog, 101) == ENOSYS_RET and run_bpf(prog, 999) == ENOSYS_RET
    assert run_bpf(prog, 101 | X32_BIT) == ALLOW  # x32 calls are not x86_64's business
    assert run_bpf(prog, 5000, arch=0xDEAD) == ALLOW  # another arch: straight to the filter


def test_stub_x86_64_with_x32_and_x86() -> None:
    prog = with_stub({X86_64: {X86_64: 100, 0x4000003E: 50 | X32_BIT}, X86: {X86: 300}})
    assert run_bpf(prog, 100) == ALLOW and run_bpf(prog, 101) == ENOSYS_RET
    assert run_bpf(prog, 50 | X32_BIT) == ALLOW and run_bpf(prog, 51 | X32_BIT) == ENOSYS_RET
    assert run_bpf(prog, 300, arch=X86) == ALLOW and run_bpf(prog, 301, arch=X86) == ENOSYS_RET


def test_stub_s390x_setup_is_enosys() -> None:
    prog = with_stub({0x80000016: {0x80000016: 400}})
    assert run_bpf(prog, 0, arch=0x80000016) == ENOSYS_RET
    assert run_bpf(prog, 1, arch=0x80000016) == ALLOW and run_bpf(prog, 401, arch=0x80000016) == ENOSYS_RET


def test_stub_long_jumps() -> None:
    """Enough architectures that the jumps no longer fit in 8 bits: runc's long forms."""
    last = {0x1000 + i: {0x1000 + i: 10 + i} for i in range(120)}
    last[X86_64] = {X86_64: 100, 0x4000003E: 50 | X32_BIT}
    prog = with_stub(last)
    assert len(prog) // 8 > 256
    for i in (0, 57, 119):
        assert run_bpf(prog, 10 + i, arch=0x1000 + i) == ALLOW
        assert run_bpf(prog, 11 + i, arch=0x1000 + i) == ENOSYS_RET
    assert run_bpf(prog, 100) == ALLOW and run_bpf(prog, 101) == ENOSYS_RET
    assert run_bpf(prog, 51 | X32_BIT) == ENOSYS_RET


# ---------------------------------------------------------------------------- compiled filters


@needs_libseccomp
@x86_64_only
def test_compiled_profile_behaves_as_written() -> None:
    heard: list[str] = []
    f = S.compile_filter({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.EACCES,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [
            {"names": ["read", "write", "no_such_call"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["mkdir"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_EQ"}]},
            {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 16, "op": "SCMP_CMP_EQ"}]},
            {"names": ["umask"], "action": "SCMP_ACT_TRACE",
             "args": [{"index": 0, "value": 0o700, "valueTwo": 0o700, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES},  # = default: left out
        ]}, heard.append)
    assert f.ignored == ["no_such_call"] and "no_such_call" in heard[0] and f.stub > 0
    p = f.program
    assert run_bpf(p, 0) == ALLOW and run_bpf(p, 1) == ALLOW  # read, write
    assert run_bpf(p, 83) == S.ACT_KILL_PROCESS  # mkdir
    assert run_bpf(p, 39) == errno_ret(errno.EACCES)  # getpid: the default
    assert run_bpf(p, 135, args=(0xFFFFFFFF,)) == ALLOW and run_bpf(p, 135, args=(8,)) == errno_ret(errno.EACCES)
    assert [run_bpf(p, 41, args=(d,)) for d in (1, 16, 2)] == [ALLOW, ALLOW, errno_ret(errno.EACCES)]
    assert run_bpf(p, 95, args=(0o777,)) == S.ACT_TRACE | 1 and run_bpf(p, 95, args=(0o077,)) == errno_ret(13)
    assert run_bpf(p, 136) == ENOSYS_RET  # above personality, the profile's largest x86_64 syscall
    # x86 (i386) numbers: write is 4, mkdir 39, personality 136
    assert run_bpf(p, 4, arch=X86) == ALLOW and run_bpf(p, 39, arch=X86) == S.ACT_KILL_PROCESS
    assert run_bpf(p, 20, arch=X86) == errno_ret(errno.EACCES)  # getpid on x86
    assert run_bpf(p, 500, arch=X86) == ENOSYS_RET
    # an architecture the profile does not list: libseccomp's bad-arch action, KILL
    assert run_bpf(p, 0, arch=0xC00000B7) == KILL
    # x32 is not listed either: bit 30 calls on x86_64 are libseccomp's to refuse
    assert run_bpf(p, 0 | X32_BIT) != ALLOW


@needs_libseccomp
def test_no_stub_when_the_default_lets_through_or_is_enosys() -> None:
    for prof in ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_KILL"}]},
                 {"defaultAction": "SCMP_ACT_LOG", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_KILL"}]},
                 {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.ENOSYS,
                  "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}):
        assert S.compile_filter(prof).stub == 0, prof
    assert S.compile_filter({"defaultAction": "SCMP_ACT_KILL",
                             "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}).stub > 0


@needs_libseccomp
def test_flags() -> None:
    base = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}
    lib = S.libseccomp()
    spec_allow = S.FLAG_SPEC_ALLOW if lib.flag_supported(S.FLAG_SPEC_ALLOW) else 0
    assert S.compile_filter(base).flags == spec_allow  # runc's default
    assert S.compile_filter({**base, "flags": []}).flags == 0
    assert S.compile_filter({**base, "flags": ["SECCOMP_FILTER_FLAG_TSYNC"]}).flags == 0  # ignored, as runc does
    assert S.compile_filter({**base, "flags": ["SECCOMP_FILTER_FLAG_LOG"]}).flags == S.FLAG_LOG
    notify = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x",
              "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}], "flags": []}
    f = S.compile_filter(notify)
    assert f.notify and f.flags == S.FLAG_NEW_LISTENER
    if lib.flag_supported(S.FLAG_WAIT_KILLABLE_RECV | S.FLAG_NEW_LISTENER):
        f = S.compile_filter({**notify, "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]})
        assert f.flags == S.FLAG_NEW_LISTENER | S.FLAG_WAIT_KILLABLE_RECV


@needs_libseccomp
def test_architectures_libseccomp_does_not_know() -> None:
    lib = S.libseccomp()
    unknown = [a for a, n in S.ARCHES.items() if not lib.lib.seccomp_arch_resolve_name(n.encode())]
    if not unknown:
        pytest.skip(f"libseccomp {lib.version} knows every architecture of the spec")
    with pytest.raises(S.SeccompError, match=r"linux\.seccomp\.architectures\[1\]: .* is not known to libseccomp"):
        S.compile_filter({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", unknown[0]]})


@needs_libseccomp
@x86_64_only
def test_podman_default_profile_compiles_and_behaves() -> None:
    if not CONTAINERS_SECCOMP.exists():
        pytest.skip(f"{CONTAINERS_SECCOMP} is not installed")
    prof = podman_profile(json.loads(CONTAINERS_SECCOMP.read_text()), podman_caps())
    assert prof["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    f = S.compile_filter(prof)
    p = f.program
    assert f.stub == 0  # defaultErrnoRet is ENOSYS already
    assert run_bpf(p, 0) == ALLOW and run_bpf(p, 59) == ALLOW  # read, execve
    assert run_bpf(p, 167) == errno_ret(errno.EPERM)  # swapon: no CAP_SYS_ADMIN
    assert run_bpf(p, 161) == ALLOW  # chroot: podman gives CAP_SYS_CHROOT
    assert run_bpf(p, 41, args=(16, 3, 9)) == errno_ret(errno.EINVAL)  # NETLINK_AUDIT without CAP_AUDIT_WRITE
    assert run_bpf(p, 41, args=(16, 3, 0)) == ALLOW
    assert run_bpf(p, 135, args=(0xFFFFFFFF,)) == ALLOW and run_bpf(p, 135, args=(1,)) == ENOSYS_RET
    assert run_bpf(p, 248) == ENOSYS_RET and run_bpf(p, 1000) == ENOSYS_RET  # add_key: not in the profile
    assert run_bpf(p, 3, arch=X86) == ALLOW  # read on x86


# ---------------------------------------------------------------------------- the listener


def test_send_listener_fd(tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    r, w = os.pipe()
    try:
        state = {"ociVersion": "1.3.0", "id": "c1", "status": "creating", "pid": 42, "bundle": "/b"}
        doc = S.process_state(state, 42, "meta")
        S.send_listener_fd(str(path), doc, w)
        conn, _ = srv.accept()
        msg, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 2)
        assert conn.recv(10) == b""  # one state per connection, then closed
        conn.close()
        assert json.loads(msg) == {"ociVersion": "1.3.0", "fds": ["seccompFd"], "pid": 42, "metadata": "meta",
                                   "state": state}
        assert len(fds) == 1
        os.write(fds[0], b"x")  # the very pipe we sent
        assert os.read(r, 1) == b"x"
        os.close(fds[0])
        assert "metadata" not in S.process_state(state, 1, None)
        with pytest.raises(OSError, match="failed to connect with seccomp agent"):
            S.send_listener_fd(str(tmp_path / "none.sock"), doc, w)
    finally:
        os.close(r)
        os.close(w)
        srv.close()


def test_no_ctypes_at_import() -> None:
    """The runtime imports pyrunc.seccomp to check configs: it must stay cheap."""
    import subprocess
    code = "import sys, pyrunc.seccomp; print('ctypes' in sys.modules, 'json' in sys.modules, 're' in sys.modules)"
    out = subprocess.run([sys.executable, "-I", "-S", "-c", f"import sys; sys.path[:0] = {sys.path!r}; {code}"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "False"]
