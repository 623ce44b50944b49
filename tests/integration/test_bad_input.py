"""Broken config.json files and broken command lines: each must fail with a message that
names the JSON path (or the argument), and leave the host exactly as it was: no state
directory in --root, no cgroup, no mount, no process.

Also ``validate`` (every problem listed) and ``spec`` (what it writes validates and runs).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from conftest import TEST_PREFIX, edit_config, needs_root, new_id, read_config, write_config

pytestmark = needs_root


def error_messages(stderr: str) -> str:
    """The messages of logrus-style ``level=error msg="..."`` lines, unquoted; other lines as they are."""
    out = []
    for line in stderr.splitlines():
        m = re.search(r'level=\w+ msg=(".*")$', line)
        out.append(json.loads(m.group(1)) if m else line)
    return "\n".join(out)


class HostSnapshot:
    """What a create could leave behind, taken before it runs and compared after."""

    def __init__(self, pyrunc, workdir: Path, cid: str) -> None:  # type: ignore[no-untyped-def]
        self.pyrunc, self.workdir, self.cid = pyrunc, workdir, cid
        self.before = self.take()

    def mounts(self) -> set[str]:
        with open("/proc/self/mountinfo") as f:
            return {line.split(" - ")[0].split(" ", 4)[4] for line in f
                    if str(self.workdir) in line or TEST_PREFIX in line or "/tmp/pytest-of" in line}

    def cgroups(self) -> set[str]:
        found = set()
        for top, dirs, _files in os.walk("/sys/fs/cgroup"):
            found.update(os.path.join(top, d) for d in dirs if TEST_PREFIX in d)
            if top.count("/") > 8:
                dirs[:] = []
        return found

    def processes(self) -> set[str]:
        found = set()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                text = Path(f"/proc/{pid}/cgroup").read_text()
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                root = os.readlink(f"/proc/{pid}/root")
            except OSError:
                continue
            if state in "ZX":
                continue  # dead, waiting for the host's init to reap it
            if TEST_PREFIX in text or root.startswith(str(self.workdir)):
                found.add(pid)
        return found

    def state_dirs(self) -> set[str]:
        return set(os.listdir(self.pyrunc.root)) if self.pyrunc.root.exists() else set()

    def take(self) -> dict[str, set[str]]:
        return {"state": self.state_dirs(), "cgroups": self.cgroups(), "mounts": self.mounts(),
                "processes": self.processes()}

    def assert_unchanged(self) -> None:
        deadline = time.monotonic() + 3  # a SIGKILLed init takes a moment to go
        while True:
            now = self.take()
            changed = {k: now[k] - self.before[k] for k in now if now[k] - self.before[k]}
            if not changed or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert not changed, f"the failed command left things behind: {changed}"
        assert not (self.pyrunc.root / self.cid).exists()


def _drop_ns(c: dict, t: str) -> None:
    c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != t]


def _set_ns_path(c: dict, t: str, path: str) -> None:
    for n in c["linux"]["namespaces"]:
        if n["type"] == t:
            n["path"] = path


# (name, how to break a good config, text expected among the error messages)
BROKEN = [
    ("oci-version-missing", lambda c: c.pop("ociVersion"),
     'config.json: "ociVersion" is a required property'),
    ("oci-version-type", lambda c: c.update(ociVersion=5), 'config.json: ociVersion: 5 is not of type "string"'),
    ("namespace-type", lambda c: c["linux"]["namespaces"].append({"type": "foo"}),
     'config.json: linux.namespaces[6].type: "foo" is not one of ['),
    ("namespace-duplicate", lambda c: c["linux"]["namespaces"].append({"type": "pid"}),
     'config.json: linux.namespaces[6].type: namespace "pid" is listed more than once'),
    ("namespace-path-relative", lambda c: _set_ns_path(c, "network", "proc/1/ns/net"),
     "config.json: linux.namespaces[1].path"),
    ("userns-without-uid-maps", lambda c: c["linux"]["namespaces"].append({"type": "user"}),
     "config.json: linux.uidMappings: required when a new user namespace is created"),
    ("uid-maps-without-userns", lambda c: c["linux"].update(
        uidMappings=[{"containerID": 0, "hostID": 1000, "size": 1}],
        gidMappings=[{"containerID": 0, "hostID": 1000, "size": 1}]),
     "config.json: linux.uidMappings: mappings are set but linux.namespaces has no user namespace"),
    ("mount-idmap-without-option", lambda c: c["mounts"].append(
        {"destination": "/data", "type": "bind", "source": "/tmp", "options": ["rbind"],
         "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
         "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}),
     "config.json: mounts[7]: uidMappings/gidMappings need the idmap or ridmap option"),
    ("mount-host-dev", lambda c: c["mounts"].append(
        {"destination": "/dev", "type": "bind", "source": "/dev", "options": ["rbind"]}),
     "config.json: mounts[7]: bind-mounting the host's /dev"),
    ("sysctl-net-without-netns", lambda c: (
        _drop_ns(c, "network"), c["linux"].update(sysctl={"net.ipv4.ip_forward": "1"})),
     "config.json: linux.sysctl.net.ipv4.ip_forward: needs a private network namespace"),
    ("sysctl-ipc-without-ipcns", lambda c: (
        _drop_ns(c, "ipc"), c["linux"].update(sysctl={"kernel.shmmax": "1000"})),
     "config.json: linux.sysctl.kernel.shmmax: needs a private IPC namespace"),
    ("sysctl-net-in-the-hosts-netns", lambda c: (
        _set_ns_path(c, "network", f"/proc/{os.getpid()}/ns/net"),
        c["linux"].update(sysctl={"net.ipv4.ip_forward": "1"})),
     "config.json: linux.sysctl.net.ipv4.ip_forward: not allowed in the host's network namespace"),
    ("hostname-in-the-hosts-uts-ns", lambda c: _set_ns_path(c, "uts", f"/proc/{os.getpid()}/ns/uts"),
     "config.json: hostname: cannot be set in the host's UTS namespace"),
    ("sysctl-not-namespaced", lambda c: c["linux"].update(sysctl={"vm.swappiness": "10"}),
     "config.json: linux.sysctl.vm.swappiness: is not namespaced"),
    ("capability-unknown", lambda c: c["process"]["capabilities"]["bounding"].append("CAP_FOO"),
     'config.json: process.capabilities.bounding[14]: unknown capability "CAP_FOO"'),
    ("capability-effective-not-permitted", lambda c: c["process"]["capabilities"]["effective"].append("CAP_SYS_ADMIN"),
     "config.json: process.capabilities.effective[14]: CAP_SYS_ADMIN is not in the permitted set"),
    ("capability-inheritable-not-bounding", lambda c: c["process"]["capabilities"].update(
        inheritable=["CAP_SYS_ADMIN"]),
     "config.json: process.capabilities.inheritable[0]: CAP_SYS_ADMIN is not in the bounding set"),
    ("rlimit-duplicate", lambda c: c["process"]["rlimits"].append({"type": "RLIMIT_NOFILE", "hard": 1, "soft": 1}),
     "config.json: process.rlimits[1].type: RLIMIT_NOFILE is listed more than once"),
    ("rlimit-soft-above-hard", lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_NOFILE", "hard": 1, "soft": 2}]),
     "config.json: process.rlimits[0]: soft limit 2 is above hard limit 1"),
    ("rlimit-unknown", lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_FOO", "hard": 1, "soft": 1}]),
     'config.json: process.rlimits[0].type: "RLIMIT_FOO" is not one of ['),
    ("rootfs-missing", lambda c: c["root"].update(path="/nonexistent/rootfs"),
     "config.json: root.path: /nonexistent/rootfs is not a directory"),
    ("root-missing", lambda c: c.pop("root"), "config.json: root: required"),
    ("process-missing", lambda c: c.pop("process"), "config.json: process: required"),
    ("args-empty", lambda c: c["process"].update(args=[]), "config.json: process.args"),
    ("cwd-relative", lambda c: c["process"].update(cwd="tmp"), "config.json: process.cwd"),
    ("env-without-equals", lambda c: c["process"]["env"].append("JUSTANAME"),
     'config.json: process.env[2]: invalid environment variable "JUSTANAME"'),
    ("oom-score-adj-out-of-range", lambda c: c["process"].update(oomScoreAdj=5000),
     "config.json: process.oomScoreAdj: 5000 is outside"),
    ("uid-not-integer", lambda c: c["process"]["user"].update(uid="root"),
     'config.json: process.user.uid: "root" is not of type "integer"'),
    ("device-outside-dev", lambda c: c["linux"].update(devices=[{"type": "c", "path": "/tmp/null", "major": 1, "minor": 3}]),
     "config.json: linux.devices[0].path: must be under /dev"),
    ("hostname-without-uts", lambda c: _drop_ns(c, "uts"),
     "config.json: hostname: cannot be set without a private UTS namespace"),
    ("time-offsets-without-timens", lambda c: c["linux"].update(timeOffsets={"monotonic": {"secs": 1}}),
     "config.json: linux.timeOffsets: needs a new time namespace"),
    ("time-offsets-unknown-clock", lambda c: (
        c["linux"]["namespaces"].append({"type": "time"}), c["linux"].update(timeOffsets={"realtime": {"secs": 1}})),
     "config.json: linux.timeOffsets.realtime: the kernel can only offset monotonic and boottime"),
    ("time-offsets-nanosecs", lambda c: (
        c["linux"]["namespaces"].append({"type": "time"}),
        c["linux"].update(timeOffsets={"boottime": {"secs": 1, "nanosecs": 1_000_000_000}})),
     "config.json: linux.timeOffsets.boottime.nanosecs: must be below 1000000000"),
    ("propagation-unknown", lambda c: c["linux"].update(rootfsPropagation="bogus"),
     'config.json: linux.rootfsPropagation: "bogus" is not one of'),
    ("hook-path-relative", lambda c: c.update(hooks={"prestart": [{"path": "bin/true"}]}),
     "config.json: hooks.prestart[0].path"),
    ("seccomp-errno-ret-without-errno-action", lambda c: c["linux"].update(
        seccomp={"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1}),
     "config.json: linux.seccomp.defaultErrnoRet: SCMP_ACT_ALLOW does not return an errno"),
    ("terminal-without-console-socket", lambda c: c["process"].update(terminal=True),
     "cannot allocate tty if runc will detach without setting console socket"),
]

# Broken in ways only the init can find: these fail after the state directory, the cgroup
# and the init exist, so they test the clean-up.
BROKEN_LATE = [
    ("cwd-not-a-directory", lambda c: c["process"].update(cwd="/bin/busybox"), "process.cwd '/bin/busybox'"),
    ("additional-gid-not-mapped", lambda c: (
        c["linux"]["namespaces"].append({"type": "user"}),
        c["linux"].update(uidMappings=[{"containerID": 0, "hostID": 100000, "size": 65536}],
                          gidMappings=[{"containerID": 0, "hostID": 100000, "size": 65536}]),
        c["process"]["user"].update(additionalGids=[70000])),
     "process.user.additionalGids [70000]: setgroups: Invalid argument"),
    ("uid-not-mapped", lambda c: (
        c["linux"]["namespaces"].append({"type": "user"}),
        c["linux"].update(uidMappings=[{"containerID": 0, "hostID": 100000, "size": 1000}],
                          gidMappings=[{"containerID": 0, "hostID": 100000, "size": 65536}]),
        c["process"]["user"].update(uid=5000)),
     "process.user.uid 5000: Invalid argument (not mapped in the user namespace?)"),
    ("rlimit-hard-above-the-runtimes", lambda c: c["process"].update(
        rlimits=[{"type": "RLIMIT_NOFILE", "soft": 2**30, "hard": 2**30}]),
     "process.rlimits[0] (RLIMIT_NOFILE 1073741824/1073741824): not allowed to raise maximum limit"),
    ("executable-missing", lambda c: c["process"].update(args=["no-such-binary"]),
     'exec: "no-such-binary": executable file not found in $PATH'),
    ("executable-is-a-directory", lambda c: c["process"].update(args=["/etc"]), 'exec: "/etc": is a directory'),
    ("mount-type-unknown", lambda c: c["mounts"].append({"destination": "/mnt", "type": "nosuchfs", "source": "x"}),
     "mounts[7] (nosuchfs on /mnt)"),
    ("sysctl-unknown", lambda c: c["linux"].update(sysctl={"net.ipv4.no_such_knob": "1"}), "no_such_knob"),
    ("namespace-path-missing", lambda c: _set_ns_path(c, "ipc", "/proc/999999999/ns/ipc"),
     "linux.namespaces[2].path: cannot open /proc/999999999/ns/ipc"),
    ("namespace-path-wrong-type", lambda c: _set_ns_path(c, "network", "/proc/self/ns/uts"),
     "linux.namespaces[1].path: /proc/self/ns/uts is a uts namespace, not a network namespace"),
    ("time-offset-refused-by-the-kernel", lambda c: (
        c["linux"]["namespaces"].append({"type": "time"}),
        c["linux"].update(timeOffsets={"boottime": {"secs": -(10**12)}})),
     "linux.timeOffsets.boottime (-1000000000000s 0ns): "),
    ("create-runtime-hook-fails", lambda c: c.update(hooks={"createRuntime": [{"path": "/bin/false"}]}),
     "createRuntime[0]: hook /bin/false failed: exit status 1"),
]


@pytest.mark.parametrize("name,breaks,expected", BROKEN + BROKEN_LATE, ids=[b[0] for b in BROKEN + BROKEN_LATE])
def test_broken_config_fails_cleanly(pyrunc, make_bundle, workdir: Path, name: str, breaks, expected: str) -> None:  # type: ignore[no-untyped-def]
    bundle = make_bundle(["true"])
    edit_config(bundle, breaks)
    cid = new_id()
    snap = HostSnapshot(pyrunc, workdir, cid)
    p = pyrunc("create", "-b", str(bundle), cid, check=False)
    assert p.returncode != 0
    assert expected in error_messages(p.stderr), p.stderr
    assert p.stdout == ""
    snap.assert_unchanged()


def test_invalid_json(pyrunc, make_bundle, workdir: Path) -> None:
    bundle = make_bundle(["true"])
    (bundle / "config.json").write_text('{"ociVersion": "1.3.0", "process": ')
    cid = new_id()
    snap = HostSnapshot(pyrunc, workdir, cid)
    p = pyrunc("create", "-b", str(bundle), cid, check=False)
    assert p.returncode == 1
    assert "config.json: invalid JSON" in error_messages(p.stderr)
    snap.assert_unchanged()


def test_missing_config_json_names_the_file(pyrunc, tmp_path: Path, workdir: Path) -> None:
    cid = new_id()
    snap = HostSnapshot(pyrunc, workdir, cid)
    p = pyrunc("create", "-b", str(tmp_path / "nowhere"), cid, check=False)
    assert p.returncode == 1
    assert str(tmp_path / "nowhere" / "config.json") in error_messages(p.stderr)
    snap.assert_unchanged()


def test_run_fails_the_same_way(pyrunc, make_bundle, workdir: Path) -> None:
    bundle = make_bundle(["no-such-binary"])
    cid = new_id()
    snap = HostSnapshot(pyrunc, workdir, cid)
    p = pyrunc("run", "-b", str(bundle), cid, check=False)
    assert p.returncode != 0
    assert "executable file not found in $PATH" in error_messages(p.stderr)
    snap.assert_unchanged()


def test_json_log_carries_the_message_for_engines(pyrunc, make_bundle, tmp_path: Path) -> None:
    bundle = make_bundle(["true"])
    edit_config(bundle, lambda c: c["linux"]["namespaces"].append({"type": "foo"}))
    log = tmp_path / "log.json"
    p = pyrunc("--log", str(log), "--log-format=json", "create", "-b", str(bundle), new_id(), check=False)
    assert p.returncode == 1
    (line,) = log.read_text().splitlines()
    rec = json.loads(line)
    assert rec["level"] == "error"
    assert rec["msg"].startswith('config.json: linux.namespaces[6].type: "foo" is not one of [')
    assert rec["msg"] in p.stderr  # the plain text goes to stderr as well


@pytest.mark.parametrize("argv,expected", [
    (["create"], '"create" requires exactly 1 argument(s)'),
    (["create", "-b", "{bundle}", "a", "b"], '"create" requires exactly 1 argument(s)'),
    (["create", "--bogus", "-b", "{bundle}", "{id}"], "flag provided but not defined: -bogus"),
    (["create", "-b", "{bundle}", "--pid-file"], "flag needs an argument: -pid-file"),
    (["create", "--preserve-fds", "lots", "-b", "{bundle}", "{id}"], 'invalid value "lots" for flag -preserve-fds'),
    (["create", "-b", "{bundle}", "--console-socket", "/tmp/nowhere.sock", "{id}"],
     "cannot use console socket if runc will not detach or allocate tty"),
    (["create", "-b", "{bundle}", "--pidfd-socket", "/tmp/x.sock", "{id}"],
     "failed to dail /tmp/x.sock: dial unix /tmp/x.sock: connect: no such file or directory"),
    (["create", "-b", "{bundle}", "../{id}"], "invalid container id"),
    (["--systemd-cgroup", "create", "-b", "{bundle}", "{id}"], "systemd cgroup driver is not supported"),
    (["--rootless", "perhaps", "create", "-b", "{bundle}", "{id}"], 'invalid --rootless value "perhaps"'),
    (["--log-format", "yaml", "create", "-b", "{bundle}", "{id}"], "invalid log-format: yaml"),
    (["run", "--detach=maybe", "-b", "{bundle}", "{id}"], 'invalid boolean value "maybe" for -detach'),
    (["start", "{id}"], "container does not exist"),
    (["kill", "{id}", "SIGNOPE"], "SIGNOPE"),
    (["delete", "{id}"], "container does not exist"),
    (["exec", "{id}", "true"], "container does not exist"),
])
def test_broken_argv_fails_cleanly(pyrunc, make_bundle, workdir: Path, argv: list[str], expected: str) -> None:
    bundle = make_bundle(["true"])
    cid = new_id()
    snap = HostSnapshot(pyrunc, workdir, cid)
    p = pyrunc(*[a.format(bundle=bundle, id=cid) for a in argv], check=False)
    assert p.returncode != 0
    assert expected in error_messages(p.stderr), p.stderr
    snap.assert_unchanged()


def test_validate_lists_every_problem(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["true"])
    edit_config(bundle, lambda c: (
        c["linux"]["namespaces"].append({"type": "pid"}),
        c["linux"].update(sysctl={"vm.swappiness": "1"}),
        c["mounts"].append({"destination": "/rel", "type": "bind", "source": "/tmp", "options": ["rbind"],
                            "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
                            "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}),
        c["process"]["capabilities"]["bounding"].append("CAP_NOPE"),
    ))
    p = pyrunc("validate", "--bundle", str(bundle), check=False)
    assert p.returncode == 1
    lines = p.stderr.splitlines()
    for needle in ("linux.namespaces[6].type", "linux.sysctl.vm.swappiness", "mounts[7]:",
                   "process.capabilities.bounding[14]"):
        assert sum(needle in line for line in lines) == 1, (needle, lines)
    assert all(line.startswith("config.json: ") for line in lines)
    # schema problems are all listed too
    edit_config(bundle, lambda c: (c.update(ociVersion=1), c["process"].update(cwd=7)))
    p2 = pyrunc("validate", "-b", str(bundle), check=False)
    assert p2.returncode == 1
    assert "ociVersion: 1 is not of type" in p2.stderr and "process.cwd: 7 is not of type" in p2.stderr


def test_validate_accepts_a_good_config(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["true"])
    p = pyrunc("validate", "--bundle", str(bundle))
    assert p.returncode == 0 and p.stderr == ""
    assert "valid" in p.stdout


def test_spec_writes_configs_that_validate_and_run(pyrunc, tmp_path: Path, rootfs: Path) -> None:
    plain, rootless = tmp_path / "plain", tmp_path / "rootless"
    for d in (plain, rootless):
        d.mkdir()
        (d / "rootfs").symlink_to(rootfs)
    pyrunc("spec", "--bundle", str(plain))
    pyrunc("spec", "--rootless", "-b", str(rootless))
    for d in (plain, rootless):
        assert pyrunc("validate", "-b", str(d)).returncode == 0, d
    again = pyrunc("spec", "-b", str(plain), check=False)
    assert again.returncode == 1 and "config.json exists" in again.stderr
    rl = read_config(rootless)
    assert "user" in [n["type"] for n in rl["linux"]["namespaces"]]
    assert rl["linux"]["uidMappings"] == [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]

    cfg = read_config(plain)
    assert cfg["ociVersion"] == "1.3.0" and cfg["process"]["terminal"] is True
    cfg["process"]["args"] = ["sh", "-c", "echo spec-ran"]
    cfg["process"]["terminal"] = False
    write_config(plain, cfg)
    p = pyrunc("run", "-b", str(plain), new_id())
    assert p.stdout == "spec-ran\n"
