"""The cgroup v2 device filter (pyrunc.cgroups.ebpf) against the real kernel (root only).

BPF_CGROUP_DEVICE programs attach to any cgroup2 directory, so these run on the host's
own cgroup2 mount: /sys/fs/cgroup on a pure v2 host, /sys/fs/cgroup/unified on a hybrid
one (where the kernel runs the program before the v1 devices controller).  Each test
works in its own ``<TEST_PREFIX>ebpf-<random>`` child of the mount root, moves forked
children into it and removes it at the end; the programs are not pinned and go with
the cgroup.  Marked ``cgroup2``, so ``test_cgroup2_vm.py`` also runs them in cgroup2-vm
(a pure v2 guest with an older kernel); there the container test at the end goes
through V2Manager end to end:

    cd /work/main && /work/shared/tools/cgroup2-vm .venv/bin/python -m pytest -q tests/integration/test_cgroups_ebpf.py
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import TEST_PREFIX, edit_config, needs_root, new_id
from pyrunc.cgroups import detect_layout, ebpf
from pyrunc.cgroups.resources import DeviceState, device_target
from pyrunc.cgroups.v2 import V2Manager
from pyrunc.config import DeviceRule, Linux, Resources, device_cgroup_rules

pytestmark = [needs_root, pytest.mark.cgroup2]
LAYOUT = detect_layout()
EPERM = errno.EPERM


def cgroup2_mount() -> str | None:
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[0] == "cgroup2":
                found.append(left.split()[4])
    for preferred in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if preferred in found:
            return preferred
    return found[0] if found else None


MOUNT = cgroup2_mount()


def _kill_and_rmdir(path: str) -> None:
    for _ in range(200):
        try:
            with open(f"{path}/cgroup.procs") as f:
                for pid in f.read().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        except FileNotFoundError:
            return
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                raise
            time.sleep(0.02)
    raise AssertionError(f"cannot remove {path}")


@pytest.fixture
def cg():
    """A fresh child of the cgroup2 mount root, removed afterwards whatever happens."""
    if MOUNT is None:
        pytest.skip("no cgroup2 filesystem is mounted")
    path = f"{MOUNT}/{TEST_PREFIX}ebpf-{uuid.uuid4().hex[:12]}"
    os.mkdir(path)
    try:
        yield path
    finally:
        _kill_and_rmdir(path)


@pytest.fixture
def scratch():
    """A temp dir on a filesystem that allows device nodes (not nodev) for mknod."""
    d = tempfile.mkdtemp(prefix="pyrunc-ebpf-")
    try:
        yield d
    finally:
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
        os.rmdir(d)


def probe(cgroup: str, actions: list[tuple]) -> list[int]:
    """Fork a child, move it into ``cgroup``, run ``actions`` there; one errno (0 = fine) each.

    ("open", path, flags) opens and closes; ("mknod", path, "c"|"b", major, minor) makes a
    node (mode 0600).  The child runs as root with every capability: only the device
    filter can refuse.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            os.close(r)
            with open(f"{cgroup}/cgroup.procs", "w") as f:
                f.write("0")
            results = []
            for action in actions:
                try:
                    if action[0] == "open":
                        os.close(os.open(action[1], action[2] | os.O_CLOEXEC))
                    elif action[0] == "mknod":
                        kind = stat.S_IFCHR if action[2] == "c" else stat.S_IFBLK
                        os.mknod(action[1], kind | 0o600, os.makedev(action[3], action[4]))
                    else:
                        raise ValueError(action)
                    results.append(0)
                except OSError as e:
                    results.append(e.errno)
            os.write(w, json.dumps(results).encode())
        except BaseException as e:  # noqa: BLE001 - report anything to the parent
            os.write(w, json.dumps(repr(e)).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    out = json.loads(data)
    assert os.waitstatus_to_exitcode(status) == 0 and isinstance(out, list), out
    return out


def attached(cgroup: str) -> list[tuple[int, bytes]]:
    """(id, name) of the device programs attached to the cgroup itself."""
    fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        out = []
        for prog_id in ebpf.query(fd):
            pfd = ebpf.prog_fd_by_id(prog_id)
            try:
                out.append((prog_id, ebpf.prog_name(pfd)))
            finally:
                os.close(pfd)
        return out
    finally:
        os.close(fd)


def rules_state(*rules: DeviceRule) -> DeviceState:
    return device_target(list(rules))


R, W, RW = os.O_RDONLY, os.O_WRONLY, os.O_RDWR


# ---------------------------------------------------------------------------- the filter


def test_filter_denies_null_allows_zero_and_mknod(cg, scratch):
    null2, zero2 = f"{scratch}/null2", f"{scratch}/zero2"
    checks = [("open", "/dev/null", R), ("open", "/dev/zero", R),
              ("mknod", null2, "c", 1, 3), ("mknod", zero2, "c", 1, 5), ("open", zero2, RW)]
    # control: the same child in the same cgroup, no filter yet
    assert probe(cg, checks[:2] + [("mknod", f"{scratch}/ctl", "c", 1, 3)]) == [0, 0, 0]
    ebpf.set_device_filter(cg, rules_state(DeviceRule(False), DeviceRule(True, "c", 1, 5, "rwm")))
    assert [name for _, name in attached(cg)] == [ebpf.PROG_NAME]
    assert probe(cg, checks) == [EPERM, 0, EPERM, 0, 0]
    assert not os.path.exists(null2)
    # only the cgroup's members are filtered
    os.close(os.open("/dev/null", os.O_RDONLY))


def test_allowances_need_all_bits_and_denials_any(cg):
    ebpf.set_device_filter(cg, rules_state(DeviceRule(False), DeviceRule(True, "c", 1, 3, "r")))
    assert probe(cg, [("open", "/dev/null", R), ("open", "/dev/null", W), ("open", "/dev/null", RW)]) \
        == [0, EPERM, EPERM]
    # allow-by-default with "c 1:3 w" denied: O_RDWR asks for w too, so it is refused (as on
    # cgroup v1; runc's filter would let it through)
    ebpf.set_device_filter(cg, rules_state(DeviceRule(True), DeviceRule(False, "c", 1, 3, "w")))
    assert probe(cg, [("open", "/dev/null", R), ("open", "/dev/null", W), ("open", "/dev/null", RW),
                      ("open", "/dev/zero", RW)]) == [0, EPERM, EPERM, 0]


def test_update_attaches_first_then_detaches_only_our_old_program(cg, monkeypatch):
    ebpf.set_device_filter(cg, rules_state(DeviceRule(False), DeviceRule(True, "c", 1, 5, "rwm")))
    [(first, _)] = attached(cg)
    # somebody else's (allow-all) program on the same cgroup
    monkeypatch.setattr(ebpf, "PROG_NAME", b"foreign")
    foreign_fd = ebpf.load([(ebpf.OP_MOV32_IMM, 0, 0, 0, 1), (ebpf.OP_EXIT, 0, 0, 0, 0)])
    dir_fd = os.open(cg, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ebpf.attach(dir_fd, foreign_fd)
    finally:
        os.close(dir_fd)
        os.close(foreign_fd)
    monkeypatch.undo()
    ebpf.set_device_filter(cg, rules_state(DeviceRule(False), DeviceRule(True, "c", 1, 3, "rwm")))
    progs = attached(cg)
    assert sorted(name for _, name in progs) == [b"foreign", ebpf.PROG_NAME]
    assert first not in [i for i, _ in progs]
    assert probe(cg, [("open", "/dev/null", R), ("open", "/dev/zero", R)]) == [0, EPERM]
    # allow-all needs no program: ours goes, the foreign one stays
    ebpf.set_device_filter(cg, DeviceState())
    assert [name for _, name in attached(cg)] == [b"foreign"]
    assert probe(cg, [("open", "/dev/null", R), ("open", "/dev/zero", R)]) == [0, 0]


def test_load_failure_carries_the_verifier_log():
    with pytest.raises(OSError) as info:
        ebpf.load([(ebpf.OP_EXIT, 0, 0, 0, 0)])  # returns r0 without setting it
    assert info.value.errno == errno.EACCES
    assert "verifier log" in str(info.value) and "R0 !read_ok" in str(info.value)


def test_programs_go_with_the_cgroup():
    if MOUNT is None:
        pytest.skip("no cgroup2 filesystem is mounted")
    path = f"{MOUNT}/{TEST_PREFIX}ebpf-{uuid.uuid4().hex[:12]}"
    os.mkdir(path)
    try:
        ebpf.set_device_filter(path, rules_state(DeviceRule(False)))
        [(prog_id, _)] = attached(path)
    finally:
        _kill_and_rmdir(path)
    deadline = time.monotonic() + 20  # the kernel frees cgroup programs from a workqueue
    while True:
        try:
            os.close(ebpf.prog_fd_by_id(prog_id))
        except FileNotFoundError:
            break
        assert time.monotonic() < deadline, f"program {prog_id} outlived its cgroup"
        time.sleep(0.05)


# ---------------------------------------------------------------------------- V2Manager


def test_v2_manager_applies_the_container_rules(cg, scratch):
    """What pyrunc's container layer sends: deny all, then runc's allowed devices."""
    rules = device_cgroup_rules(Linux(resources=Resources(devices=[DeviceRule(False, access="rwm")])))
    mgr = V2Manager(cg, MOUNT)  # not create(): never write the host's subtree_control
    mgr.apply(Resources(devices=rules))
    kmsg = f"{scratch}/kmsg"
    checks = [("open", "/dev/null", RW), ("open", "/dev/zero", R), ("open", "/dev/full", W),
              ("open", "/dev/urandom", R), ("open", "/dev/ptmx", RW),
              ("mknod", kmsg, "c", 1, 11), ("open", kmsg, W),        # mknod any char device: yes; use: no
              ("mknod", f"{scratch}/sda", "b", 8, 0)]
    assert probe(cg, checks) == [0, 0, 0, 0, 0, 0, EPERM, 0]
    assert len(attached(cg)) == 1
    mgr.apply(Resources(devices=rules + [DeviceRule(True, "c", 1, 11, "w")]))  # update
    assert len(attached(cg)) == 1
    assert probe(cg, [("open", kmsg, W), ("open", kmsg, RW)]) == [0, EPERM]
    mgr.apply(Resources())  # no device rules: the filter stays
    assert len(attached(cg)) == 1


def test_v2_manager_skip_devices(cg):
    V2Manager(cg, MOUNT, skip_devices=True).apply(Resources(devices=[DeviceRule(False)]))
    assert attached(cg) == []
    assert probe(cg, [("open", "/dev/null", R)]) == [0]


# ---------------------------------------------------------------------------- a container


def test_container_gets_the_default_device_policy(pyrunc, make_bundle):
    """End to end with the config engines send (deny all first).  On cgroup v2 this is the
    eBPF filter (it used to be refused); on a hybrid host, the v1 devices controller."""
    script = ("echo x > /dev/null && echo null-ok; "
              "mknod /dev/k c 1 11 && echo mknod-ok; "
              "(: > /dev/k) 2>&1 && echo kmsg-ok; true")  # opens for writing, writes nothing
    bundle = make_bundle(["sh", "-c", script])
    p = pyrunc("run", "-b", str(bundle), new_id(), check=False)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[:2] == ["null-ok", "mknod-ok"], p.stdout
    assert len(lines) == 3 and "Operation not permitted" in lines[2], p.stdout
    # a config rule opens it
    edit_config(bundle, lambda c: c["linux"]["resources"]["devices"].append(
        {"allow": True, "type": "c", "major": 1, "minor": 11, "access": "w"}))
    p = pyrunc("run", "-b", str(bundle), new_id(), check=False)
    assert p.stdout.splitlines() == ["null-ok", "mknod-ok", "kmsg-ok"], (p.stdout, p.stderr)


@pytest.mark.skipif(LAYOUT != "v2", reason="the device program is checked on pure cgroup v2 only")
def test_container_cgroup_holds_one_device_program(pyrunc, make_bundle):
    bundle = make_bundle(["sleep", "100"])
    cid = new_id()
    pyrunc("create", "-b", str(bundle), cid)
    try:
        pid = pyrunc.state(cid)["pid"]
        rel = [line.split(":", 2)[2] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
               if line.startswith("0::")][0]
        assert [name for _, name in attached(f"{MOUNT}{rel}")] == [ebpf.PROG_NAME]
    finally:
        pyrunc("delete", "--force", cid)
