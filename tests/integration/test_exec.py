"""`pyrunc exec` without terminals, on real containers (terminals: test_terminal.py).

Each test looks at what the exec'd process reports (its output, its exit status) and at what
the host sees of it (/proc/PID/{status,ns,cgroup} of the exec'd process against the init's).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import FdListener, edit_config, needs_root, new_id, proc_cgroups, proc_status

pytestmark = needs_root


# ---------------------------------------------------------------------------- helpers


class Box:
    """A running container (``sleep 300``) to exec into; deleted (with whatever was exec'd in it)
    by the ``pyrunc`` fixture, or explicitly."""

    def __init__(self, pyrunc, make_bundle, edit=None, create_flags=(), **options) -> None:  # type: ignore[no-untyped-def]
        self.pyrunc = pyrunc
        self.bundle = make_bundle(["sleep", "300"], **options)
        if edit is not None:
            edit_config(self.bundle, edit)
        self.id = new_id()
        pyrunc("run", "-d", *create_flags, "-b", str(self.bundle), self.id)
        self.pid = pyrunc.state(self.id)["pid"]

    def detached(self, *flags: str, cmd: tuple[str, ...] = ("sleep", "300")) -> int:
        """exec -d with a pid file; the exec'd process's host pid."""
        pid_file = self.bundle / f"exec-{time.monotonic_ns()}.pid"
        self.pyrunc("exec", "-d", "--pid-file", str(pid_file), *flags, self.id, *cmd)
        return int(pid_file.read_text())


def cap_mask(names) -> int:  # type: ignore[no-untyped-def]
    from pyrunc.config import CAPABILITIES
    return sum(1 << CAPABILITIES.index(n) for n in names)


def cgroup_pids(pyrunc, cid: str) -> list[int]:  # type: ignore[no-untyped-def]
    return json.loads(pyrunc("ps", "--format", "json", cid).stdout) or []


def wait_gone(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and \
            Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX":
        assert time.monotonic() < deadline, f"process {pid} still alive"
        time.sleep(0.02)


# ---------------------------------------------------------------------------- tests


def test_output_and_exit_status(pyrunc, make_bundle) -> None:
    box = Box(pyrunc, make_bundle)
    p = pyrunc("exec", box.id, "sh", "-c", "echo out; echo err >&2; exit 7", check=False)
    assert (p.returncode, p.stdout, p.stderr) == (7, "out\n", "err\n")
    p = pyrunc("exec", box.id, "sh", "-c", "kill -9 $$", check=False)
    assert p.returncode == 128 + 9
    # flags stop at the id: what follows belongs to the command
    p = pyrunc("exec", box.id, "printf", "%s,", "-e", "--cwd", "x")
    assert p.stdout == "-e,--cwd,x,"
    # the container is untouched and still running, with only its init left
    assert pyrunc.state(box.id)["status"] == "running"
    assert cgroup_pids(pyrunc, box.id) == [box.pid]


def test_the_process_runs_in_the_pid_namespace_and_sees_the_containers_root(pyrunc, make_bundle) -> None:
    box = Box(pyrunc, make_bundle, hostname="exec-h1")
    out = pyrunc("exec", box.id, "sh", "-c", "hostname; echo $$; tr '\\0' ' ' < /proc/1/cmdline; echo; "
                 "ls -1 /").stdout.splitlines()
    assert out[0] == "exec-h1"
    assert 1 < int(out[1]) < 100  # a pid of the container's namespace, not the host's
    assert out[2] == "sleep 300 "
    rootfs = json.loads((box.bundle / "config.json").read_text())["root"]["path"]
    assert set(out[3:]) == set(os.listdir(rootfs))  # the container's root, not the host's


def test_env_user_groups_cwd_and_umask(pyrunc, make_bundle) -> None:
    box = Box(pyrunc, make_bundle, env=["FROM_CONFIG=1", "OVERRIDDEN=old"])
    p = pyrunc("exec", "-e", "NEW=x y", "--env=OVERRIDDEN=new", "-u", "1000:1001", "-g", "5", "--additional-gids", "7",
               "--cwd", "/tmp", box.id, "sh", "-c", 'echo "$FROM_CONFIG|$OVERRIDDEN|$NEW"; id -u; id -g; id -G; pwd; umask')
    assert p.stdout.splitlines() == ["1|new|x y", "1000", "1001", "1001 5 7", "/tmp", "0022"]
    # only the uid given: the config's gid stays
    assert pyrunc("exec", "--user", "1000", box.id, "id", "-g").stdout == "0\n"
    # outside: the host sees the same ids on the running process
    pid = box.detached("-u", "1000:1001", "-g", "5")
    st = proc_status(pid)
    assert st["Uid"].split() == ["1000"] * 4 and st["Gid"].split() == ["1001"] * 4
    assert st["Groups"].split() == ["5"]
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    p = pyrunc("exec", "-u", "nobody", box.id, "true", check=False)
    assert p.returncode == 255 and "parsing nobody as int for uid failed" in p.stderr


def test_capabilities_rlimits_and_no_new_privs(pyrunc, make_bundle) -> None:
    box = Box(pyrunc, make_bundle, edit=lambda c: c["process"].update(noNewPrivileges=False))
    caps = json.loads((box.bundle / "config.json").read_text())["process"]["capabilities"]
    base = cap_mask(caps["effective"])
    assert "CAP_SYS_ADMIN" not in caps["bounding"]

    pid = box.detached()
    st = proc_status(pid)
    assert int(st["CapEff"], 16) == base and int(st["CapPrm"], 16) == base
    assert int(st["CapBnd"], 16) == cap_mask(caps["bounding"])
    assert int(st["CapAmb"], 16) == 0 and int(st["CapInh"], 16) == 0
    assert st["NoNewPrivs"] == "0"
    assert "Max open files            1024                 1024" in Path(f"/proc/{pid}/limits").read_text()

    pid = box.detached("--cap", "CAP_SYS_ADMIN", "-c", "CAP_SYS_PTRACE", "--no-new-privs")
    st = proc_status(pid)
    added = cap_mask(["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"])
    for kind in ("CapEff", "CapPrm", "CapBnd"):
        assert int(st[kind], 16) == base | added, kind
    assert int(st["CapInh"], 16) == added and int(st["CapAmb"], 16) == added
    assert st["NoNewPrivs"] == "1"
    # inside: the process reports the same
    out = pyrunc("exec", "--cap", "CAP_SYS_ADMIN", box.id, "grep", "CapAmb", "/proc/self/status").stdout
    assert int(out.split()[1], 16) == cap_mask(["CAP_SYS_ADMIN"])
    p = pyrunc("exec", "--cap", "CAP_NOPE", box.id, "true", check=False)
    assert p.returncode == 255 and 'unknown capability "CAP_NOPE"' in p.stderr.replace('\\"', '"')


def test_joins_every_namespace_and_the_cgroup(pyrunc, make_bundle) -> None:
    box = Box(pyrunc, make_bundle, userns=True)
    pid = box.detached()
    for ns in ("pid", "net", "ipc", "uts", "mnt", "cgroup", "user"):
        init_ns = os.readlink(f"/proc/{box.pid}/ns/{ns}")
        assert os.readlink(f"/proc/{pid}/ns/{ns}") == init_ns, ns
        assert init_ns != os.readlink(f"/proc/self/ns/{ns}"), ns
    assert os.readlink(f"/proc/{pid}/ns/pid_for_children") == os.readlink(f"/proc/{box.pid}/ns/pid")
    assert proc_cgroups(pid) == proc_cgroups(box.pid)
    assert cgroup_pids(pyrunc, box.id) == sorted([box.pid, pid])
    # the root is the container's: same root directory as the init, not the host's
    assert os.stat(f"/proc/{pid}/root/").st_ino == os.stat(f"/proc/{box.pid}/root/").st_ino
    assert not os.path.samestat(os.stat(f"/proc/{pid}/root/"), os.stat("/"))
    # inside: in the user namespace the process is root; the pid namespace's pid of the init is 1
    out = pyrunc("exec", box.id, "sh", "-c", "id -u; cat /proc/self/uid_map; readlink /proc/1/ns/pid").stdout
    uid, uid_map, pidns = out.splitlines()
    assert uid == "0" and uid_map.split()[:2] == ["0", str(proc_status(box.pid)["Uid"].split()[0])]
    assert pidns == os.readlink(f"/proc/{box.pid}/ns/pid")
    box_delete(pyrunc, box.id)
    wait_gone(pid)


def box_delete(pyrunc, cid: str) -> None:  # type: ignore[no-untyped-def]
    pyrunc("delete", "--force", cid)
    assert cid not in pyrunc.ids()


def test_process_json_file(pyrunc, make_bundle, tmp_path: Path) -> None:
    box = Box(pyrunc, make_bundle)
    doc = {"args": ["sh", "-c", 'echo "$ONLY"; id -u; id -G; pwd'], "cwd": "/etc",
           "env": ["ONLY=from-file"], "user": {"uid": 1234, "gid": 99, "additionalGids": [3]}}
    f = tmp_path / "process.json"
    f.write_text(json.dumps(doc))
    # --process ignores the command line's command and the config's process
    p = pyrunc("exec", "--process", str(f), box.id)
    assert p.stdout.splitlines() == ["from-file", "1234", "99 3", "/etc"]
    pid_file = tmp_path / "p.pid"
    doc["args"] = ["sleep", "300"]
    # not root: only ambient capabilities survive the exec (as under runc)
    doc["capabilities"] = {k: ["CAP_KILL"] for k in ("bounding", "effective", "permitted", "inheritable", "ambient")}
    f.write_text(json.dumps(doc))
    pyrunc("exec", "-p", str(f), "-d", "--pid-file", str(pid_file), box.id)
    st = proc_status(int(pid_file.read_text()))
    assert st["Uid"].split()[0] == "1234" and int(st["CapEff"], 16) == cap_mask(["CAP_KILL"])
    assert int(st["CapBnd"], 16) == cap_mask(["CAP_KILL"])

    # schema errors name the JSON path, and nothing runs
    f.write_text(json.dumps({"args": ["true"], "cwd": "/", "user": {"uid": "root", "gid": 0}}))
    before = cgroup_pids(pyrunc, box.id)
    p = pyrunc("exec", "--process", str(f), box.id, check=False)
    assert p.returncode == 255 and "process.user.uid" in p.stderr and str(f) in p.stderr
    f.write_text(json.dumps({"args": [], "cwd": "relative"}))
    p = pyrunc("exec", "--process", str(f), box.id, check=False)
    err = p.stderr.replace('\\"', '"')
    assert p.returncode == 255 and 'process.cwd: "relative" does not match' in err
    assert 'process.args: [] should be non-empty' in err
    f.write_text(json.dumps({"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "terminal": True}))
    p = pyrunc("exec", "--detach", "--process", str(f), box.id, check=False)
    assert p.returncode == 255 and "cannot allocate tty if runc will detach without setting console socket" in p.stderr
    assert cgroup_pids(pyrunc, box.id) == before


def test_detached_exec_writes_the_pid_file_and_returns(pyrunc, make_bundle, tmp_path: Path) -> None:
    box = Box(pyrunc, make_bundle)
    pid_file = tmp_path / "sub" / ".." / "exec.pid"
    (tmp_path / "sub").mkdir()
    t0 = time.monotonic()
    pyrunc("exec", "--detach", "--pid-file", str(pid_file), box.id, "sleep", "300")
    assert time.monotonic() - t0 < 10
    pid = int(pid_file.read_text())
    assert Path(f"/proc/{pid}/cmdline").read_text() == "sleep\x00300\x00"
    assert pid in cgroup_pids(pyrunc, box.id)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") or "tmp" in p.name]
    # the foreground exec writes it too (runc does)
    pyrunc("exec", "--pid-file", str(tmp_path / "fg.pid"), box.id, "true")
    assert int((tmp_path / "fg.pid").read_text()) > 1
    box_delete(pyrunc, box.id)  # delete takes the exec'd processes with it
    wait_gone(pid)


def test_executable_not_found(pyrunc, make_bundle) -> None:
    box = Box(pyrunc, make_bundle)
    for cmd, message in ((["no-such-binary"], 'exec: "no-such-binary": executable file not found in $PATH'),
                         (["/etc"], 'exec: "/etc": is a directory'),
                         (["/nope/x"], 'exec: "/nope/x": stat /nope/x: no such file or directory')):
        p = pyrunc("exec", box.id, *cmd, check=False)
        assert p.returncode == 255, p
        assert message in p.stderr.replace('\\"', '"')
    p = pyrunc("exec", "--cwd", "/no/such/dir", box.id, "true", check=False)
    assert p.returncode == 255 and "/no/such/dir" in p.stderr
    p = pyrunc("exec", box.id, check=False)
    assert p.returncode == 255 and "process args cannot be empty" in p.stderr
    assert cgroup_pids(pyrunc, box.id) == [box.pid]


def test_exec_into_a_stopped_or_missing_container(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["true"])
    cid = new_id()
    pyrunc("run", "-d", "-b", str(bundle), cid)
    deadline = time.monotonic() + 10
    while pyrunc.state(cid)["status"] != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    p = pyrunc("exec", cid, "true", check=False)
    assert p.returncode == 255 and "cannot exec in a stopped container" in p.stderr
    pyrunc("delete", cid)
    p = pyrunc("exec", cid, "true", check=False)
    assert p.returncode == 255 and "container does not exist" in p.stderr


def test_exec_into_a_paused_container(pyrunc, make_bundle) -> None:
    box = Box(pyrunc, make_bundle)
    pyrunc("pause", box.id)
    p = pyrunc("exec", box.id, "true", check=False)
    assert p.returncode == 255
    assert "cannot exec in a paused container (use --ignore-paused to override)" in p.stderr
    assert cgroup_pids(pyrunc, box.id) == [box.pid]
    # --ignore-paused: the process joins the frozen cgroup and runs once the container resumes
    with open(box.bundle / "ignored.out", "w") as out:
        late = subprocess.Popen(pyrunc.argv("exec", "--ignore-paused", box.id, "echo", "thawed"),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)
        assert late.poll() is None
        pyrunc("resume", box.id)
        assert late.wait(timeout=20) == 0
    finally:
        if late.poll() is None:
            late.kill()
            late.wait()
    assert (box.bundle / "ignored.out").read_text() == "thawed\n"


def test_signals_are_forwarded_to_the_foreground_process(pyrunc, make_bundle) -> None:
    box = Box(pyrunc, make_bundle)
    out = box.bundle / "trap.out"
    with open(out, "w") as f:
        fg = subprocess.Popen(pyrunc.argv("exec", box.id, "sh", "-c", "trap 'echo got-term; exit 42' TERM; "
                                          "echo ready; while true; do sleep 0.05; done"),
                              stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while "ready" not in out.read_text():
            assert time.monotonic() < deadline and fg.poll() is None, out.read_text()
            time.sleep(0.02)
        fg.send_signal(signal.SIGTERM)
        assert fg.wait(timeout=10) == 42
    finally:
        if fg.poll() is None:
            fg.kill()
            fg.wait()
    assert out.read_text() == "ready\ngot-term\n"


# ---------------------------------------------------------------------------- sockets, sub-cgroups, keyring


def pidfd_target(fd: int) -> int:
    """The pid a pidfd refers to, from /proc/self/fdinfo."""
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("Pid:"):
            return int(line.split()[1])
    raise AssertionError("not a pidfd")


def test_pidfd_socket_on_create_and_exec(pyrunc, make_bundle, tmp_path: Path) -> None:
    listener = FdListener(tmp_path / "pidfd.sock")
    bundle = make_bundle(["sleep", "300"])
    cid = new_id()
    pyrunc("create", "-b", str(bundle), "--pidfd-socket", str(listener.path), cid)
    fd, name = listener.receive()
    try:
        assert name == b"standard" and pidfd_target(fd) == pyrunc.state(cid)["pid"]
    finally:
        os.close(fd)
    pyrunc("start", cid)
    pid_file = tmp_path / "exec.pid"
    pyrunc("exec", "-d", "--pid-file", str(pid_file), "--pidfd-socket", str(listener.path), cid, "sleep", "300")
    fd, name = listener.receive()
    try:
        exec_pid = int(pid_file.read_text())
        assert name == b"setns" and pidfd_target(fd) == exec_pid
        signal.pidfd_send_signal(fd, signal.SIGKILL)  # the pidfd really is the process's
        wait_gone(exec_pid)
    finally:
        os.close(fd)
    assert pyrunc.state(cid)["status"] == "running"
    p = pyrunc("exec", "--pidfd-socket", str(tmp_path / "none.sock"), cid, "true", check=False)
    assert p.returncode == 255 and f"failed to dail {tmp_path}/none.sock" in p.stderr
    assert cgroup_pids(pyrunc, cid) == [pyrunc.state(cid)["pid"]]


def container_cgroup_dirs(pyrunc, cid: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    from pyrunc import Runtime
    mgr = Runtime(root=str(pyrunc.root)).get(cid).cgroup_manager()
    return dict(mgr.paths) if hasattr(mgr, "paths") else {"": mgr.dir}


@pytest.mark.cgroup2
def test_exec_into_sub_cgroups(pyrunc, make_bundle) -> None:
    box = Box(pyrunc, make_bundle)
    dirs = container_cgroup_dirs(pyrunc, box.id)
    for d in set(dirs.values()):
        os.mkdir(os.path.join(d, "sub"))
        if d == dirs.get("cpuset"):  # a v1 cpuset takes no task until these are set
            for name in ("cpuset.cpus", "cpuset.mems"):
                Path(d, "sub", name).write_text(Path(d, name).read_text())
    init_cgroups = proc_cgroups(box.pid)
    pid = box.detached("--cgroup", "sub")
    got = proc_cgroups(pid)
    assert got and all(path == init_cgroups[key].rstrip("/") + "/sub" for key, path in got.items()), (got, init_cgroups)
    if "memory" in dirs:  # v1 controllers can be given one by one
        pid = box.detached("--cgroup", "memory:sub")
        got = proc_cgroups(pid)
        for key, path in got.items():
            want = init_cgroups[key].rstrip("/") + "/sub" if "memory" in key.split(",") else init_cgroups[key]
            assert path == want, (key, got)
    before = cgroup_pids(pyrunc, box.id)
    for flags, message in ((["--cgroup", "nosuch"], "No such file or directory"),
                           (["--cgroup", "../../escape"], "bad sub cgroup path: ../../escape"),
                           (["--cgroup", "a:x", "--cgroup", "a:y"], "controller a specified multiple times"),
                           (["--cgroup", "x", "--cgroup", "y"], "(missing <controller>: prefix)")):
        p = pyrunc("exec", *flags, box.id, "true", check=False)
        assert p.returncode == 255 and message in p.stderr, (flags, p.stderr)
    assert cgroup_pids(pyrunc, box.id) == before


def test_exec_joins_the_containers_session_keyring(pyrunc, make_bundle) -> None:
    def unmask_keys(c: dict) -> None:
        c["linux"]["maskedPaths"] = [m for m in c["linux"]["maskedPaths"] if m != "/proc/keys"]
    box = Box(pyrunc, make_bundle, edit=unmask_keys)
    keys = pyrunc("exec", box.id, "cat", "/proc/keys").stdout
    assert f"_ses.{box.id}:" in keys, keys
    plain = Box(pyrunc, make_bundle, edit=unmask_keys, create_flags=("--no-new-keyring",))
    keys = pyrunc("exec", plain.id, "cat", "/proc/keys").stdout
    assert f"_ses.{plain.id}" not in keys
