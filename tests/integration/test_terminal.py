"""Terminals on real ptys: `run -t`-style foreground relays, `exec -t`, and the console socket.

The foreground tests put pyrunc on a pty of their own (pyrunc's controlling terminal, as a
user's shell would) and talk to the container through it; the console-socket tests listen
on an AF_UNIX socket, receive the pty master from pyrunc with SCM_RIGHTS and talk to the
container's shell through that fd alone.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from conftest import FdListener, edit_config, needs_root, new_id

pytestmark = needs_root

PTS_MAJOR = 136  # Unix98 pty peers (devpts)


# ---------------------------------------------------------------------------- helpers


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Terminal:
    """A pty pair; ``read_until`` collects what arrives on the master end."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.seen = b""

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def read_until(self, pattern: str, timeout: float = 20) -> re.Match:
        rx = re.compile(pattern.encode())
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.seen)
            if m:
                self.seen = self.seen[m.end():]
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} not seen; got {self.seen!r}")
            import select
            if select.select([self.master], [], [], min(left, 0.5))[0]:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # EIO: every peer closed
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"{pattern!r} not seen before the terminal closed; got {self.seen!r}")
                self.seen += chunk

    def rest(self, timeout: float = 5) -> bytes:
        """Everything until the terminal closes (or ``timeout``)."""
        import select
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and select.select([self.master], [], [], 0.2)[0]:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                break
            if not chunk:
                break
            self.seen += chunk
        return self.seen


class OnPty(Terminal):
    """pyrunc with a fresh pty as its stdio and controlling terminal (setsid + TIOCSCTTY)."""

    def __init__(self, argv: list[str], rows: int = 24, cols: int = 80) -> None:
        master, slave = os.openpty()
        super().__init__(master)
        set_size(slave, rows, cols)
        self.slave = slave
        self.attrs_before = termios.tcgetattr(slave)
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                                     preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))

    def wait(self, timeout: float = 30) -> int:
        self.rest(1)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def on_pty():
    sessions: list[OnPty] = []

    def start(argv: list[str], **size: int) -> OnPty:
        s = OnPty(argv, **size)
        sessions.append(s)
        return s
    yield start
    for s in sessions:
        s.close()


@pytest.fixture
def listener(tmp_path: Path):
    lst = FdListener(tmp_path / "console.sock")
    yield lst
    lst.close()


def tty_bundle(make_bundle, args: list[str], **edits: object) -> Path:
    bundle = make_bundle(args, terminal=True)
    if edits:
        edit_config(bundle, lambda c: c["process"].update(edits))
    return bundle


# ---------------------------------------------------------------------------- foreground run


def test_run_relays_a_terminal_with_size_and_exit_status(pyrunc, make_bundle, on_pty) -> None:
    bundle = tty_bundle(make_bundle, ["sh", "-c", "tty; stty size; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-tty; "
                                              "exit 7"])
    t = on_pty(pyrunc.argv("run", "-b", str(bundle), new_id()), rows=31, cols=101)
    t.read_until(r"/dev/pts/\d+")
    t.read_until(r"31 101")
    t.read_until(r"all-tty")
    assert t.wait() == 7


def test_interactive_shell_echo_ctrl_c_and_restored_terminal(pyrunc, make_bundle, on_pty) -> None:
    bundle = tty_bundle(make_bundle, ["sh"], env=["PS1=pr$ ", "PATH=/bin"])
    t = on_pty(pyrunc.argv("run", "-b", str(bundle), new_id()))
    t.read_until(r"pr\$ ")
    t.send("echo $((6*7))\r")
    t.read_until(r"echo \$\(\(6\*7\)\)")  # the container's pty echoes what we typed
    t.read_until(r"42")
    t.send("sleep 100; echo not-interrupted\r")
    time.sleep(0.5)
    t.send("\x03")  # ^C: the container's line discipline turns it into SIGINT there
    t.read_until(r"pr\$ ", timeout=10)
    t.send("echo status=$?\r")
    t.read_until(r"status=130")
    assert b"not-interrupted" not in t.seen
    # while it runs, pyrunc has our terminal in raw mode (no echo of its own, no signals from ^C)
    assert not termios.tcgetattr(t.slave)[3] & termios.ECHO
    t.send("exit 3\r")
    assert t.wait() == 3
    assert termios.tcgetattr(t.slave) == t.attrs_before  # pyrunc gave our terminal back as it was


def test_window_size_changes_reach_the_container(pyrunc, make_bundle, on_pty) -> None:
    bundle = tty_bundle(make_bundle, ["sh"], env=["PS1=pr$ ", "PATH=/bin"])
    t = on_pty(pyrunc.argv("run", "-b", str(bundle), new_id()), rows=24, cols=80)
    t.read_until(r"pr\$ ")
    t.send("stty size\r")
    t.read_until(r"\n24 80")
    set_size(t.master, 50, 132)  # the kernel sends SIGWINCH to pyrunc, which resizes the container's pty
    time.sleep(0.3)
    t.send("stty size\r")
    t.read_until(r"\n50 132")
    t.send("exit\r")
    assert t.wait() == 0


def test_dev_console_is_the_containers_pty(pyrunc, make_bundle, on_pty) -> None:
    bundle = tty_bundle(make_bundle, ["sh", "-c", "stat -c 'console=%t:%T' /dev/console; "
                                              "stat -L -c 'tty=%t:%T' /proc/self/fd/0"])
    t = on_pty(pyrunc.argv("run", "-b", str(bundle), new_id()))
    console = t.read_until(r"console=([0-9a-f]+):([0-9a-f]+)")
    tty = t.read_until(r"tty=([0-9a-f]+):([0-9a-f]+)")
    assert t.wait() == 0
    assert console.groups() == tty.groups()
    assert int(console.group(1), 16) == PTS_MAJOR  # a devpts peer, never the host's console (5:1)


def test_terminal_belongs_to_the_process_user(pyrunc, make_bundle, on_pty) -> None:
    bundle = tty_bundle(make_bundle, ["sh", "-c", "stat -L -c 'owner=%u' /proc/self/fd/0; id -u; "
                                              "echo written > $(tty) && echo can-write"],
                        user={"uid": 1000, "gid": 1000})
    t = on_pty(pyrunc.argv("run", "-b", str(bundle), new_id()))
    t.read_until(r"owner=1000")
    t.read_until(r"can-write")
    assert t.wait() == 0


def test_terminal_in_a_user_namespace(pyrunc, make_bundle, on_pty) -> None:
    bundle = make_bundle(["sh", "-c", "tty; stty size; cat /proc/self/uid_map"], terminal=True, userns=(100000, 65536))
    t = on_pty(pyrunc.argv("run", "-b", str(bundle), new_id()), rows=20, cols=70)
    t.read_until(r"/dev/pts/\d+")
    t.read_until(r"20 70")
    t.read_until(r"0\s+100000\s+65536")
    assert t.wait() == 0


# ---------------------------------------------------------------------------- console socket


def test_console_socket_receives_the_master(pyrunc, make_bundle, listener, tmp_path: Path) -> None:
    bundle = tty_bundle(make_bundle, ["sh"], env=["PS1=pr$ ", "PATH=/bin"], consoleSize={"height": 33, "width": 77})
    cid = new_id()
    pyrunc("create", "-b", str(bundle), "--console-socket", str(listener.path), cid)
    master, data = listener.receive()
    try:
        assert data == b"/dev/ptmx"  # what runc sends beside the fd
        assert os.major(os.fstat(master).st_rdev) == 5  # a pty master
        pyrunc("start", cid)
        t = Terminal(master)
        t.read_until(r"pr\$ ")
        t.send("stty size; tty; echo $$\r")
        t.read_until(r"\n33 77")
        t.read_until(r"/dev/pts/\d+")
        t.read_until(r"\n1\r")  # the shell is the container's init
        t.send("exit 4\r")
        deadline = time.monotonic() + 20
        while pyrunc.state(cid)["status"] != "stopped":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.close(master)
    pyrunc("delete", cid)


def test_exec_tty_foreground(pyrunc, make_bundle, on_pty) -> None:
    bundle = make_bundle(["sleep", "300"])
    cid = new_id()
    pyrunc("run", "-d", "-b", str(bundle), cid)
    t = on_pty(pyrunc.argv("exec", "-t", cid, "sh", "-c", "tty; stty size; trap 'echo got-int; exit 9' INT; "
                                                          "echo waiting; sleep 100 & wait"), rows=27, cols=91)
    t.read_until(r"/dev/pts/\d+")
    t.read_until(r"27 91")
    t.read_until(r"waiting")
    t.send("\x03")
    t.read_until(r"got-int")
    assert t.wait() == 9
    assert pyrunc.state(cid)["status"] == "running"


def test_exec_detached_tty_sends_the_master_to_the_console_socket(pyrunc, make_bundle, listener,
                                                                   tmp_path: Path) -> None:
    bundle = make_bundle(["sleep", "300"])
    cid = new_id()
    pyrunc("run", "-d", "-b", str(bundle), cid)
    proc = tmp_path / "proc.json"
    proc.write_text('{"terminal": true, "args": ["sh"], "cwd": "/", "env": ["PS1=ex$ ", "PATH=/bin"],'
                    ' "user": {"uid": 0, "gid": 0}, "consoleSize": {"height": 12, "width": 34}}')
    pid_file = tmp_path / "exec.pid"
    pyrunc("exec", "--process", str(proc), "--detach", "--pid-file", str(pid_file),
           "--console-socket", str(listener.path), cid)
    master, _ = listener.receive()
    try:
        t = Terminal(master)
        t.read_until(r"ex\$ ")
        t.send("stty size; readlink /proc/self/ns/pid\r")
        t.read_until(r"\n12 34")
        pid_ns = t.read_until(r"pid:\[\d+\]").group(0).decode()
        assert pid_ns == os.readlink(f"/proc/{pyrunc.state(cid)['pid']}/ns/pid")
        t.send("exit\r")
        exec_pid = int(pid_file.read_text())
        deadline = time.monotonic() + 20
        while os.path.exists(f"/proc/{exec_pid}") and b"sh" in Path(f"/proc/{exec_pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.close(master)


# ---------------------------------------------------------------------------- runc's rules


@pytest.mark.parametrize("argv,expected", [
    (["create", "-b", "{tty}", "{id}"], "cannot allocate tty if runc will detach without setting console socket"),
    (["run", "-d", "-b", "{tty}", "{id}"], "cannot allocate tty if runc will detach without setting console socket"),
    (["run", "-b", "{tty}", "--console-socket", "{sock}", "{id}"],
     "cannot use console socket if runc will not detach or allocate tty"),
    (["create", "-b", "{plain}", "--console-socket", "{sock}", "{id}"],
     "cannot use console socket if runc will not detach or allocate tty"),
    (["create", "-b", "{tty}", "--console-socket", "{tmp}/missing.sock", "{id}"],
     "dial unix {tmp}/missing.sock: connect: no such file or directory"),
])
def test_terminal_rules_fail_cleanly(pyrunc, make_bundle, listener, tmp_path: Path, argv: list[str],
                                     expected: str) -> None:
    names = {"tty": str(make_bundle(["true"], terminal=True)), "plain": str(make_bundle(["true"])),
             "sock": str(listener.path), "tmp": str(tmp_path), "id": new_id()}
    p = pyrunc(*[a.format(**names) for a in argv], check=False)
    assert p.returncode == 1, p.stderr
    assert expected.format(**names) in p.stderr
    assert pyrunc.ids() == []


def test_exec_terminal_rules(pyrunc, make_bundle, listener) -> None:
    bundle = make_bundle(["sleep", "300"])
    cid = new_id()
    pyrunc("run", "-d", "-b", str(bundle), cid)
    pid = pyrunc.state(cid)["pid"]
    for flags, expected in (
            (["-d", "-t"], "cannot allocate tty if runc will detach without setting console socket"),
            (["-t", "--console-socket", str(listener.path)], "cannot use console socket if runc will not detach"),
            (["-d", "--console-socket", str(listener.path)], "cannot use console socket if runc will not detach")):
        p = pyrunc("exec", *flags, cid, "true", check=False)
        assert p.returncode == 255 and expected in p.stderr, (flags, p.stderr)
    tasks = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert tasks == [], "a refused exec left a process in the container"


def test_dev_console_symlink_is_refused(pyrunc, make_bundle, listener, tmp_path: Path) -> None:
    """CVE-2025-52565's class: /dev/console must not lead the pty's bind mount anywhere else.
    The container's /dev is a host directory here (bound by the config), holding a
    /dev/console that points at a procfs file."""
    devdir = tmp_path / "dev"
    for mount_point in ("pts", "shm", "mqueue"):  # the config's mounts below /dev
        (devdir / mount_point).mkdir(parents=True)
    os.symlink("pts/ptmx", devdir / "ptmx")
    os.symlink("/proc/sys/kernel/core_pattern", devdir / "console")
    before = sorted((p.name, os.lstat(p).st_mtime_ns) for p in devdir.iterdir())
    pattern = Path("/proc/sys/kernel/core_pattern").read_text()
    bundle = make_bundle(["true"], terminal=True)

    def use_host_dir_as_dev(c: dict) -> None:
        for m in c["mounts"]:
            if m["destination"] == "/dev":
                m.update(type="bind", source=str(devdir), options=["rbind", "nosuid"])
        c["linux"]["maskedPaths"] = []
    edit_config(bundle, use_host_dir_as_dev)
    p = pyrunc("create", "-b", str(bundle), "--console-socket", str(listener.path), new_id(), check=False)
    assert p.returncode == 1 and "/dev/console in the container is a symlink" in p.stderr, p.stderr
    assert pyrunc.ids() == []
    assert sorted((p.name, os.lstat(p).st_mtime_ns) for p in devdir.iterdir()) == before
    assert Path("/proc/sys/kernel/core_pattern").read_text() == pattern
    with open("/proc/self/mountinfo") as f:
        assert str(devdir) not in f.read()


# ---------------------------------------------------------------------------- no terminal


def test_without_a_terminal_create_hands_its_pipes_to_the_container(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["tr", "a-z", "A-Z"])
    cid = new_id()
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        p = subprocess.run(pyrunc.argv("create", "-b", str(bundle), cid), stdin=in_r, stdout=out_w,
                           stderr=subprocess.DEVNULL, timeout=60)
        assert p.returncode == 0
        os.close(in_r)
        os.close(out_w)
        in_r = out_w = -1
        pyrunc("start", cid)
        os.write(in_w, b"piped through\n")
        os.close(in_w)
        in_w = -1
        with os.fdopen(out_r, "rb") as out:
            out_r = -1
            assert out.read() == b"PIPED THROUGH\n"  # EOF: the container held the only write end
    finally:
        for fd in (in_r, in_w, out_r, out_w):
            if fd >= 0:
                os.close(fd)
    pyrunc("delete", "--force", cid)


def test_foreground_relay_keeps_output_flowing_while_input_waits(pyrunc, make_bundle, tmp_path: Path) -> None:
    """More input than the pty takes, for a process that never reads it: pyrunc must not block
    writing it, and the process's output and exit status still come through."""
    bundle = tty_bundle(make_bundle, ["sh", "-c", "stty -echo; sleep 1; echo done-without-reading; exit 3"])
    data = tmp_path / "input"
    data.write_bytes((b"x" * 1023 + b"\n") * 1024)  # 1 MiB: far more than the pty buffers
    out = tmp_path / "out"
    with open(data, "rb") as stdin, open(out, "wb") as stdout:
        p = subprocess.run(pyrunc.argv("run", "-b", str(bundle), new_id()), stdin=stdin, stdout=stdout,
                           stderr=subprocess.STDOUT, timeout=60)
    assert p.returncode == 3, out.read_bytes()[-500:]
    assert b"done-without-reading" in out.read_bytes()
