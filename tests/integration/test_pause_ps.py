"""pause / resume / the paused status, and ps, as runc does them, on real containers.

Marked ``cgroup2``: on this hybrid host they check the v1 freezer (freezer.state), and
``test_cgroup2_vm.py`` runs them again inside cgroup2-vm for the v2 one (cgroup.freeze).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import TEST_PREFIX, needs_root, new_id
from pyrunc.cgroups import detect_layout

pytestmark = [needs_root, pytest.mark.cgroup2]
LAYOUT = detect_layout()

# three processes that stay put: the shell (init) and two sleeps
THREE = ["sh", "-c", "sleep 1000 & sleep 1001 & wait"]
# a counter on stdout, advancing every 20 ms (and forking a sleep each time)
COUNTER = ["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i; sleep 0.02; done"]


def wait_status(pyrunc, cid: str, want: str, timeout: float = 10.0) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        status = pyrunc.state(cid)["status"]
        if status == want or time.monotonic() > deadline:
            return status  # type: ignore[no-any-return]
        time.sleep(0.02)


def own_cgroup(pid: int) -> Path:
    """The directory of the cgroup that holds the freezer for ``pid`` (v1 freezer or v2 unified)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _id, controllers, path = line.split(":", 2)
        if LAYOUT == "v2" and controllers == "":
            return Path("/sys/fs/cgroup") / path.lstrip("/")
        if LAYOUT != "v2" and "freezer" in controllers.split(","):
            return Path("/sys/fs/cgroup/freezer") / path.lstrip("/")
    raise AssertionError(f"no freezer cgroup for {pid}")


def kernel_says_frozen(pid: int) -> bool:
    d = own_cgroup(pid)
    if LAYOUT == "v2":
        return "frozen 1" in (d / "cgroup.events").read_text().splitlines()
    return (d / "freezer.state").read_text().strip() == "FROZEN"


def proc_state(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("State:"):
            return line.split()[1]
    return "?"


def last_count(out: Path) -> int:
    lines = out.read_text().split()
    return int(lines[-1]) if lines else 0


def ps_json(pyrunc, cid: str) -> list[int]:  # type: ignore[no-untyped-def]
    p = pyrunc("ps", "--format", "json", cid)
    return json.loads(p.stdout)  # type: ignore[no-any-return]


def started(pyrunc, make_bundle, args: list[str], out: Path | None = None) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    cid = new_id()
    bundle = make_bundle(args)
    if out is None:
        pyrunc("create", "-b", str(bundle), cid)
    else:
        with open(out, "w") as f:
            pyrunc("create", "-b", str(bundle), cid, stdout=f)
    pyrunc("start", cid)
    return cid, pyrunc.state(cid)["pid"]


def wait_pids(pyrunc, cid: str, count: int) -> list[int]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 10
    while True:
        pids = ps_json(pyrunc, cid)
        if len(pids) >= count or time.monotonic() > deadline:
            return pids
        time.sleep(0.02)


def test_pause_freezes_every_process_and_resume_continues(pyrunc, make_bundle, tmp_path: Path) -> None:
    out = tmp_path / "counter"
    cid, init = started(pyrunc, make_bundle, COUNTER, out)
    deadline = time.monotonic() + 10
    while last_count(out) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert last_count(out) >= 3, "the counter never ran"

    pyrunc("pause", cid)
    # pause returns once the kernel reports the cgroup frozen: no waiting here
    pids = ps_json(pyrunc, cid)
    assert init in pids and len(pids) >= 1
    for pid in pids:
        assert kernel_says_frozen(pid), pid
        if LAYOUT != "v2":
            assert proc_state(pid) == "D", pid  # v1 frozen tasks sleep uninterruptibly
    st = pyrunc.state(cid)
    assert st["status"] == "paused" and st["pid"] == init
    listed = {r["id"]: r["status"] for r in json.loads(pyrunc("list", "--format", "json").stdout)}
    assert listed[cid] == "paused"
    assert " paused " in next(line for line in pyrunc("list").stdout.splitlines() if line.startswith(cid))
    frozen_at = last_count(out)
    time.sleep(0.5)
    assert last_count(out) == frozen_at, "the counter advanced while paused"
    assert ps_json(pyrunc, cid) == pids  # nothing forks while frozen

    pyrunc("resume", cid)
    assert pyrunc.state(cid)["status"] == "running"
    assert not kernel_says_frozen(init)
    deadline = time.monotonic() + 10
    while last_count(out) <= frozen_at + 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert last_count(out) > frozen_at + 2, "the counter did not resume"
    pyrunc("delete", "--force", cid)


def test_pause_resume_errors_and_exit_codes(pyrunc, make_bundle) -> None:
    missing = pyrunc("pause", "nope-" + new_id(), check=False)
    assert missing.returncode == 1 and "container does not exist" in missing.stderr
    missing = pyrunc("resume", "nope-" + new_id(), check=False)
    assert missing.returncode == 1 and "container does not exist" in missing.stderr
    usage = pyrunc("pause", check=False)
    assert usage.returncode == 1 and "requires exactly 1 argument" in usage.stderr

    cid, _init = started(pyrunc, make_bundle, ["sleep", "100"])
    not_paused = pyrunc("resume", cid, check=False)
    assert not_paused.returncode == 1 and "container not paused" in not_paused.stderr
    pyrunc("pause", cid)
    twice = pyrunc("pause", cid, check=False)  # runc: only created/running can be paused
    assert twice.returncode == 1 and "container not running" in twice.stderr
    start = pyrunc("start", cid, check=False)
    assert start.returncode == 1 and "cannot start a paused container" in start.stderr
    assert pyrunc.state(cid)["status"] == "paused"
    pyrunc("resume", cid)
    again = pyrunc("resume", cid, check=False)
    assert again.returncode == 1 and "container not paused" in again.stderr

    pyrunc("kill", cid, "KILL")
    assert wait_status(pyrunc, cid, "stopped") == "stopped"
    stopped = pyrunc("pause", cid, check=False)
    assert stopped.returncode == 1 and "container not running" in stopped.stderr
    stopped = pyrunc("resume", cid, check=False)
    assert stopped.returncode == 1 and "container not paused" in stopped.stderr
    pyrunc("delete", cid)


def test_created_container_can_be_paused_and_resumed_back_to_created(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["sleep", "100"])
    cid = new_id()
    pyrunc("create", "-b", str(bundle), cid)
    init = pyrunc.state(cid)["pid"]
    pyrunc("pause", cid)  # runc pauses created containers too
    assert pyrunc.state(cid)["status"] == "paused"
    assert kernel_says_frozen(init)
    refused = pyrunc("start", cid, check=False)
    assert refused.returncode == 1 and "cannot start a paused container" in refused.stderr
    pyrunc("resume", cid)
    assert pyrunc.state(cid)["status"] == "created"
    pyrunc("start", cid)
    assert pyrunc.state(cid)["status"] == "running"
    assert Path(f"/proc/{init}/cmdline").read_bytes().split(b"\0")[0] == b"sleep"
    pyrunc("delete", "--force", cid)


def test_kill_of_paused_container(pyrunc, make_bundle, tmp_path: Path) -> None:
    # SIGKILL kills it even though it is frozen (runc thaws after SIGKILL)
    cid, init = started(pyrunc, make_bundle, THREE)
    pids = wait_pids(pyrunc, cid, 3)
    pyrunc("pause", cid)
    pyrunc("kill", cid, "KILL")
    assert wait_status(pyrunc, cid, "stopped") == "stopped"
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or proc_state(pid) == "Z", pid
    pyrunc("delete", cid)

    # any other signal stays pending until resume, as with runc: the container stays paused
    out = tmp_path / "out"
    cid, init = started(pyrunc, make_bundle,
                        ["sh", "-c", "trap 'echo got-term; exit 3' TERM; while :; do sleep 0.02; done"], out)
    pyrunc("pause", cid)
    pyrunc("kill", cid, "TERM")
    time.sleep(0.3)
    assert pyrunc.state(cid)["status"] == "paused"
    assert out.read_text() == ""
    # kill --all keeps it frozen too
    pyrunc("kill", "--all", cid, "CONT")
    assert pyrunc.state(cid)["status"] == "paused" and kernel_says_frozen(init)
    pyrunc("resume", cid)
    assert wait_status(pyrunc, cid, "stopped") == "stopped"
    assert out.read_text() == "got-term\n"
    pyrunc("delete", cid)


def test_delete_of_paused_container(pyrunc, make_bundle) -> None:
    cid, init = started(pyrunc, make_bundle, THREE)
    pids = wait_pids(pyrunc, cid, 3)
    assert len(pids) == 3
    cgroup = own_cgroup(init)
    pyrunc("pause", cid)
    refused = pyrunc("delete", cid, check=False)
    assert refused.returncode == 1
    assert f"cannot delete container {cid} that is not stopped: paused" in refused.stderr
    assert pyrunc.state(cid)["status"] == "paused"
    assert all(kernel_says_frozen(pid) for pid in pids)
    started_at = time.monotonic()
    pyrunc("delete", "--force", cid)
    assert time.monotonic() - started_at < 5  # not a timeout waiting for a frozen init
    assert cid not in pyrunc.ids()
    assert not cgroup.exists()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or proc_state(pid) == "Z", pid


def _host_ps(*args: str) -> list[str]:
    return subprocess.run(["ps", *args], capture_output=True, text=True, check=True).stdout.splitlines()


def test_ps_json_and_table(pyrunc, make_bundle) -> None:
    cid, init = started(pyrunc, make_bundle, THREE)
    pids = wait_pids(pyrunc, cid, 3)
    # json: runc's compact array of the host pids in the container's cgroup
    raw = pyrunc("ps", "-f", "json", cid).stdout
    assert raw == "[" + ",".join(map(str, pids)) + "]\n"
    assert len(pids) == 3 and init in pids
    cgroup = own_cgroup(init)
    for pid in pids:
        assert own_cgroup(pid) == cgroup and TEST_PREFIX in str(cgroup)
    children = [p for p in pids if p != init]
    for pid in children:
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"sleep"

    # table: the host's `ps -ef` header, then only the container's lines
    lines = pyrunc("ps", cid).stdout.splitlines()
    assert lines[0] == _host_ps("-ef")[0]
    assert sorted(int(line.split()[1]) for line in lines[1:]) == pids
    assert any("sleep 1000" in line for line in lines) and any("sleep 1001" in line for line in lines)

    # ps options after the id go to ps untouched (even the ones that look like ours)
    custom = pyrunc("ps", cid, "-o", "pid,ppid,comm").stdout.splitlines()
    assert custom[0].split() == ["PID", "PPID", "COMMAND"]
    rows = {int(r.split()[0]): r.split() for r in custom[1:]}
    assert sorted(rows) == pids
    assert all(rows[p][1] == str(init) and rows[p][2] == "sleep" for p in children)
    assert pyrunc("ps", cid, "-f").stdout.splitlines()[0] == _host_ps("-f")[0]

    # a paused container's processes are listed too
    pyrunc("pause", cid)
    assert ps_json(pyrunc, cid) == pids
    pyrunc("resume", cid)
    pyrunc("delete", "--force", cid)


def test_ps_errors_and_stopped_container(pyrunc, make_bundle) -> None:
    missing = pyrunc("ps", "nope-" + new_id(), check=False)
    assert missing.returncode == 1 and "container does not exist" in missing.stderr
    usage = pyrunc("ps", check=False)
    assert usage.returncode == 1 and "requires a minimum of 1 argument" in usage.stderr

    cid, init = started(pyrunc, make_bundle, ["sleep", "100"])
    bad = pyrunc("ps", "--format", "yaml", cid, check=False)
    assert bad.returncode == 1 and "invalid format option" in bad.stderr
    nopid = pyrunc("ps", cid, "-o", "comm", check=False)
    assert nopid.returncode == 1 and "couldn't find PID field in ps output" in nopid.stderr
    failed = pyrunc("ps", cid, "--no-such-ps-option", check=False)
    assert failed.returncode == 1 and "exit status" in failed.stderr
    # --format after the id is a ps option, not ours (runc stops parsing at the id)
    late = pyrunc("ps", cid, "--format", "json", check=False)
    assert not late.stdout.startswith("[")

    pyrunc("kill", cid, "KILL")
    assert wait_status(pyrunc, cid, "stopped") == "stopped"
    # runc: an empty (nil) pid list encodes as null; the table is the header alone
    assert pyrunc("ps", "--format", "json", cid).stdout == "null\n"
    assert pyrunc("ps", cid).stdout.splitlines() == [_host_ps("-ef")[0]]
    pyrunc("delete", cid)
    assert not os.path.exists(f"/proc/{init}/cmdline") or b"sleep" not in Path(f"/proc/{init}/cmdline").read_bytes()
