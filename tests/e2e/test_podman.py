"""podman (with conmon) driving pyrunc: containers.conf names pyrunc as the default runtime.

Podman passes no --root, so pyrunc's default root /run/pyrunc is used; the fixture checks that
every container it made is gone from there, from the cgroups and from the mount table.
"""

from __future__ import annotations

import concurrent.futures
import os
import pty
import select
import subprocess
import time

import pytest

IMAGE = "localhost/busybox:e2e"
pytestmark = pytest.mark.usefixtures("podman")


def run(podman, *args: str, check: bool = True, **kw):  # type: ignore[no-untyped-def]
    """`podman run --rm --network none IMAGE ...` with the flags before IMAGE split at "--"."""
    flags, cmd = (list(args[: args.index("--")]), list(args[args.index("--") + 1:])) if "--" in args \
        else ([], list(args))
    return podman("run", "--rm", "--network", "none", *flags, IMAGE, *cmd, check=check, **kw)


def cgroup_file(ctrl: str, name: str) -> str:
    """Shell words that print the container's own v1 cgroup file (the runtime mounts its own cgroup
    there, with or without a cgroup namespace)."""
    return f"cat /sys/fs/cgroup/{ctrl}/{name}"


def test_output_and_exit_code(podman):
    p = run(podman, "sh", "-c", "echo hello; echo oops >&2; exit 7", check=False)
    assert p.returncode == 7, p.stderr
    assert p.stdout == "hello\n"
    assert "oops" in p.stderr


def test_pyrunc_is_the_runtime(podman):
    """containers.conf makes pyrunc the default; podman passes no --root, so /run/pyrunc is used."""
    assert podman("info", "-f", "{{.Host.OCIRuntime.Name}}").stdout.strip() == "pyrunc"
    cid = podman("run", "-d", "--network", "none", IMAGE, "sleep", "300").stdout.strip()
    try:
        assert os.path.exists(f"/run/pyrunc/{cid}/pyrunc.json")
    finally:
        podman("rm", "-f", "-t", "0", cid)
    assert not os.path.exists(f"/run/pyrunc/{cid}")


def test_missing_binary_is_the_runtime_error(podman):
    p = run(podman, "/no/such/binary", check=False)
    assert p.returncode in (126, 127), p.stderr
    assert "no such file or directory" in p.stderr.lower() or "not found" in p.stderr.lower()


def test_env_workdir_user(podman):
    p = run(podman, "-e", "FOO=bar", "-w", "/tmp", "-u", "1000:1000", "--",
            "sh", "-c", 'echo "$FOO $(pwd) $(id -u):$(id -g)"')
    assert p.stdout == "bar /tmp 1000:1000\n"


def test_read_only_rootfs(podman):
    p = run(podman, "--read-only", "--", "sh", "-c", "touch /x 2>&1; echo rc=$?", check=False)
    assert "Read-only file system" in p.stdout and "rc=1" in p.stdout


def test_bind_mount_and_tmpfs(podman, tmp_path):
    (tmp_path / "f").write_text("from-host\n")
    tmp_path.chmod(0o755)
    p = run(podman, "-v", f"{tmp_path}:/data:ro", "--tmpfs", "/scratch:size=1m", "--",
            "sh", "-c", "cat /data/f; grep ' /scratch ' /proc/mounts; touch /data/g 2>/dev/null || echo ro")
    assert "from-host" in p.stdout
    assert "tmpfs" in p.stdout and "ro\n" in p.stdout


def test_hostname(podman):
    assert run(podman, "--hostname", "e2e-host", "--", "hostname").stdout == "e2e-host\n"


def test_network_none_and_host(podman):
    none = run(podman, "cat", "/proc/net/dev").stdout
    assert [line.split(":")[0].strip() for line in none.splitlines()[2:]] == ["lo"]
    host_ifaces = open("/proc/net/dev").read().count(":")
    p = podman("run", "--rm", "--network", "host", IMAGE, "cat", "/proc/net/dev")
    assert p.stdout.count(":") == host_ifaces


def oom_run(podman, runtime: str) -> tuple[int, str]:
    name = f"e2e-oom-{runtime}"
    p = podman("--runtime", runtime, "run", "--name", name, "--network", "none", "--memory", "16m",
               "--memory-swap", "16m", IMAGE, "sh", "-c", "x=a; while :; do x=$x$x; done", check=False, timeout=120)
    try:
        return p.returncode, podman("inspect", "-f", "{{.State.OOMKilled}}", name).stdout.strip()
    finally:
        podman("rm", name)


def test_memory_oom_kill_is_visible(podman):
    rc, oom_killed = oom_run(podman, "pyrunc")
    assert rc == 137
    if oom_killed != "true" and oom_run(podman, "runc")[1] != "true":
        pytest.skip("conmon does not report OOM kills on this host with runc either (OOMKilled false)")
    assert oom_killed == "true"


def test_pids_limit_ulimit_cgroupns(podman):
    p = run(podman, "--pids-limit", "33", "--ulimit", "nofile=100:200", "--ulimit", f"nproc={podman.nproc}:{podman.nproc}", "--cgroupns", "private", "--",
            "sh", "-c", f"{cgroup_file('pids', 'pids.max')}; ulimit -n; ulimit -Hn; cat /proc/self/cgroup | grep pids")
    lines = p.stdout.split()
    assert lines[:3] == ["33", "100", "200"], p.stdout
    assert lines[3].endswith(":/"), p.stdout  # its own cgroup namespace


def test_caps_and_no_new_privileges(podman):
    p = run(podman, "--cap-drop", "all", "--cap-add", "NET_ADMIN", "--security-opt", "no-new-privileges", "--",
            "sh", "-c", "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status")
    fields = dict(line.split(":\t") for line in p.stdout.splitlines())
    assert int(fields["CapEff"], 16) == 1 << 12  # CAP_NET_ADMIN only
    assert fields["NoNewPrivs"] == "1"


def test_default_seccomp_profile(podman):
    p = run(podman, "sh", "-c", "grep Seccomp: /proc/self/status; unshare -U true 2>&1; echo rc=$?", check=False)
    assert "Seccomp:\t2" in p.stdout
    p = run(podman, "--security-opt", "seccomp=unconfined", "--", "grep", "Seccomp:", "/proc/self/status")
    assert "Seccomp:\t0" in p.stdout


def test_detached_exec_ps_stop_rm(podman):
    cid = podman("run", "-d", "--network", "none", "--name", "e2e-detached", IMAGE, "sleep", "300").stdout.strip()
    try:
        assert podman("inspect", "-f", "{{.State.Status}}", cid).stdout.strip() == "running"
        p = podman("exec", "-e", "X=1", cid, "sh", "-c", "echo in-$X; exit 3", check=False)
        assert (p.returncode, p.stdout) == (3, "in-1\n")
        top = podman("top", cid).stdout
        assert "sleep 300" in top
        t0 = time.monotonic()
        podman("stop", "-t", "2", cid)  # sleep as PID 1 ignores SIGTERM: the SIGKILL after 2s
        assert time.monotonic() - t0 < 30
        assert podman("inspect", "-f", "{{.State.Status}}", cid).stdout.strip() == "exited"
    finally:
        podman("rm", "-f", cid)
    assert podman("ps", "-aq", "--filter", "name=e2e-detached").stdout == ""


def test_tty(podman):
    """`podman run -t` through a real pty: the container's stdout is a terminal, with our size."""
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    import fcntl
    import struct
    import termios
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    proc = subprocess.Popen(podman.argv("run", "--rm", "-t", "--network", "none", IMAGE, "sh", "-c",
                                        "tty; stty size; exit 5"),
                            stdin=slave, stdout=slave, stderr=slave, env=podman.env, start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.5)
        if r:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    rc = proc.wait(30)
    os.close(master)
    text = out.decode(errors="replace")
    assert rc == 5, text
    assert "/dev/pts/0" in text and "33 111" in text, text


def test_kill_with_signal(podman):
    cid = podman("run", "-d", "--network", "none", IMAGE, "sh", "-c",
                 "trap 'echo got-usr1; exit 42' USR1; while :; do sleep 0.1; done").stdout.strip()
    try:
        time.sleep(0.5)
        podman("kill", "-s", "USR1", cid)
        assert podman("wait", cid, timeout=30).stdout.strip() == "42"
        assert "got-usr1" in podman("logs", cid).stdout
    finally:
        podman("rm", "-f", cid)


def test_pause_unpause(podman):
    cid = podman("run", "-d", "--network", "none", IMAGE, "sleep", "300").stdout.strip()
    try:
        podman("pause", cid)
        assert podman("inspect", "-f", "{{.State.Status}}", cid).stdout.strip() == "paused"
        podman("unpause", cid)
        assert podman("inspect", "-f", "{{.State.Status}}", cid).stdout.strip() == "running"
        assert podman("exec", cid, "true").returncode == 0
    finally:
        podman("rm", "-f", "-t", "0", cid)


def test_update(podman):
    cid = podman("run", "-d", "--network", "none", "--memory", "32m", IMAGE, "sleep", "300").stdout.strip()
    try:
        podman("update", "--cpu-shares", "512", "--memory", "64m", cid)
        p = podman("exec", cid, "sh", "-c", f"{cgroup_file('cpu', 'cpu.shares')}; "
                                            f"{cgroup_file('memory', 'memory.limit_in_bytes')}")
        assert p.stdout.split() == ["512", str(64 << 20)]
    finally:
        podman("rm", "-f", "-t", "0", cid)


def test_rm_and_logs(podman):
    name = "e2e-logs"
    podman("run", "--name", name, "--network", "none", IMAGE, "sh", "-c", "echo line1; echo line2")
    assert podman("logs", name).stdout == "line1\nline2\n"
    podman("rm", name)
    run(podman, "--name", "e2e-rm", "--", "true")
    assert podman("ps", "-aq", "--filter", "name=e2e-rm").stdout == ""


def test_ten_in_parallel(podman):
    def one(i: int) -> str:
        return run(podman, "sh", "-c", f"echo c{i}", timeout=120).stdout

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        outs = list(pool.map(one, range(10)))
    assert outs == [f"c{i}\n" for i in range(10)]
