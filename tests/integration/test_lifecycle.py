"""create / start / state / list / kill / delete / run, as runc does them, on real containers."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import TEST_PREFIX, edit_config, needs_root, new_id

pytestmark = needs_root


def wait_status(pyrunc, cid: str, want: str, timeout: float = 10.0) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        st = pyrunc.state(cid)
        if st["status"] == want or time.monotonic() > deadline:
            return st
        time.sleep(0.02)


def test_run_passes_output_and_exit_status(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["sh", "-c", "echo out; echo err >&2; exit 7"])
    p = pyrunc("run", "--bundle", str(bundle), new_id(), check=False)
    assert p.returncode == 7
    assert p.stdout == "out\n"
    assert "err\n" in p.stderr
    assert pyrunc.ids() == []  # run deletes the container after it exits


def test_run_reports_death_by_signal_as_128_plus_signal(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["sh", "-c", "kill -9 $$"])
    # without a PID namespace of its own, the shell is not a namespace init and can be killed
    edit_config(bundle, lambda c: c["linux"].update(
        namespaces=[n for n in c["linux"]["namespaces"] if n["type"] != "pid"]))
    p = pyrunc("run", "-b", str(bundle), new_id(), check=False)
    assert p.returncode == 128 + 9


def test_split_lifecycle_and_state_json(pyrunc, make_bundle, tmp_path: Path) -> None:
    bundle = make_bundle(["sleep", "100"])
    cid = new_id()
    pid_file = tmp_path / "init.pid"
    pyrunc("create", "--bundle", str(bundle), "--pid-file", str(pid_file), cid)
    st = pyrunc.state(cid)
    assert st["status"] == "created"
    assert st["id"] == cid and st["ociVersion"] == "1.3.0"
    assert st["bundle"] == str(bundle)
    assert st["pid"] == int(pid_file.read_text())
    assert list(st) == ["ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"]
    # the waiting init really is in new namespaces: compare with ours
    for ns in ("pid", "mnt", "net", "ipc", "uts", "cgroup"):
        assert os.readlink(f"/proc/{st['pid']}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns
    # created: the user process has not run yet (the init is still our python)
    assert "sleep" not in Path(f"/proc/{st['pid']}/cmdline").read_text()

    pyrunc("start", cid)
    assert pyrunc.state(cid)["status"] == "running"
    assert Path(f"/proc/{st['pid']}/cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", b"100"]

    pyrunc("kill", cid, "KILL")
    st2 = wait_status(pyrunc, cid, "stopped")
    assert st2["status"] == "stopped" and st2["pid"] == 0
    pyrunc("delete", cid)
    assert cid not in pyrunc.ids()
    assert not os.path.exists(f"/proc/{st['pid']}/cmdline") or \
        b"sleep" not in Path(f"/proc/{st['pid']}/cmdline").read_bytes()


def test_pid_file_is_written_atomically_with_no_temp_left(pyrunc, make_bundle, tmp_path: Path) -> None:
    bundle = make_bundle(["sleep", "100"])
    cid = new_id()
    pyrunc("create", "-b", str(bundle), "--pid-file=" + str(tmp_path / "p"), cid)
    assert sorted(os.listdir(tmp_path)) == sorted(["p", bundle.name])
    pyrunc("delete", "--force", cid)


def test_list_formats(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["sleep", "100"])
    a, b = new_id(), new_id()
    pyrunc("create", "-b", str(bundle), a)
    pyrunc("create", "-b", str(bundle), b)
    pyrunc("start", b)
    rows = json.loads(pyrunc("list", "--format=json").stdout)
    got = {r["id"]: r["status"] for r in rows}
    assert got == {a: "created", b: "running"}
    assert all(r["owner"] == "root" for r in rows)
    table = pyrunc("list").stdout.splitlines()
    assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    # runc's tabwriter layout: columns padded by 3 to the widest cell, at least 12 wide
    starts = [table[0].index(h) for h in ("PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    width_id = max(len(a), len(b)) + 3
    assert starts[0] == max(12, width_id)
    for line in table[1:]:
        assert line[starts[1]:].startswith(("created", "running"))
        assert line[starts[1] - 1] == " " and line[starts[0] - 1] == " "
    assert sorted(line.split()[0] for line in table[1:]) == sorted([a, b])
    assert sorted(pyrunc("list", "-q").stdout.split()) == sorted([a, b])
    for cid in (a, b):
        pyrunc("delete", "-f", cid)
    assert pyrunc("list", "--format", "json").stdout.strip() == "null"


def test_lifecycle_errors_use_runc_wording(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["sleep", "100"])
    cid = new_id()
    missing = pyrunc("state", "nope-" + cid, check=False)
    assert missing.returncode == 1 and "container does not exist" in missing.stderr
    pyrunc("create", "-b", str(bundle), cid)
    again = pyrunc("create", "-b", str(bundle), cid, check=False)
    assert again.returncode == 1 and "container with given ID already exists" in again.stderr
    pyrunc("start", cid)
    twice = pyrunc("start", cid, check=False)
    assert twice.returncode == 1 and "cannot start an already running container" in twice.stderr
    busy = pyrunc("delete", cid, check=False)
    assert busy.returncode == 1 and "is not stopped: running" in busy.stderr
    pyrunc("kill", cid, "9")
    wait_status(pyrunc, cid, "stopped")
    dead = pyrunc("kill", cid, "TERM", check=False)
    assert dead.returncode == 1 and "container not running" in dead.stderr
    stopped = pyrunc("start", cid, check=False)
    assert "cannot start a container that has stopped" in stopped.stderr
    pyrunc("delete", cid)
    gone = pyrunc("delete", cid, check=False)
    assert gone.returncode == 1 and "container does not exist" in gone.stderr
    assert pyrunc("delete", "--force", cid).returncode == 0  # containerd relies on this


def test_kill_signal_names_and_numbers_reach_the_process(pyrunc, make_bundle) -> None:
    # sh traps USR1 and writes a marker to its stdout (a file we read from outside)
    bundle = make_bundle(["sh", "-c", "trap 'echo got-usr1; exit 0' USR1; while :; do sleep 0.05; done"])
    for sig in ("USR1", "SIGUSR1", "10"):
        cid = new_id()
        out = bundle / f"out-{sig}"
        with open(out, "w") as f:
            pyrunc("create", "-b", str(bundle), cid, stdout=f)
        pyrunc("start", cid)
        pyrunc("kill", cid, sig)
        assert wait_status(pyrunc, cid, "stopped")["status"] == "stopped"
        assert out.read_text() == "got-usr1\n"
        pyrunc("delete", cid)
    bad = pyrunc("kill", "whatever", "SIGNOPE", check=False)
    assert bad.returncode == 1 and "SIGNOPE" in bad.stderr


def test_delete_of_created_container_kills_its_init(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["sleep", "100"])
    cid = new_id()
    pyrunc("create", "-b", str(bundle), cid)
    pid = pyrunc.state(cid)["pid"]
    pyrunc("delete", cid)  # runc deletes a created container without --force
    time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_state_is_derived_from_the_kernel_not_the_file(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["sleep", "100"])
    cid = new_id()
    pyrunc("create", "-b", str(bundle), cid)
    pyrunc("start", cid)
    pid = pyrunc.state(cid)["pid"]
    os.kill(pid, 9)  # behind pyrunc's back
    assert wait_status(pyrunc, cid, "stopped")["status"] == "stopped"
    pyrunc("delete", cid)


def test_later_commands_use_the_persisted_config_not_the_bundle(pyrunc, make_bundle, tmp_path: Path) -> None:
    marker = tmp_path / "poststop-ran"
    bundle = make_bundle(["sleep", "100"])
    edit_config(bundle, lambda c: c.update(hooks={"poststop": [
        {"path": "/bin/sh", "args": ["sh", "-c", f"echo done > {marker}"]}]}))
    cid = new_id()
    pyrunc("create", "-b", str(bundle), cid)
    (bundle / "config.json").write_text("this is no longer json")  # the engine may change or remove it
    pyrunc("start", cid)
    pyrunc("delete", "--force", cid)
    assert marker.read_text() == "done\n"


def test_concurrent_commands_on_one_id_serialise(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["sleep", "100"])
    cid = new_id()
    pyrunc("create", "-b", str(bundle), cid)
    procs = [subprocess.Popen(pyrunc.argv("delete", "--force", cid), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.wait(timeout=30) for p in procs]
    assert results == [0, 0, 0, 0]
    assert cid not in pyrunc.ids()


def test_ids_are_validated(pyrunc, make_bundle) -> None:
    bundle = make_bundle()
    for bad in ("../escape", "a/b", "..", "tab\there"):
        p = pyrunc("create", "-b", str(bundle), bad, check=False)
        assert p.returncode == 1 and "invalid container id" in p.stderr, bad
    assert not any(name.startswith(("..", "a")) for name in os.listdir(pyrunc.root)) if pyrunc.root.exists() else True


def test_json_log_gets_exactly_one_error_line(pyrunc, tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    p = pyrunc("--log", str(log), "--log-format=json", "state", TEST_PREFIX + "missing", check=False)
    assert p.returncode == 1
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["level"] == "error" and rec["msg"] == "container does not exist" and rec["time"]
    assert "container does not exist" in p.stderr  # also on stderr, as runc does


def test_log_file_is_created_even_on_success(pyrunc, tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    pyrunc("--log", str(log), "--log-format", "json", "list")
    assert log.exists() and log.read_text() == ""


def test_run_detach_then_delete(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["sleep", "100"])
    cid = new_id()
    p = pyrunc("run", "-d", "-b", str(bundle), cid, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert p.returncode == 0
    assert pyrunc.state(cid)["status"] == "running"
    pyrunc("delete", "--force", cid)


def test_run_forwards_signals_to_the_container(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["sh", "-c", "trap 'exit 42' TERM; while :; do sleep 0.05; done"])
    cid = new_id()
    proc = subprocess.Popen(pyrunc.argv("run", "-b", str(bundle), cid), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until = time.monotonic() + 10
    while (cid not in pyrunc.ids() or pyrunc.state(cid)["status"] != "running") and time.monotonic() < wait_until:
        time.sleep(0.02)
    time.sleep(0.1)  # let sh install its trap
    proc.terminate()
    assert proc.wait(timeout=10) == 42


def test_run_passes_on_signals_that_arrive_while_it_creates(pyrunc, make_bundle, tmp_path: Path) -> None:
    """A SIGTERM to `pyrunc run` while a createRuntime hook still runs is kept and sent to the
    container once it has started (runc installs its handler before creating, too)."""
    marker = tmp_path / "hook-running"
    bundle = make_bundle(["sh", "-c", "trap 'exit 42' TERM; while :; do sleep 0.05; done"])
    # No PID namespace: as its PID 1 the shell would ignore a SIGTERM that beats its trap.
    edit_config(bundle, lambda c: (c.update(hooks={"createRuntime": [
        {"path": "/bin/sh", "args": ["sh", "-c", f"touch {marker}; sleep 1"]}]}),
        c["linux"].update(namespaces=[n for n in c["linux"]["namespaces"] if n["type"] != "pid"])))
    cid = new_id()
    proc = subprocess.Popen(pyrunc.argv("run", "-b", str(bundle), cid), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not marker.exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.01)
    proc.terminate()  # the container does not exist yet
    rc = proc.wait(timeout=30)
    # 42: the shell's trap ran; 143: SIGTERM came before the trap was set. Either way it reached
    # the container and pyrunc itself did not die of it (-15).
    assert rc in (42, 143), (rc, proc.stderr.read() if proc.stderr else "")
    assert cid not in pyrunc.ids()


def test_version_and_help() -> None:
    from conftest import PYRUNC
    out = subprocess.run([PYRUNC, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].startswith("pyrunc version ")
    assert "spec: 1.3.0" in out


@pytest.mark.parametrize("argv,needle", [
    (["--bogus", "list"], "flag provided but not defined: -bogus"),
    (["create"], 'requires exactly 1 argument(s)'),
    (["kill"], 'requires a minimum of 1'),
    (["--log-format", "xml", "list"], "invalid log-format"),
    (["--rootless", "maybe", "list"], "invalid --rootless value"),
    (["list", "--format", "yaml"], "invalid format option"),
    (["frobnicate"], "frobnicate"),
    (["--systemd-cgroup", "create", "x"], "systemd cgroup driver is not supported"),
    (["create", "--preserve-fds", "many", "x"], "preserve-fds"),
])
def test_bad_argv_is_a_clear_error(pyrunc, argv: list[str], needle: str) -> None:
    p = pyrunc(*argv, check=False)
    assert p.returncode != 0
    assert needle in p.stderr


def test_new_session_keyring_unless_no_new_keyring(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["cat", "/proc/keys"])
    edit_config(bundle, lambda c: c["linux"].update(
        maskedPaths=[m for m in c["linux"]["maskedPaths"] if m != "/proc/keys"]))
    cid = new_id()
    keys = pyrunc("run", "-b", str(bundle), cid).stdout
    assert any(line.split()[-2] == f"_ses.{cid}:" for line in keys.splitlines()), keys  # named as runc does
    cid2 = new_id()
    keys = pyrunc("run", "--no-new-keyring", "-b", str(bundle), cid2).stdout
    assert not any(cid2 in line for line in keys.splitlines()), keys


def test_flags_after_the_id_are_reordered_like_runc(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["sleep", "100"])
    cid = new_id()
    pyrunc("create", cid, "--bundle", str(bundle))  # urfave/cli v1 reorders known flags
    pyrunc("delete", cid, "--force")
    assert cid not in pyrunc.ids()


def test_state_output_follows_the_state_schema(pyrunc, make_bundle) -> None:
    from pyrunc.schema import validate_state
    bundle = make_bundle(["sleep", "100"])
    edit_config(bundle, lambda c: c.update(annotations={"org.example/key": "value"}))
    cid = new_id()
    pyrunc("create", "-b", str(bundle), cid)
    seen = [pyrunc.state(cid)]
    pyrunc("start", cid)
    seen.append(pyrunc.state(cid))
    pyrunc("kill", cid, "KILL")
    seen.append(wait_status(pyrunc, cid, "stopped"))
    pyrunc("delete", cid)
    assert [s["status"] for s in seen] == ["created", "running", "stopped"]
    for st in seen:
        assert validate_state(st) == [], st
        assert st["annotations"] == {"org.example/key": "value"}
