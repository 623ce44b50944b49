"""dockerd driving pyrunc: a private daemon.json with a `runtimes` entry, made the default runtime.

dockerd goes through its managed containerd and the runc v2 shim, which run pyrunc with
`--root <exec-root>/runtime-runc/moby`; dockerd adds its libnetwork-setkey prestart hook to every
container.  The fixture checks that every container it made is gone from the cgroups (cgroupfs
driver: /docker/<id>), the mount table and pyrunc's state.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pty
import select
import subprocess
import time

import pytest

from .conftest import SECCOMP_DENY_MKDIR, host_cgroup_file, missing_bounding_caps, status_field

IMAGE = "busybox:e2e"
pytestmark = pytest.mark.usefixtures("docker")


def run(docker, *args: str, check: bool = True, **kw):  # type: ignore[no-untyped-def]
    """`docker run --rm --network none IMAGE ...` with the flags before IMAGE split at "--"."""
    flags, cmd = (list(args[: args.index("--")]), list(args[args.index("--") + 1:])) if "--" in args \
        else ([], list(args))
    return docker("run", "--rm", "--network", "none", *flags, IMAGE, *cmd, check=check, **kw)


def cgroup_file(ctrl: str, name: str) -> str:
    """Shell words that print the container's own v1 cgroup file (the runtime mounts its own cgroup
    there, with or without a cgroup namespace)."""
    return f"cat /sys/fs/cgroup/{ctrl}/{name}"


def test_output_and_exit_code(docker):
    p = run(docker, "sh", "-c", "echo hello; echo oops >&2; exit 7", check=False)
    assert p.returncode == 7, p.stderr
    assert p.stdout == "hello\n"
    assert "oops" in p.stderr


def test_pyrunc_is_the_runtime(docker):
    """The default runtime is pyrunc and it keeps its state (pyrunc.json) in dockerd's --root."""
    assert docker("info", "-f", "{{.DefaultRuntime}}").stdout.strip() == "pyrunc"
    cid = docker("run", "-d", "--network", "none", IMAGE, "sleep", "300").stdout.strip()
    try:
        state = docker.home / "exec" / "runtime-runc" / "moby" / cid / "pyrunc.json"
        assert state.exists()
    finally:
        docker("rm", "-f", cid)
    assert not state.parent.exists()


def test_missing_binary_is_the_runtime_error(docker):
    p = run(docker, "/no/such/binary", check=False)
    assert p.returncode in (126, 127), p.stderr
    assert "no such file or directory" in p.stderr.lower() or "not found" in p.stderr.lower()


def test_env_workdir_user(docker):
    p = run(docker, "-e", "FOO=bar", "-w", "/tmp", "-u", "1000:1000", "--",
            "sh", "-c", 'echo "$FOO $(pwd) $(id -u):$(id -g)"')
    assert p.stdout == "bar /tmp 1000:1000\n"


def test_read_only_rootfs(docker):
    p = run(docker, "--read-only", "--", "sh", "-c", "touch /x 2>&1; echo rc=$?", check=False)
    assert "Read-only file system" in p.stdout and "rc=1" in p.stdout


def test_bind_mount_and_tmpfs(docker, tmp_path):
    (tmp_path / "f").write_text("from-host\n")
    tmp_path.chmod(0o755)
    p = run(docker, "-v", f"{tmp_path}:/data:ro", "--tmpfs", "/scratch:size=1m", "--",
            "sh", "-c", "cat /data/f; grep ' /scratch ' /proc/mounts; touch /data/g 2>/dev/null || echo ro")
    assert "from-host" in p.stdout
    assert "tmpfs" in p.stdout and "ro\n" in p.stdout


def test_hostname(docker):
    assert run(docker, "--hostname", "e2e-host", "--", "hostname").stdout == "e2e-host\n"


def test_network_none_and_host(docker):
    none = run(docker, "cat", "/proc/net/dev").stdout
    assert [line.split(":")[0].strip() for line in none.splitlines()[2:]] == ["lo"]
    host_ifaces = open("/proc/net/dev").read().count(":")
    p = docker("run", "--rm", "--network", "host", IMAGE, "cat", "/proc/net/dev")
    assert p.stdout.count(":") == host_ifaces


def oom_run(docker, runtime: str) -> tuple[int, str]:
    name = f"e2e-oom-{runtime}"
    p = docker("run", "--runtime", runtime, "--name", name, "--network", "none", "--memory", "16m",
               "--memory-swap", "16m", IMAGE, "sh", "-c", "x=a; while :; do x=$x$x; done", check=False, timeout=120)
    try:
        return p.returncode, docker("inspect", "-f", "{{.State.OOMKilled}}", name).stdout.strip()
    finally:
        docker("rm", name)


def test_memory_oom_kill_is_visible(docker):
    rc, oom_killed = oom_run(docker, "pyrunc")
    assert rc == 137
    if oom_killed != "true" and oom_run(docker, "runc")[1] != "true":
        pytest.skip("dockerd does not report OOM kills on this host with runc either (OOMKilled false)")
    assert oom_killed == "true"


def test_pids_limit_ulimit_cgroupns(docker):
    p = run(docker, "--pids-limit", "33", "--ulimit", "nofile=100:200", "--ulimit", f"nproc={docker.nproc}:{docker.nproc}", "--cgroupns", "private", "--",
            "sh", "-c", f"{cgroup_file('pids', 'pids.max')}; ulimit -n; ulimit -Hn; cat /proc/self/cgroup | grep pids")
    lines = p.stdout.split()
    assert lines[:3] == ["33", "100", "200"], p.stdout
    assert lines[3].endswith(":/"), p.stdout  # its own cgroup namespace


def test_caps_and_no_new_privileges(docker):
    p = run(docker, "--cap-drop", "all", "--cap-add", "NET_ADMIN", "--security-opt", "no-new-privileges", "--",
            "sh", "-c", "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status")
    fields = dict(line.split(":\t") for line in p.stdout.splitlines())
    assert int(fields["CapEff"], 16) == 1 << 12  # CAP_NET_ADMIN only
    assert fields["NoNewPrivs"] == "1"


def test_default_seccomp_profile(docker):
    """Docker's default profile, as dockerd resolves it into config.json: loaded, and it answers as
    its rules say, the same answers as under runc: unshare of a user namespace is refused (allowed
    without the filter), an ordinary syscall works."""
    script = ("grep Seccomp: /proc/self/status; unshare -U true 2>&1; echo rc=$?; "
              "mkdir /tmp/ok && echo mkdir-works")
    p = run(docker, "sh", "-c", script, check=False)
    assert "Seccomp:\t2" in p.stdout
    assert "mkdir-works" in p.stdout and "rc=0" not in p.stdout, p.stdout
    r = run(docker, "--runtime", "runc", "--", "sh", "-c", script, check=False)
    assert p.stdout == r.stdout
    p = run(docker, "--security-opt", "seccomp=unconfined", "--", "grep", "Seccomp:", "/proc/self/status")
    assert "Seccomp:\t0" in p.stdout


def test_detached_exec_ps_stop_rm(docker):
    cid = docker("run", "-d", "--network", "none", "--name", "e2e-detached", IMAGE, "sleep", "300").stdout.strip()
    try:
        assert docker("inspect", "-f", "{{.State.Status}}", cid).stdout.strip() == "running"
        p = docker("exec", "-e", "X=1", cid, "sh", "-c", "echo in-$X; exit 3", check=False)
        assert (p.returncode, p.stdout) == (3, "in-1\n")
        top = docker("top", cid).stdout
        assert "sleep 300" in top
        t0 = time.monotonic()
        docker("stop", "-t", "2", cid)  # sleep as PID 1 ignores SIGTERM: the SIGKILL after 2s
        assert time.monotonic() - t0 < 30
        assert docker("inspect", "-f", "{{.State.Status}}", cid).stdout.strip() == "exited"
    finally:
        docker("rm", "-f", cid)
    assert docker("ps", "-aq", "--filter", "name=e2e-detached").stdout == ""


def test_tty(docker):
    """`docker run -t` through a real pty: a terminal, with our size (the CLI sets it once the
    container started, hence the sleep)."""
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    import fcntl
    import struct
    import termios
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    proc = subprocess.Popen(docker.argv("run", "--rm", "-t", "--network", "none", IMAGE, "sh", "-c",
                                        "tty; sleep 1; stty size; exit 5"),
                            stdin=slave, stdout=slave, stderr=slave, env=docker.env, start_new_session=True)
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


def test_kill_with_signal(docker):
    cid = docker("run", "-d", "--network", "none", IMAGE, "sh", "-c",
                 "trap 'echo got-usr1; exit 42' USR1; while :; do sleep 0.1; done").stdout.strip()
    try:
        time.sleep(0.5)
        docker("kill", "-s", "USR1", cid)
        assert docker("wait", cid, timeout=30).stdout.strip() == "42"
        assert "got-usr1" in docker("logs", cid).stdout
    finally:
        docker("rm", "-f", cid)


def test_pause_unpause(docker):
    cid = docker("run", "-d", "--network", "none", IMAGE, "sleep", "300").stdout.strip()
    try:
        docker("pause", cid)
        assert docker("inspect", "-f", "{{.State.Status}}", cid).stdout.strip() == "paused"
        docker("unpause", cid)
        assert docker("inspect", "-f", "{{.State.Status}}", cid).stdout.strip() == "running"
        assert docker("exec", cid, "true").returncode == 0
    finally:
        docker("rm", "-f", cid)


def test_update(docker):
    cid = docker("run", "-d", "--network", "none", "--memory", "32m", IMAGE, "sleep", "300").stdout.strip()
    try:
        docker("update", "--cpu-shares", "512", "--memory", "64m", cid)
        p = docker("exec", cid, "sh", "-c", f"{cgroup_file('cpu', 'cpu.shares')}; "
                                            f"{cgroup_file('memory', 'memory.limit_in_bytes')}")
        assert p.stdout.split() == ["512", str(64 << 20)]
    finally:
        docker("rm", "-f", cid)


def test_rm_and_logs(docker):
    name = "e2e-logs"
    docker("run", "--name", name, "--network", "none", IMAGE, "sh", "-c", "echo line1; echo line2")
    assert docker("logs", name).stdout == "line1\nline2\n"
    docker("rm", name)
    run(docker, "--name", "e2e-rm", "--", "true")
    assert docker("ps", "-aq", "--filter", "name=e2e-rm").stdout == ""


def test_ten_in_parallel(docker):
    def one(i: int) -> str:
        return run(docker, "sh", "-c", f"echo c{i}", timeout=120).stdout

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        outs = list(pool.map(one, range(10)))
    assert outs == [f"c{i}\n" for i in range(10)]


def detached(docker, *args: str) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    """`docker run -d` of ``sleep 300`` with ``args`` as flags: (id, host pid of its init)."""
    cid = docker("run", "-d", "--network", "none", *args, IMAGE, "sleep", "300").stdout.strip()
    return cid, int(docker("inspect", "-f", "{{.State.Pid}}", cid).stdout)


def test_cpus(docker):
    cid, pid = detached(docker, "--cpus", "0.5")
    try:
        inside = docker("exec", cid, "sh", "-c", f"{cgroup_file('cpu', 'cpu.cfs_quota_us')}; "
                                                 f"{cgroup_file('cpu', 'cpu.cfs_period_us')}").stdout.split()
        assert inside == ["50000", "100000"]
        assert [host_cgroup_file(pid, "cpu", f) for f in ("cpu.cfs_quota_us", "cpu.cfs_period_us")] == inside
    finally:
        docker("rm", "-f", cid)


def test_oom_score_adj(docker):
    cid, pid = detached(docker, "--oom-score-adj", "123")
    try:
        assert docker("exec", cid, "cat", "/proc/self/oom_score_adj").stdout == "123\n"
        assert open(f"/proc/{pid}/oom_score_adj").read() == "123\n"
    finally:
        docker("rm", "-f", cid)


def test_sysctl(docker):
    host = open("/proc/sys/kernel/shm_rmid_forced").read()
    p = run(docker, "--sysctl", "kernel.shm_rmid_forced=1", "--sysctl", "net.ipv4.ip_forward=1", "--",
            "cat", "/proc/sys/kernel/shm_rmid_forced", "/proc/sys/net/ipv4/ip_forward")
    assert p.stdout.split() == ["1", "1"]
    assert open("/proc/sys/kernel/shm_rmid_forced").read() == host  # the container's IPC namespace only


def test_custom_seccomp_profile(docker, tmp_path):
    profile = tmp_path / "deny-mkdir.json"
    profile.write_text(json.dumps(SECCOMP_DENY_MKDIR))
    p = run(docker, "--security-opt", f"seccomp={profile}", "--",
            "sh", "-c", "grep Seccomp: /proc/self/status; mkdir /tmp/d 2>&1; echo rc=$?; touch /tmp/f && echo touched")
    assert "Seccomp:\t2" in p.stdout
    assert "Operation not permitted" in p.stdout and "rc=1" in p.stdout and "touched" in p.stdout


def test_masked_paths(docker):
    masked = run(docker, "sh", "-c", "wc -c < /proc/timer_list; grep -c ' /proc/timer_list ' /proc/mounts").stdout
    assert masked.split() == ["0", "1"]  # /dev/null bound over it
    p = run(docker, "--security-opt", "systempaths=unconfined", "--",
            "sh", "-c", "wc -c < /proc/timer_list; grep -c ' /proc/timer_list ' /proc/mounts", check=False)
    size, mounts = p.stdout.split()
    assert int(size) > 0 and mounts == "0", p.stdout


def test_device(docker):
    p = run(docker, "--device", "/dev/null:/dev/mynull", "--",
            "sh", "-c", "stat -c '%F %t:%T' /dev/mynull; echo data > /dev/mynull && wc -c < /dev/mynull; "
                        f"{cgroup_file('devices', 'devices.list')}")
    lines = p.stdout.splitlines()
    assert lines[:2] == ["character special file 1:3", "0"], p.stdout
    assert "c 1:3 rwm" in lines[2:], p.stdout


def test_privileged(docker):
    argv = ["sh", "-c", "grep -E '^(CapEff|Seccomp):' /proc/self/status; wc -c < /proc/timer_list; "
                        "test -e /dev/loop-control && echo host-devices; mount -t tmpfs none /mnt && echo mounted"]
    p = run(docker, "--privileged", "--", *argv, check=False)
    if p.returncode != 0:
        r = run(docker, "--privileged", "--runtime", "runc", "--", *argv, check=False)
        if r.returncode != 0:
            pytest.skip(f"--privileged asks for every capability, the host's bounding set lacks "
                        f"{missing_bounding_caps()}; runc fails too: {r.stderr.strip()[-200:]}")
    assert p.returncode == 0, p.stderr
    fields = p.stdout.split()
    assert fields[1] == status_field(os.getpid(), "CapBnd")  # everything the host's bounding set has
    assert fields[2:4] == ["Seccomp:", "0"] and int(fields[4]) > 0
    assert "host-devices" in fields and "mounted" in fields


def test_stdin(docker):
    p = docker("run", "--rm", "-i", "--network", "none", IMAGE, "sh", "-c", "wc -l; echo done",
               input="one\ntwo\nthree\n")
    assert p.stdout.split() == ["3", "done"]
    assert docker("run", "--rm", "-i", "--network", "none", IMAGE, "cat", input="piped\n").stdout == "piped\n"


def test_init(docker):
    """dockerd's --init binds its docker-init (tini) at /sbin/docker-init."""
    info = docker("info", "-f", "{{json .InitCommit}}").stdout
    if not os.path.exists("/usr/bin/docker-init") and not os.path.exists("/usr/libexec/docker/docker-init"):
        pytest.skip(f"docker-init is not installed (tini package): {info.strip()}")
    cid, pid = detached(docker, "--init")
    try:
        assert docker("exec", cid, "cat", "/proc/1/cmdline").stdout.split("\0")[:2] == ["/sbin/docker-init", "--"]
        assert "sleep 300" in docker("top", cid).stdout
        t0 = time.monotonic()
        docker("stop", "-t", "10", cid)  # the init forwards SIGTERM to sleep: no wait for the SIGKILL
        assert time.monotonic() - t0 < 8
        assert docker("inspect", "-f", "{{.State.ExitCode}}", cid).stdout.strip() == "143"
    finally:
        docker("rm", "-f", cid)


def test_restart(docker):
    cid, pid = detached(docker)
    try:
        docker("restart", "-t", "0", cid)
        assert docker("inspect", "-f", "{{.State.Status}}", cid).stdout.strip() == "running"
        new_pid = int(docker("inspect", "-f", "{{.State.Pid}}", cid).stdout)
        assert new_pid != pid and not os.path.exists(f"/proc/{pid}/status")
        assert docker("exec", cid, "echo", "ok").stdout == "ok\n"
    finally:
        docker("rm", "-f", cid)


def test_restart_policy_on_failure(docker):
    name = "e2e-restart"
    docker("run", "-d", "--name", name, "--network", "none", "--restart", "on-failure:2", IMAGE,
           "sh", "-c", "echo run; exit 3")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = docker("inspect", "-f", "{{.State.Status}} {{.RestartCount}}", name).stdout.split()
            if state == ["exited", "2"]:
                break
            time.sleep(0.3)
        assert state == ["exited", "2"]
        assert docker("logs", name).stdout == "run\n" * 3
        assert docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "3"
    finally:
        docker("rm", "-f", name)


def test_userns():
    pytest.skip("docker's --userns needs a daemon started with userns-remap, which makes the host user "
                "dockremap and its /etc/subuid ranges (host configuration, not changed by the tests)")
