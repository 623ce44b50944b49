"""A crash or ``kill -9`` of pyrunc at any point leaves ``delete --force`` able to clean up."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import TEST_PREFIX, edit_config, needs_root, new_id

pytestmark = needs_root


def processes_in_cgroup_named(cid: str) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                text = Path(f"/proc/{pid}/cgroup").read_text()
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if f"/{cid}\n" in text and stat.rsplit(")", 1)[1].split()[0] != "Z":
                out.append(int(pid))
    return out


def cgroup_dirs_named(cid: str) -> list[str]:
    found = []
    for top, dirs, _ in os.walk("/sys/fs/cgroup"):
        found += [os.path.join(top, d) for d in dirs if d == cid]
        if top.count("/") > 8:
            dirs[:] = []
    return found


@pytest.mark.parametrize("phase", ["createRuntime", "createContainer"])
def test_kill_9_during_create_then_delete_force_cleans_up(pyrunc, make_bundle, tmp_path: Path, phase: str) -> None:
    marker = tmp_path / "hook-started"
    bundle = make_bundle(["sleep", "100"])
    # the hook tells us it runs, then blocks: create is half-way, the init exists
    hook = {"path": "/bin/sh", "args": ["sh", "-c", f"touch {marker}; sleep 30"]}
    edit_config(bundle, lambda c: c.update(hooks={phase: [hook]}))
    cid = new_id()
    proc = subprocess.Popen(pyrunc.argv("create", "-b", str(bundle), cid), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not marker.exists():
        assert time.monotonic() < deadline, "the hook never ran"
        time.sleep(0.01)
    assert cgroup_dirs_named(cid), "the cgroup should exist mid-create"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    st = pyrunc.state(cid)
    assert st["status"] == "stopped"  # the create process is dead: nothing will finish this container
    pyrunc("delete", "--force", cid)
    assert cid not in pyrunc.ids()
    assert cgroup_dirs_named(cid) == []
    deadline = time.monotonic() + 5
    while processes_in_cgroup_named(cid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_in_cgroup_named(cid) == []
    # hook processes were children of pyrunc or of the init: none may survive either
    subprocess.run(["pkill", "-9", "-f", f"touch {marker}"], check=False)


def test_kill_9_after_create_returned_is_an_ordinary_created_container(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["sleep", "100"])
    cid = new_id()
    pyrunc("create", "-b", str(bundle), cid)
    assert pyrunc.state(cid)["status"] == "created"
    pyrunc("delete", "--force", cid)
    assert cgroup_dirs_named(cid) == []


def test_crash_before_the_first_state_write_is_cleaned_by_delete_force(pyrunc, make_bundle) -> None:
    # what a crash between mkdir and the first state write leaves: not listed, and in the way
    cid = TEST_PREFIX + "half"
    half = pyrunc.root / cid
    os.makedirs(half / "x", exist_ok=False)
    os.rmdir(half / "x")
    (half / "config.json").write_text("{}")
    assert cid not in pyrunc.ids()
    blocked = pyrunc("create", "-b", str(make_bundle()), cid, check=False)
    assert "already exists" in blocked.stderr
    pyrunc("delete", "--force", cid)
    assert not half.exists()
