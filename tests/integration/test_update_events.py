"""``update`` and ``events`` on real containers, on this host's layout (v1 here; v2 in cgroup2-vm).

update: what the kernel's files say (outside), what the container reads in its own cgroup
(inside), and the config persisted in the state directory must all agree; bad input fails
naming the flag or JSON path and changes none of them.  events: real numbers in runc's
JSON shape, and an ``oom`` line for an OOM kill.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import edit_config, needs_root, new_id, proc_cgroups
from pyrunc.cgroups import detect_layout
from pyrunc.cgroups.resources import shares_to_weight

pytestmark = [needs_root, pytest.mark.cgroup2]
LAYOUT = detect_layout()
MiB = 1 << 20
V1_UNLIMITED = "9223372036854771712"  # memory.limit_in_bytes of "no limit" (4 KiB pages)

# v2 file, v1 (controller, file) for each setting the tests look at
FILES = {
    "memory": ("memory.max", "memory", "memory.limit_in_bytes"),
    "reservation": ("memory.low", "memory", "memory.soft_limit_in_bytes"),
    "shares": ("cpu.weight", "cpu", "cpu.shares"),
    "quota": ("cpu.max", "cpu", "cpu.cfs_quota_us"),
    "pids": ("pids.max", "pids", "pids.max"),
    "cpus": ("cpuset.cpus", "cpuset", "cpuset.cpus"),
}


def cgroup_dir(pid: int, controller: str) -> Path:
    if LAYOUT == "v2":
        return Path("/sys/fs/cgroup") / proc_cgroups(pid)[""].lstrip("/")
    return Path("/sys/fs/cgroup") / controller / proc_cgroups(pid)[controller].lstrip("/")


def setting(pid: int, name: str) -> str:
    v2_file, controller, v1_file = FILES[name]
    if LAYOUT == "v2":
        return (cgroup_dir(pid, "") / v2_file).read_text().strip()
    return (cgroup_dir(pid, controller) / v1_file).read_text().strip()


def persisted(pyrunc, cid: str) -> dict:  # type: ignore[no-untyped-def]
    return json.loads((pyrunc.root / cid / "config.json").read_text())["linux"].get("resources", {})


# The container prints the memory limit of its own cgroup (as it sees it through its cgroup
# namespace) every 0.1 s: the "inside" view of an update.
INSIDE_LIMIT = ("while :; do cat /sys/fs/cgroup/memory.max 2>/dev/null "
                "|| cat /sys/fs/cgroup/memory/memory.limit_in_bytes; sleep 0.1; done")


@pytest.fixture
def limited(pyrunc, make_bundle, tmp_path):  # type: ignore[no-untyped-def]
    """A running container with some limits set at create time; yields (id, pid, stdout file)."""
    cid = new_id()
    bundle = make_bundle(["sh", "-c", INSIDE_LIMIT])
    edit_config(bundle, lambda c: c["linux"]["resources"].update(
        memory={"limit": 64 * MiB}, cpu={"shares": 512}, pids={"limit": 30}))
    out = tmp_path / "stdout"
    with open(out, "wb") as f:
        pyrunc("create", "-b", str(bundle), cid, stdout=f)
    pyrunc("start", cid)
    yield cid, pyrunc.state(cid)["pid"], out
    pyrunc("delete", "--force", cid)


def wait_inside(out: Path, want: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        lines = out.read_text().split()
        last = lines[-1] if lines else ""
        if last == want:
            return last
        time.sleep(0.1)
    return last


def memory_value(n: int) -> str:
    if n == -1:
        return "max" if LAYOUT == "v2" else V1_UNLIMITED
    return str(n)


# ------------------------------------------------------------------------------------ update


def test_update_with_flags(pyrunc, limited) -> None:
    cid, pid, out = limited
    assert setting(pid, "memory") == memory_value(64 * MiB)
    assert wait_inside(out, memory_value(64 * MiB)) == memory_value(64 * MiB)
    pyrunc("update", "--memory", "48m", "--memory-reservation", "16M", "--cpu-share", "256",
           "--cpu-quota", "30000", "--cpu-period", "100000", "--pids-limit", "25", "--cpuset-cpus", "0", cid)
    assert setting(pid, "memory") == str(48 * MiB)
    assert setting(pid, "reservation") == str(16 * MiB)
    assert setting(pid, "pids") == "25"
    assert setting(pid, "cpus") == "0"
    if LAYOUT == "v2":
        assert setting(pid, "shares") == str(shares_to_weight(256))
        assert setting(pid, "quota") == "30000 100000"
    else:
        assert setting(pid, "shares") == "256"
        assert setting(pid, "quota") == "30000"
    assert wait_inside(out, str(48 * MiB)) == str(48 * MiB)
    res = persisted(pyrunc, cid)
    assert res["memory"] == {"limit": 48 * MiB, "reservation": 16 * MiB}
    assert res["cpu"] == {"shares": 256, "quota": 30000, "period": 100000, "cpus": "0"}
    assert res["pids"] == {"limit": 25}
    assert res["devices"], "the config's device rules must survive an update"
    assert pyrunc.state(cid)["status"] == "running"


def test_update_with_a_file_then_stdin(pyrunc, limited, tmp_path) -> None:
    cid, pid, out = limited
    # what engines send: every field, zeros meaning "leave it"
    doc = {"memory": {"limit": 96 * MiB, "reservation": 0, "swap": 0},
           "cpu": {"shares": 0, "quota": 40000, "period": 0, "cpus": "", "mems": ""},
           "blockIO": {"weight": 0}, "pids": {"limit": 0}}
    (tmp_path / "r.json").write_text(json.dumps(doc))
    pyrunc("update", "--resources", str(tmp_path / "r.json"), "--memory", "1g", cid)  # flags ignored
    assert setting(pid, "memory") == str(96 * MiB)
    assert setting(pid, "pids") == "30"  # unchanged
    if LAYOUT == "v2":
        assert setting(pid, "quota") == "40000 100000"
        assert setting(pid, "shares") == str(shares_to_weight(512))
    else:
        assert setting(pid, "quota") == "40000"
        assert setting(pid, "shares") == "512"
    assert wait_inside(out, str(96 * MiB)) == str(96 * MiB)
    res = persisted(pyrunc, cid)
    assert res["memory"] == {"limit": 96 * MiB} and res["cpu"] == {"shares": 512, "quota": 40000}
    stats = json.loads(pyrunc("events", "--stats", cid).stdout)["data"]
    assert stats["memory"]["usage"]["limit"] == 96 * MiB

    # containerd: LinuxResources on stdin; a limit of -1 makes swap unlimited too (runc)
    pyrunc("update", "-r", "-", cid, input=json.dumps({"memory": {"limit": -1}, "pids": {"limit": 40}}))
    assert setting(pid, "memory") == memory_value(-1)
    assert setting(pid, "pids") == "40"
    assert wait_inside(out, memory_value(-1)) == memory_value(-1)
    res = persisted(pyrunc, cid)
    assert res["memory"] == {"limit": -1, "swap": -1} and res["pids"] == {"limit": 40}


def test_update_of_a_stopped_container_fails(pyrunc, make_bundle) -> None:
    cid = new_id()
    bundle = make_bundle(["true"])
    pyrunc("run", "--keep", "-b", str(bundle), cid)
    try:
        assert pyrunc.state(cid)["status"] == "stopped"
        before = (pyrunc.root / cid / "config.json").read_bytes()
        p = pyrunc("update", "--memory", "64m", cid, check=False)
        assert p.returncode != 0 and "container not running" in p.stderr, p.stderr
        assert (pyrunc.root / cid / "config.json").read_bytes() == before
        p = pyrunc("events", "--stats", cid, check=False)
        assert p.returncode != 0 and f"container with id {cid} is not running" in p.stderr, p.stderr
    finally:
        pyrunc("delete", cid)


BAD = [
    (["--memory", "12x"], None, "invalid value for memory"),
    (["--cpu-share", "abc"], None, "invalid value for cpu-share"),
    (["--pids-limit", "lots"], None, "-pids-limit"),
    (["--cpu-quota", "1.5"], None, "invalid value for cpu-quota"),
    (["-r", "-"], '{"blockIO": {"weight": 5}}', "blockIO.weight"),
    (["--memory", "40m", "--cpuset-cpus", "4096"], None, "linux.resources.cpu.cpus"),
    (["--memory", "40m", "--memory-swap", "20m"], None, "memory.swap"),
    (["-r", "-"], '{"memory": {"limit": "big"}}', "memory.limit"),
    (["-r", "-"], '{"cpu": {"shares": -5}}', "cpu.shares"),
    (["-r", "-"], '{"memory": {"limit": 41943040}, "unified": {"memory.nosuchfile": "1"}}', "linux.resources.unified"),
    (["-r", "-"], "not json", "invalid JSON"),
    (["-r", "/nonexistent/r.json"], None, "/nonexistent/r.json"),
]


@pytest.mark.parametrize(("argv", "stdin", "named"), BAD, ids=[" ".join(b[0]) + (b[1] or "") for b in BAD])
def test_update_with_bad_values_changes_nothing(pyrunc, limited, argv, stdin, named) -> None:
    cid, pid, out = limited
    before = (pyrunc.root / cid / "config.json").read_bytes()
    files = {name: setting(pid, name) for name in FILES}
    p = pyrunc("update", *argv, cid, check=False, input=stdin)
    assert p.returncode != 0
    assert named in p.stderr, p.stderr
    assert (pyrunc.root / cid / "config.json").read_bytes() == before
    assert {name: setting(pid, name) for name in FILES} == files
    assert wait_inside(out, memory_value(64 * MiB)) == memory_value(64 * MiB)


# ------------------------------------------------------------------------------------ events


def test_events_stats_shape_and_numbers(pyrunc, make_bundle) -> None:
    cid = new_id()
    bundle = make_bundle(["sh", "-c", "sleep 100 & sleep 100 & i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; wait"])
    edit_config(bundle, lambda c: c["linux"]["resources"].update(memory={"limit": 64 * MiB}, pids={"limit": 50}))
    pyrunc("run", "-d", "-b", str(bundle), cid, stdout=subprocess.DEVNULL)
    try:
        pid = pyrunc.state(cid)["pid"]
        procs = cgroup_dir(pid, "pids") / "cgroup.procs"
        deadline = time.monotonic() + 10
        while len(procs.read_text().split()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        p = pyrunc("events", "--stats", cid)
        lines = p.stdout.splitlines()
        assert len(lines) == 1, p.stdout
        event = json.loads(lines[0])
        assert list(event) == ["type", "id", "data"] and event["type"] == "stats" and event["id"] == cid
        data = event["data"]
        assert list(data) == ["cpu", "cpuset", "memory", "pids", "blkio", "hugetlb", "intel_rdt",
                              "network_interfaces"]
        assert data["pids"] == {"current": len(procs.read_text().split()), "limit": 50}
        assert data["pids"]["current"] == 3
        mem = data["memory"]
        assert mem["usage"]["usage"] > 0 and mem["usage"]["limit"] == 64 * MiB
        assert set(mem["usage"]) <= {"limit", "usage", "max", "failcnt"} and "failcnt" in mem["usage"]
        assert {"swap", "kernel", "kernelTCP"} <= set(mem) and mem["raw"]
        assert ("anon" if LAYOUT == "v2" else "rss") in mem["raw"]
        cpu = data["cpu"]["usage"]
        assert cpu["total"] > 0 and isinstance(cpu["kernel"], int) and isinstance(cpu["user"], int)
        assert isinstance(data["cpu"]["throttling"], dict)
        assert isinstance(data["blkio"], dict) and isinstance(data["hugetlb"], dict)
        assert data["network_interfaces"] is None and data["intel_rdt"] == {}
        if data["cpuset"].get("cpus"):
            assert data["cpuset"]["cpus"] == sorted(data["cpuset"]["cpus"])
    finally:
        pyrunc("delete", "--force", cid)


@pytest.mark.parametrize(("interval", "message"), [("0s", "duration interval must be greater than 0"),
                                                   ("5", "for flag -interval: parse error"),
                                                   ("1x", "for flag -interval: parse error")])
def test_events_bad_interval(pyrunc, limited, interval, message) -> None:
    cid, _pid, _out = limited
    p = pyrunc("events", "--interval", interval, cid, check=False, timeout=10)
    assert p.returncode != 0 and message in p.stderr, p.stderr


def test_events_reports_an_oom_kill_and_ends_with_the_container(pyrunc, make_bundle, tmp_path) -> None:
    cid = new_id()
    # a child eats memory (a shell variable doubling) and is OOM-killed; the init lives on a moment
    bundle = make_bundle(["sh", "-c", "(x=aaaaaaaaaaaaaaaa; while :; do x=$x$x; done); sleep 1"])
    edit_config(bundle, lambda c: c["linux"]["resources"].update(memory={"limit": 32 * MiB, "swap": 32 * MiB}))
    pyrunc("create", "-b", str(bundle), cid, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = tmp_path / "events"
    with open(out, "wb") as f:
        events = subprocess.Popen(pyrunc.argv("events", "--interval", "200ms", cid), stdout=f,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not out.read_text().strip() and time.monotonic() < deadline:  # its first stats line
            time.sleep(0.05)
        assert out.read_text().strip(), "no stats event from a created container"
        pyrunc("start", cid)
        rc = events.wait(timeout=90)  # the container stops a second after the OOM kill
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert rc == 0, lines
        assert {"type": "oom", "id": cid} in lines, lines
        assert lines.count({"type": "oom", "id": cid}) == 1
        assert all(e["type"] in ("stats", "oom") and e["id"] == cid for e in lines)
        assert pyrunc.state(cid)["status"] == "stopped"
    finally:
        if events.poll() is None:
            events.kill()
            events.wait()
        pyrunc("delete", "--force", cid)
    assert not os.path.exists(pyrunc.root / cid)
