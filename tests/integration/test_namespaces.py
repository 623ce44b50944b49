"""linux.namespaces, uid/gid mappings and timeOffsets, checked through /proc/PID/ns/* from outside
and through what the container sees inside."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from conftest import edit_config, needs_root, new_id

pytestmark = needs_root

READY = "__ready__"
PROC_NAMES = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts",
              "user": "user", "cgroup": "cgroup", "time": "time"}


class Running:
    """create (stdout/stderr to files) + start; ``wait_ready`` returns what was printed before READY."""

    def __init__(self, pyrunc, bundle: Path) -> None:  # type: ignore[no-untyped-def]
        self.pyrunc = pyrunc
        self.id = new_id()
        self.out = bundle / f"{self.id}.out"
        err_path = bundle / f"{self.id}.err"
        with open(self.out, "w") as out, open(err_path, "w") as err:
            p = pyrunc("create", "-b", str(bundle), self.id, stdout=out, stderr=err, check=False)
        assert p.returncode == 0, f"create failed: {err_path.read_text()}"
        self.pid = pyrunc.state(self.id)["pid"]
        pyrunc("start", self.id)

    def wait_ready(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while READY not in self.out.read_text():
            assert time.monotonic() < deadline, f"not ready: {self.out.read_text()!r}"
            time.sleep(0.01)
        return self.out.read_text().split(READY)[0]

    def ns(self, name: str) -> str:
        return os.readlink(f"/proc/{self.pid}/ns/{name}")

    def delete(self) -> None:
        self.pyrunc("delete", "--force", self.id)


def script_bundle(make_bundle, script: str, **options):  # type: ignore[no-untyped-def]
    return make_bundle(["sh", "-c", f"{script}\necho {READY}; exec sleep 100"], **options)


def host_ns(name: str) -> str:
    return os.readlink(f"/proc/self/ns/{name}")


def test_new_namespaces_differ_from_the_host(pyrunc, make_bundle) -> None:
    inside = " ".join(f"/proc/self/ns/{n}" for n in PROC_NAMES.values())
    bundle = script_bundle(make_bundle, f"for l in {inside}; do readlink $l; done")
    c = Running(pyrunc, bundle)
    seen = c.wait_ready().split()
    for t, name in PROC_NAMES.items():
        new = t in ("pid", "network", "ipc", "uts", "mount", "cgroup")
        assert (c.ns(name) != host_ns(name)) == new, t
    # inside, the process sees the very namespaces the host sees it in (the shell's are its init's)
    assert seen == [c.ns(n) for n in PROC_NAMES.values()]
    c.delete()


def test_absent_namespaces_are_the_hosts(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["sleep", "100"])
    edit_config(bundle, lambda c: (
        c.pop("hostname"),
        c["linux"].update(namespaces=[{"type": "mount"}, {"type": "pid"}]),
        # without a network namespace the container's sysfs cannot be mounted; bind the host's
        c.update(mounts=[m if m["destination"] != "/sys" else
                         {"destination": "/sys", "type": "bind", "source": "/sys",
                          "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
                         for m in c["mounts"] if m["destination"] != "/sys/fs/cgroup"])))
    c = Running(pyrunc, bundle)
    for t, name in PROC_NAMES.items():
        assert (c.ns(name) != host_ns(name)) == (t in ("mount", "pid")), t
    c.delete()


def test_joining_another_containers_network_and_ipc_namespaces(pyrunc, make_bundle) -> None:
    first = make_bundle(["sleep", "100"])
    edit_config(first, lambda c: c["linux"].update(sysctl={"net.ipv4.ip_unprivileged_port_start": "83"}))
    a = Running(pyrunc, first)
    second = script_bundle(make_bundle, "cat /proc/sys/net/ipv4/ip_unprivileged_port_start", hostname="second")

    def join(c: dict) -> None:
        for ns in c["linux"]["namespaces"]:
            if ns["type"] in ("network", "ipc"):
                ns["path"] = f"/proc/{a.pid}/ns/{PROC_NAMES[ns['type']]}"
    edit_config(second, join)
    b = Running(pyrunc, second)
    assert b.wait_ready() == "83\n"  # the sysctl the first container set in its network namespace
    assert b.ns("net") == a.ns("net") != host_ns("net")
    assert b.ns("ipc") == a.ns("ipc") != host_ns("ipc")
    for other in ("uts", "mnt", "pid"):
        assert b.ns(other) not in (a.ns(other), host_ns(other)), other
    b.delete()
    a.delete()


def test_joining_a_namespace_of_the_wrong_type_fails_clearly(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["true"])

    def join(c: dict) -> None:
        for ns in c["linux"]["namespaces"]:
            if ns["type"] == "network":
                ns["path"] = "/proc/self/ns/ipc"  # resolved by the init: an ipc namespace
    edit_config(bundle, join)
    cid = new_id()
    p = pyrunc("create", "-b", str(bundle), cid, check=False)
    assert p.returncode == 1
    assert "network" in p.stderr and "/proc/self/ns/ipc" in p.stderr
    assert cid not in pyrunc.ids()


def test_joining_a_missing_namespace_path_names_it(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["true"])

    def join(c: dict) -> None:
        for ns in c["linux"]["namespaces"]:
            if ns["type"] == "ipc":
                ns["path"] = "/proc/999999999/ns/ipc"
    edit_config(bundle, join)
    cid = new_id()
    p = pyrunc("create", "-b", str(bundle), cid, check=False)
    assert p.returncode == 1
    assert "linux.namespaces" in p.stderr and "/proc/999999999/ns/ipc" in p.stderr
    assert "No such file or directory" in p.stderr
    assert cid not in pyrunc.ids()


def test_user_namespace_maps_root_to_100000(pyrunc, make_bundle) -> None:
    bundle = script_bundle(make_bundle, "id; touch /tmp/made; stat -c '%u:%g' /tmp/made /bin/busybox",
                           userns=True)
    edit_config(bundle, lambda c: c["mounts"].append(
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]}))
    c = Running(pyrunc, bundle)
    out = c.wait_ready().splitlines()
    assert out[0] == "uid=0(root) gid=0(root)"
    assert out[1] == "0:0"  # the file the container's root made belongs to it
    assert out[2] == "65534:65534"  # the host's root is not mapped: nobody
    assert c.ns("user") != host_ns("user")
    assert Path(f"/proc/{c.pid}/uid_map").read_text().split() == ["0", "100000", "65536"]
    assert Path(f"/proc/{c.pid}/gid_map").read_text().split() == ["0", "100000", "65536"]
    status = dict(line.split(":", 1) for line in Path(f"/proc/{c.pid}/status").read_text().splitlines())
    assert status["Uid"].split() == ["100000"] * 4
    assert status["Gid"].split() == ["100000"] * 4
    st = os.stat(f"/proc/{c.pid}/root/tmp/made")
    assert (st.st_uid, st.st_gid) == (100000, 100000)
    c.delete()


def test_time_namespace_offsets(pyrunc, make_bundle) -> None:
    boot, mono = 1_000_000, 500_000
    bundle = script_bundle(make_bundle, "cat /proc/uptime")
    edit_config(bundle, lambda c: (
        c["linux"]["namespaces"].append({"type": "time"}),
        c["linux"].update(timeOffsets={"boottime": {"secs": boot, "nanosecs": 0},
                                       "monotonic": {"secs": mono, "nanosecs": 250}})))
    c = Running(pyrunc, bundle)
    inside = float(c.wait_ready().split()[0])
    host = float(Path("/proc/uptime").read_text().split()[0])
    assert c.ns("time") != host_ns("time")
    offsets = {line.split()[0]: line.split()[1:] for line in
               Path(f"/proc/{c.pid}/timens_offsets").read_text().splitlines()}
    assert offsets == {"monotonic": [str(mono), "250"], "boottime": [str(boot), "0"]}
    assert abs(inside - (host + boot)) < 5, (inside, host)
    c.delete()


def test_loopback_is_up_in_a_new_network_namespace(pyrunc, make_bundle) -> None:
    # runc brings lo up (libcontainer's loopback strategy); engines rely on 127.0.0.1 working
    bundle = script_bundle(make_bundle, "ip -o link show lo")
    c = Running(pyrunc, bundle)
    inside = c.wait_ready()
    assert "<LOOPBACK,UP" in inside, inside
    outside = subprocess.run(["nsenter", "-t", str(c.pid), "-n", "ip", "-o", "link", "show", "lo"],
                             check=True, capture_output=True, text=True).stdout
    assert "LOOPBACK,UP" in outside
    c.delete()


def test_joining_another_containers_user_namespace(pyrunc, make_bundle) -> None:
    # a pod: the first container makes the user namespace, the second joins it by path and
    # creates its other namespaces (and its /dev, /tmp ... mounts) inside it
    a = Running(pyrunc, make_bundle(["sleep", "100"], userns=True))
    second = script_bundle(make_bundle, "id; touch /tmp/made; stat -c '%u:%g' /tmp/made")

    def join(c: dict) -> None:
        c["linux"]["namespaces"].append({"type": "user", "path": f"/proc/{a.pid}/ns/user"})
        c["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"})
    edit_config(second, join)
    b = Running(pyrunc, second)
    assert b.wait_ready().splitlines() == ["uid=0(root) gid=0(root)", "0:0"]
    assert b.ns("user") == a.ns("user") != host_ns("user")
    assert b.ns("net") != a.ns("net")
    assert Path(f"/proc/{b.pid}/uid_map").read_text().split() == ["0", "100000", "65536"]
    assert os.stat(f"/proc/{b.pid}/root/tmp/made").st_uid == 100000
    b.delete()
    a.delete()
