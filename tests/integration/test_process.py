"""The container process's settings (config.md "Process", config-linux.md), on real containers.

Each test looks twice: at what the process itself reports (its output) and at what
the host sees of it (/proc/PID/* of the running process, or nsenter into it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from conftest import edit_config, needs_root, new_id

pytestmark = needs_root

READY = "__ready__"


# ---------------------------------------------------------------------------- helpers


def script_bundle(make_bundle, script: str, **options):  # type: ignore[no-untyped-def]
    """A bundle whose process runs ``script``, prints READY and then sleeps (as the same pid)."""
    return make_bundle(["sh", "-c", f"{script}\necho {READY}; exec sleep 100"], **options)


class Running:
    """A created-and-started container whose stdout/stderr go to files we can read."""

    def __init__(self, pyrunc, bundle: Path, *create_args: str) -> None:  # type: ignore[no-untyped-def]
        self.pyrunc = pyrunc
        self.id = new_id()
        self.out = bundle / f"{self.id}.out"
        self.err = bundle / f"{self.id}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            p = pyrunc("create", "-b", str(bundle), *create_args, self.id, stdout=out, stderr=err, check=False)
        assert p.returncode == 0, f"create failed: {self.err.read_text()}"
        self.pid = pyrunc.state(self.id)["pid"]
        pyrunc("start", self.id)

    def wait_ready(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while READY not in self.out.read_text():
            if time.monotonic() > deadline:
                raise AssertionError(f"container never got ready: out={self.out.read_text()!r} "
                                     f"err={self.err.read_text()!r}")
            time.sleep(0.01)
        return self.out.read_text().split(READY)[0]

    def status(self) -> dict[str, str]:
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            out[k] = v.strip()
        return out

    def delete(self) -> None:
        self.pyrunc("delete", "--force", self.id)


def run_output(pyrunc, bundle: Path, *extra: str) -> str:  # type: ignore[no-untyped-def]
    p = pyrunc("run", "-b", str(bundle), *extra, new_id())
    return p.stdout


def cap_mask(names) -> int:  # type: ignore[no-untyped-def]
    from pyrunc.config import CAPABILITIES
    return sum(1 << CAPABILITIES.index(n) for n in names)


def nsenter(pid: int, flag: str, *cmd: str) -> str:
    return subprocess.run(["nsenter", "-t", str(pid), flag, *cmd], check=True,
                          capture_output=True, text=True).stdout


def host_traces(cid: str, timeout: float = 3.0) -> list[str]:
    """Whatever a container with this id left on the host: cgroups, live processes (SIGKILLed
    ones get a moment to go; zombies wait for the host's init and are not ours to reap)."""
    deadline = time.monotonic() + timeout
    while True:
        found = []
        for top, dirs, _files in os.walk("/sys/fs/cgroup"):
            found += [os.path.join(top, d) for d in dirs if cid in d]
            if top.count("/") > 8:
                dirs[:] = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if cid in Path(f"/proc/{pid}/cgroup").read_text() and \
                        Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX":
                    found.append(f"process {pid}")
            except OSError:
                pass
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def set_namespaces(cfg: dict, *types: str) -> None:
    cfg["linux"]["namespaces"] = [{"type": t} for t in types]


# ---------------------------------------------------------------------------- tests


def test_hostname_and_domainname(pyrunc, make_bundle) -> None:
    bundle = script_bundle(make_bundle, "hostname; cat /proc/sys/kernel/domainname", hostname="box-h1")
    edit_config(bundle, lambda c: c.update(domainname="example.test"))
    host_name = socket.gethostname()
    host_domain = Path("/proc/sys/kernel/domainname").read_text()
    c = Running(pyrunc, bundle)
    assert c.wait_ready() == "box-h1\nexample.test\n"
    assert nsenter(c.pid, "-u", "hostname") == "box-h1\n"
    assert nsenter(c.pid, "-u", "cat", "/proc/sys/kernel/domainname") == "example.test\n"
    c.delete()
    assert socket.gethostname() == host_name
    assert Path("/proc/sys/kernel/domainname").read_text() == host_domain


def test_sysctl_in_private_network_and_ipc_namespaces(pyrunc, make_bundle) -> None:
    net_key = "net/ipv4/ip_unprivileged_port_start"
    ipc_key = "kernel/shmmni"
    host_net = Path(f"/proc/sys/{net_key}").read_text()
    host_ipc = Path(f"/proc/sys/{ipc_key}").read_text()
    net_value = "81" if host_net.strip() != "81" else "82"
    ipc_value = "1234" if host_ipc.strip() != "1234" else "1235"
    bundle = script_bundle(make_bundle, f"cat /proc/sys/{net_key} /proc/sys/{ipc_key}")
    edit_config(bundle, lambda c: c["linux"].update(sysctl={
        "net.ipv4.ip_unprivileged_port_start": net_value, "kernel.shmmni": ipc_value}))
    c = Running(pyrunc, bundle)
    assert c.wait_ready() == f"{net_value}\n{ipc_value}\n"
    assert nsenter(c.pid, "-n", "cat", f"/proc/sys/{net_key}") == net_value + "\n"
    assert nsenter(c.pid, "-i", "cat", f"/proc/sys/{ipc_key}") == ipc_value + "\n"
    assert Path(f"/proc/sys/{net_key}").read_text() == host_net  # the host's values are untouched
    assert Path(f"/proc/sys/{ipc_key}").read_text() == host_ipc
    c.delete()


def test_rlimits(pyrunc, make_bundle) -> None:
    bundle = script_bundle(make_bundle, "ulimit -n; ulimit -Hn; ulimit -c")
    edit_config(bundle, lambda c: c["process"].update(rlimits=[
        {"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456},
        {"type": "RLIMIT_CORE", "soft": 4096, "hard": 8192},
    ]))
    c = Running(pyrunc, bundle)
    # busybox's ulimit -c counts 512-byte blocks
    assert c.wait_ready() == "123\n456\n8\n"
    limits = {line[:26].strip(): line[26:].split()
              for line in Path(f"/proc/{c.pid}/limits").read_text().splitlines()[1:]}
    assert limits["Max open files"][:2] == ["123", "456"]
    assert limits["Max core file size"][:2] == ["4096", "8192"]
    c.delete()


def test_oom_score_adj(pyrunc, make_bundle) -> None:
    bundle = script_bundle(make_bundle, "cat /proc/self/oom_score_adj")
    edit_config(bundle, lambda c: c["process"].update(oomScoreAdj=567))
    c = Running(pyrunc, bundle)
    assert c.wait_ready() == "567\n"
    assert Path(f"/proc/{c.pid}/oom_score_adj").read_text() == "567\n"
    c.delete()


def test_user_uid_gid_and_additional_gids(pyrunc, make_bundle) -> None:
    bundle = script_bundle(make_bundle, "id -u; id -g; id -G", uid=1000, gid=1000)
    edit_config(bundle, lambda c: c["process"]["user"].update(additionalGids=[5, 44]))
    c = Running(pyrunc, bundle)
    uid, gid, groups = c.wait_ready().splitlines()
    assert (uid, gid) == ("1000", "1000")
    assert sorted(groups.split()) == ["1000", "44", "5"]
    st = c.status()
    assert st["Uid"].split() == ["1000"] * 4
    assert st["Gid"].split() == ["1000"] * 4
    assert sorted(st["Groups"].split()) == ["44", "5"]
    c.delete()


def test_user_without_additional_gids_drops_the_runtimes_groups(pyrunc, make_bundle) -> None:
    bundle = script_bundle(make_bundle, "id -G", uid=1000, gid=1000)
    c = Running(pyrunc, bundle)
    assert c.wait_ready() == "1000\n"
    assert c.status()["Groups"] == ""
    c.delete()


def test_umask_and_created_file_modes(pyrunc, make_bundle) -> None:
    bundle = script_bundle(make_bundle, "umask; touch /tmp/f; mkdir /tmp/d; stat -c %a /tmp/f /tmp/d")
    edit_config(bundle, lambda c: (
        c["process"]["user"].update(umask=0o027),
        c["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]})))
    c = Running(pyrunc, bundle)
    assert c.wait_ready() == "0027\n640\n750\n"
    # from outside, through the container's root
    assert os.stat(f"/proc/{c.pid}/root/tmp/f").st_mode & 0o777 == 0o640
    assert os.stat(f"/proc/{c.pid}/root/tmp/d").st_mode & 0o777 == 0o750
    c.delete()


def test_cwd_is_the_configured_one_and_the_hosts_does_not_leak(pyrunc, make_bundle, rootfs: Path,
                                                               tmp_path: Path) -> None:
    bundle = script_bundle(make_bundle, "pwd; readlink /proc/1/cwd; readlink /proc/self/cwd", cwd="/home/user")
    # pyrunc itself runs in a host directory the container must not see
    (tmp_path / "host-cwd").mkdir()
    cid = new_id()
    out = bundle / "out"
    with open(out, "w") as f:
        pyrunc("create", "-b", str(bundle), cid, stdout=f, cwd=str(tmp_path / "host-cwd"))
    pid = pyrunc.state(cid)["pid"]
    pyrunc("start", cid, cwd=str(tmp_path / "host-cwd"))
    deadline = time.monotonic() + 10
    while READY not in out.read_text() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert out.read_text().split(READY)[0] == "/home/user\n/home/user\n/home/user\n"
    # from outside: the path as the container sees it, and the very directory of the rootfs
    assert os.readlink(f"/proc/{pid}/cwd") == "/home/user"
    here, there = os.stat(f"/proc/{pid}/cwd"), os.stat(rootfs / "home/user")
    assert (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
    pyrunc("delete", "--force", cid)


def test_missing_cwd_is_created_as_runc_does(pyrunc, make_bundle) -> None:
    # runc's prepareRootfs: MkdirAll(cwd, 0755), before the root is made read-only
    bundle = make_bundle(["pwd"], cwd="/tmp/made/by/the/runtime")
    edit_config(bundle, lambda c: c["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}))
    assert run_output(pyrunc, bundle) == "/tmp/made/by/the/runtime\n"


def test_umask_defaults_to_0022_whatever_the_runtimes(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["sh", "-c", "umask"])
    old = os.umask(0o077)  # what pyrunc (and so its init) is started with
    try:
        out = run_output(pyrunc, bundle)
    finally:
        os.umask(old)
    assert out == "0022\n"


def test_unlimited_rlimits(pyrunc, make_bundle) -> None:
    infinity = 2**64 - 1  # RLIM_INFINITY, as engines write "unlimited" (e.g. docker --ulimit core=-1)
    bundle = script_bundle(make_bundle, "ulimit -c; ulimit -Hc")
    edit_config(bundle, lambda c: c["process"].update(rlimits=[
        {"type": "RLIMIT_CORE", "soft": infinity, "hard": infinity},
        {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 4096}]))
    c = Running(pyrunc, bundle)
    assert c.wait_ready() == "unlimited\nunlimited\n"
    limits = Path(f"/proc/{c.pid}/limits").read_text()
    assert [line.split()[4:6] for line in limits.splitlines() if line.startswith("Max core file size")] == \
        [["unlimited", "unlimited"]]
    c.delete()


def test_env_is_exactly_the_configured_one(pyrunc, make_bundle) -> None:
    env = ["PATH=/bin:/usr/bin", "FOO=bar baz", "EMPTY=", "X=a=b"]
    bundle = make_bundle(["env"])
    edit_config(bundle, lambda c: c["process"].update(env=env))
    assert run_output(pyrunc, bundle).splitlines() == env
    # and as the host sees it, on a running process
    bundle2 = make_bundle(["sleep", "100"])
    edit_config(bundle2, lambda c: c["process"].update(env=env))
    c = Running(pyrunc, bundle2)
    assert Path(f"/proc/{c.pid}/environ").read_bytes().split(b"\0")[:-1] == [e.encode() for e in env]
    c.delete()


def test_args_are_passed_verbatim_with_argv0_kept(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["sh", "-c", 'echo "$0|$1|$2"', "$HOME", "two words"])
    assert run_output(pyrunc, bundle) == "$HOME|two words|\n"
    bundle2 = make_bundle(["sleep", "100"])
    c = Running(pyrunc, bundle2)
    # argv[0] stays what the config says (PATH lookup only picks the file to execute)
    assert Path(f"/proc/{c.pid}/cmdline").read_bytes() == b"sleep\x00100\x00"
    assert os.readlink(f"/proc/{c.pid}/exe").endswith("/bin/busybox")
    c.delete()


def test_path_lookup_uses_the_process_env_path_in_order(pyrunc, make_bundle, tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    for d, mode in (("a", 0o644), ("b", 0o755), ("c", 0o755)):
        (tools / d).mkdir(parents=True)
        script = tools / d / "hello"
        script.write_text(f"#!/bin/sh\necho from-{d} \"$0\" \"$@\"\n")
        script.chmod(mode)
    bundle = make_bundle(["hello", "x"])
    # /opt/a/hello is not executable: skipped; /opt/none is missing: skipped; /opt/b wins over /opt/c
    edit_config(bundle, lambda c: (
        c["process"].update(env=["PATH=/opt/none:/opt/a:/opt/b:/opt/c:/bin"]),
        c["mounts"].append({"destination": "/opt", "type": "bind", "source": str(tools),
                            "options": ["rbind", "ro"]})))
    assert run_output(pyrunc, bundle) == "from-b /opt/b/hello x\n"


def test_missing_executable_fails_create_and_leaves_nothing(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["no-such-program", "arg"])
    cid = new_id()
    p = pyrunc("create", "-b", str(bundle), cid, check=False)
    assert p.returncode != 0
    assert "no-such-program" in p.stderr and "executable file not found in $PATH" in p.stderr
    assert cid not in pyrunc.ids()
    assert not (pyrunc.root / cid).exists()
    assert not host_traces(cid)
    # an absolute path that does not exist
    bundle2 = make_bundle(["/no/such/program"])
    p2 = pyrunc("create", "-b", str(bundle2), cid, check=False)
    assert p2.returncode != 0 and "/no/such/program" in p2.stderr and "no such file or directory" in p2.stderr
    assert cid not in pyrunc.ids() and not host_traces(cid)


def _caps_bundle(make_bundle, caps: dict, **options):  # type: ignore[no-untyped-def]
    bundle = make_bundle(["sleep", "100"], **options)

    def edit(c: dict) -> None:
        c["process"]["capabilities"] = caps
        c["process"]["noNewPrivileges"] = False
    edit_config(bundle, edit)
    return bundle


def test_capabilities_all_five_sets_for_root(pyrunc, make_bundle) -> None:
    bounding = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW",
                "CAP_SYS_CHROOT", "CAP_AUDIT_WRITE"]
    inheritable = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"]
    ambient = ["CAP_KILL", "CAP_NET_RAW"]
    bundle = _caps_bundle(make_bundle, {"bounding": bounding, "effective": bounding, "permitted": bounding,
                                        "inheritable": inheritable, "ambient": ambient})
    c = Running(pyrunc, bundle)
    st = c.status()
    # root's execve: permitted = bounding | inheritable (| ambient), effective = permitted
    assert int(st["CapBnd"], 16) == cap_mask(bounding)
    assert int(st["CapPrm"], 16) == cap_mask(bounding)
    assert int(st["CapEff"], 16) == cap_mask(bounding)
    assert int(st["CapInh"], 16) == cap_mask(inheritable)
    assert int(st["CapAmb"], 16) == cap_mask(ambient)
    c.delete()


def test_capabilities_of_a_non_root_user_come_from_ambient(pyrunc, make_bundle) -> None:
    bounding = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETUID"]
    granted = ["CAP_NET_BIND_SERVICE", "CAP_NET_RAW"]
    bundle = _caps_bundle(make_bundle, {"bounding": bounding, "effective": granted, "permitted": granted,
                                        "inheritable": granted, "ambient": granted}, uid=1000, gid=1000)
    c = Running(pyrunc, bundle)
    st = c.status()
    assert st["Uid"].split()[0] == "1000"
    assert int(st["CapBnd"], 16) == cap_mask(bounding)
    for kind in ("CapPrm", "CapEff", "CapInh", "CapAmb"):
        assert int(st[kind], 16) == cap_mask(granted), kind
    c.delete()
    # without ambient capabilities, a non-root user ends up with none
    bundle2 = _caps_bundle(make_bundle, {"bounding": bounding, "effective": granted, "permitted": granted},
                           uid=1000, gid=1000)
    c2 = Running(pyrunc, bundle2)
    st2 = c2.status()
    assert int(st2["CapBnd"], 16) == cap_mask(bounding)
    for kind in ("CapPrm", "CapEff", "CapInh", "CapAmb"):
        assert int(st2[kind], 16) == 0, kind
    c2.delete()


def test_capabilities_seen_from_inside(pyrunc, make_bundle) -> None:
    caps = ["CAP_KILL", "CAP_NET_BIND_SERVICE"]
    bundle = make_bundle(["sh", "-c", "grep -E '^Cap(Bnd|Eff)' /proc/self/status"])
    edit_config(bundle, lambda c: c["process"].update(capabilities={
        "bounding": caps, "effective": caps, "permitted": caps}))
    lines = dict(line.split(":\t") for line in run_output(pyrunc, bundle).splitlines())
    assert int(lines["CapBnd"], 16) == int(lines["CapEff"], 16) == cap_mask(caps)


def test_no_new_privileges(pyrunc, make_bundle) -> None:
    for flag, want in ((True, "1"), (False, "0")):
        bundle = script_bundle(make_bundle, "grep NoNewPrivs /proc/self/status")
        edit_config(bundle, lambda c, flag=flag: c["process"].update(noNewPrivileges=flag))
        c = Running(pyrunc, bundle)
        assert c.wait_ready().split() == ["NoNewPrivs:", want]
        assert c.status()["NoNewPrivs"] == want
        c.delete()


def _create_with_fds(pyrunc, bundle: Path, cid: str, out: Path, fds: dict[int, Path],  # type: ignore[no-untyped-def]
                     *create_args: str) -> None:
    """create with the given files open (read-only) as those fd numbers in pyrunc."""
    redirs = " ".join(f'{n}<"{path}"' for n, path in fds.items())
    argv = " ".join(f"'{a}'" for a in pyrunc.argv("create", "-b", str(bundle), *create_args, cid))
    # files, not pipes: the container keeps its stdio open after create returns
    with open(out, "w") as f, open(out.with_suffix(".err"), "w") as err:
        subprocess.run(["bash", "-c", f"exec {argv} {redirs}"], check=True, stdout=f,
                       stderr=err, stdin=subprocess.DEVNULL, timeout=30)


def test_preserve_fds_passes_extra_fds_and_closes_the_rest(pyrunc, make_bundle, tmp_path: Path) -> None:
    secret3, secret4 = tmp_path / "three", tmp_path / "four"
    secret3.write_text("passed-as-3\n")
    secret4.write_text("passed-as-4\n")
    bundle = script_bundle(make_bundle, "cat <&3; cat <&4 2>/dev/null || echo no-fd-4; "
                                        "ls /proc/$$/fd")  # no pipeline: its pipes would show
    cid = new_id()
    out = bundle / "out"
    _create_with_fds(pyrunc, bundle, cid, out, {3: secret3, 4: secret4}, "--preserve-fds", "1")
    pid = pyrunc.state(cid)["pid"]
    pyrunc("start", cid)
    deadline = time.monotonic() + 10
    while READY not in out.read_text() and time.monotonic() < deadline:
        time.sleep(0.01)
    lines = out.read_text().split(READY)[0].splitlines()
    assert lines[0] == "passed-as-3"
    assert lines[1] == "no-fd-4"
    assert sorted(lines[2:], key=int) == ["0", "1", "2", "3"]
    assert sorted(os.listdir(f"/proc/{pid}/fd"), key=int) == ["0", "1", "2", "3"]
    assert os.readlink(f"/proc/{pid}/fd/3") == str(secret3)
    pyrunc("delete", "--force", cid)


def test_without_preserve_fds_only_stdio_reaches_the_process(pyrunc, make_bundle, tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    extra.write_text("x")
    bundle = script_bundle(make_bundle, "ls /proc/$$/fd")
    cid = new_id()
    out = bundle / "out"
    _create_with_fds(pyrunc, bundle, cid, out, {3: extra, 5: extra})
    pid = pyrunc.state(cid)["pid"]
    pyrunc("start", cid)
    deadline = time.monotonic() + 10
    while READY not in out.read_text() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(out.read_text().split(READY)[0].split(), key=int) == ["0", "1", "2"]
    assert sorted(os.listdir(f"/proc/{pid}/fd"), key=int) == ["0", "1", "2"]
    pyrunc("delete", "--force", cid)


def test_ambient_capability_outside_inheritable_is_a_warning_as_in_runc(pyrunc, make_bundle) -> None:
    caps = ["CAP_CHOWN", "CAP_KILL"]
    bundle = make_bundle(["grep", "CapAmb", "/proc/self/status"])
    edit_config(bundle, lambda c: c["process"].update(capabilities={
        "bounding": caps, "effective": caps, "permitted": caps,
        "inheritable": ["CAP_KILL"], "ambient": ["CAP_KILL", "CAP_CHOWN"]}))
    p = pyrunc("run", "-b", str(bundle), new_id())
    assert int(p.stdout.split()[1], 16) == cap_mask(["CAP_KILL"])
    assert "can't raise ambient capability CAP_CHOWN: operation not permitted" in p.stderr


def test_the_process_starts_with_no_ignored_signals(pyrunc, make_bundle) -> None:
    # the init is Python, which ignores SIGPIPE and SIGXFSZ; ignored signals survive exec
    bundle = make_bundle(["grep", "SigIgn", "/proc/self/status"])
    assert run_output(pyrunc, bundle).split() == ["SigIgn:", "0000000000000000"]
