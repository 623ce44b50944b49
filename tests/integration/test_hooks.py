"""OCI hooks (config.md "POSIX-platform Hooks"): when each kind runs, in which namespaces, with
what on stdin, argv and environment; timeouts; what a failing hook does to the lifecycle."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import edit_config, mkbundle, needs_root, new_id

pytestmark = needs_root

KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
# startContainer hooks resolve in the container: they find the script where we bind-mount it
IN_CONTAINER = "/hooks"

# Records, one line per run: kind, hostname, mount ns, cmdline of the state's pid; and saves stdin.
HOOK_SCRIPT = """#!/bin/sh
kind=$1; dir=$2
cat > "$dir/$kind.json"
pid=$(sed 's/.*"pid": *\\([0-9]*\\).*/\\1/' "$dir/$kind.json")
cmd=$(tr '\\0' ' ' < /proc/$pid/cmdline 2>/dev/null)
echo "$kind|$(cat /proc/sys/kernel/hostname)|$(readlink /proc/self/ns/mnt)|$cmd" >> "$dir/log"
"""


def read_log(d: Path) -> list[list[str]]:
    if not (d / "log").exists():
        return []
    return [line.split("|") for line in (d / "log").read_text().splitlines()]


def kinds_run(d: Path) -> list[str]:
    return [row[0] for row in read_log(d)]


def hook(kind: str, d: Path) -> dict:
    if kind == "startContainer":
        return {"path": "/bin/sh", "args": ["sh", f"{IN_CONTAINER}/hook.sh", kind, IN_CONTAINER]}
    return {"path": "/bin/sh", "args": ["sh", str(d / "hook.sh"), kind, str(d)]}


@pytest.fixture
def hookdir(tmp_path: Path) -> Path:
    d = tmp_path / "hooks"
    d.mkdir()
    (d / "hook.sh").write_text(HOOK_SCRIPT)
    return d


def with_hooks(bundle: Path, hooks: dict, hookdir: Path | None = None, **extra: object) -> None:
    def edit(c: dict) -> None:
        c["hooks"] = hooks
        c.update(extra)
        if hookdir is not None:
            c["mounts"].append({"destination": IN_CONTAINER, "type": "bind", "source": str(hookdir),
                                "options": ["rbind", "rw"]})
    edit_config(bundle, edit)


def leftovers(pyrunc, cid: str) -> list[str]:  # type: ignore[no-untyped-def]
    found = [f"state {cid}"] if (pyrunc.root / cid).exists() else []
    for top, dirs, _files in os.walk("/sys/fs/cgroup"):
        found += [os.path.join(top, d) for d in dirs if cid in d]
        if top.count("/") > 8:
            dirs[:] = []
    deadline = time.monotonic() + 3
    while True:
        procs = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if cid in Path(f"/proc/{pid}/cgroup").read_text() and \
                        Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX":
                    procs.append(f"process {pid}")
            except OSError:
                pass
        if not procs or time.monotonic() > deadline:
            return found + procs
        time.sleep(0.05)


def test_every_kind_runs_in_order_at_its_time_and_in_its_namespaces(pyrunc, make_bundle, hookdir: Path) -> None:
    bundle = make_bundle(["sleep", "100"], hostname="hooked")
    with_hooks(bundle, {k: [hook(k, hookdir)] for k in KINDS}, hookdir,
               annotations={"org.pyrunc.test": "hooks"})
    cid = new_id()
    host_mnt = os.readlink("/proc/self/ns/mnt")
    host_name = socket.gethostname()

    pyrunc("create", "-b", str(bundle), cid)
    assert kinds_run(hookdir) == ["prestart", "createRuntime", "createContainer"]
    pid = pyrunc.state(cid)["pid"]
    container_mnt = os.readlink(f"/proc/{pid}/ns/mnt")
    assert container_mnt != host_mnt

    pyrunc("start", cid)
    assert kinds_run(hookdir) == ["prestart", "createRuntime", "createContainer", "startContainer", "poststart"]
    pyrunc("kill", cid, "KILL")
    deadline = time.monotonic() + 10
    while pyrunc.state(cid)["status"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(read_log(hookdir)) == 5  # nothing runs when the process dies
    pyrunc("delete", cid)
    rows = {row[0]: row for row in read_log(hookdir)}
    assert sorted(rows) == sorted(KINDS) and kinds_run(hookdir)[-1] == "poststop"

    # the runtime's namespace: the host's hostname and mount namespace
    for kind in ("prestart", "createRuntime", "poststart", "poststop"):
        assert rows[kind][1:3] == [host_name, host_mnt], kind
    # the container's namespace
    for kind in ("createContainer", "startContainer"):
        assert rows[kind][1:3] == ["hooked", container_mnt], kind

    # the state on stdin
    states = {k: json.loads((hookdir / f"{k}.json").read_text()) for k in KINDS}
    for kind, st in states.items():
        assert st["ociVersion"] == "1.3.0", kind
        assert st["id"] == cid, kind
        assert st["bundle"] == str(bundle), kind
        assert st["annotations"] == {"org.pyrunc.test": "hooks"}, kind
    for kind in ("prestart", "createRuntime", "createContainer"):
        assert states[kind]["status"] == "creating", kind
        assert states[kind]["pid"] == pid, kind
    assert states["poststart"]["status"] == "running"
    assert states["poststart"]["pid"] == pid
    assert states["poststop"]["status"] == "stopped"


def test_start_container_hooks_see_status_created(pyrunc, make_bundle, hookdir: Path) -> None:
    bundle = make_bundle(["sleep", "100"])
    with_hooks(bundle, {"startContainer": [hook("startContainer", hookdir)]}, hookdir)
    cid = new_id()
    pyrunc("create", "-b", str(bundle), cid)
    pyrunc("start", cid)
    try:
        assert json.loads((hookdir / "startContainer.json").read_text())["status"] == "created"
    finally:
        pyrunc("delete", "--force", cid)


def test_hooks_of_one_kind_run_in_the_order_listed(pyrunc, make_bundle, tmp_path: Path) -> None:
    log = tmp_path / "order"
    bundle = make_bundle(["true"])
    with_hooks(bundle, {"createRuntime": [
        {"path": "/bin/sh", "args": ["sh", "-c", f"echo {n} >> {log}"]} for n in ("one", "two", "three")]})
    pyrunc("run", "-b", str(bundle), new_id())
    assert log.read_text().split() == ["one", "two", "three"]


def test_args0_is_argv0_and_path_is_what_runs(pyrunc, make_bundle, tmp_path: Path) -> None:
    out = tmp_path / "cmdline"
    bundle = make_bundle(["true"])
    with_hooks(bundle, {"prestart": [
        {"path": "/bin/sh", "args": ["not-a-real-name", "-c", f"tr '\\0' ' ' < /proc/$$/cmdline > {out}"]}]})
    pyrunc("run", "-b", str(bundle), new_id())
    assert out.read_text().split()[:2] == ["not-a-real-name", "-c"]


def test_hook_env_is_exactly_the_configured_one(pyrunc, make_bundle, tmp_path: Path) -> None:
    out = tmp_path / "env"
    bundle = make_bundle(["true"])
    # the hook's stdout is not ours to read: have a wrapper hook write env's output to a file
    with_hooks(bundle, {"createRuntime": [
        {"path": "/bin/sh", "args": ["sh", "-c", f"exec /usr/bin/env -0 > {out}"],
         "env": ["A=1", "B=two words", "C="]},
    ], "poststop": [
        {"path": "/bin/sh", "args": ["sh", "-c", f"exec /usr/bin/env -0 > {out}.inherited"]},
    ]})
    pyrunc("run", "-b", str(bundle), new_id(), env={**os.environ, "PYRUNC_TEST_MARK": "from-the-runtime"})
    env = set(out.read_text().split("\0")) - {""}
    assert {e for e in env if not e.startswith("PWD=")} == {"A=1", "B=two words", "C="}  # dash adds PWD
    # a hook without env gets the runtime's environment (runc: exec.Cmd with a nil Env)
    inherited = set(Path(f"{out}.inherited").read_text().split("\0"))
    assert "PYRUNC_TEST_MARK=from-the-runtime" in inherited


def test_hooks_in_the_container_do_not_get_the_runtimes_environment(pyrunc, make_bundle, tmp_path: Path) -> None:
    out = tmp_path / "env"
    bundle = make_bundle(["true"])
    with_hooks(bundle, {"createContainer": [{"path": "/bin/sh", "args": ["sh", "-c", f"exec /usr/bin/env > {out}"]}]})
    pyrunc("run", "-b", str(bundle), new_id(), env={**os.environ, "PYRUNC_TEST_MARK": "from-the-runtime"})
    assert "PYRUNC_TEST_MARK" not in out.read_text()


def test_timeout_kills_the_hook_and_fails_create(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["true"])
    with_hooks(bundle, {"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "31.4159"], "timeout": 1}]})
    cid = new_id()
    t0 = time.monotonic()
    p = pyrunc("create", "-b", str(bundle), cid, check=False)
    took = time.monotonic() - t0
    assert p.returncode == 1
    assert 1 <= took < 5, took
    assert "createRuntime[0]" in p.stderr and "/bin/sleep" in p.stderr and "timeout" in p.stderr
    assert not leftovers(pyrunc, cid)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            assert b"31.4159" not in Path(f"/proc/{pid}/cmdline").read_bytes(), "the hook still runs"
        except OSError:
            pass


def test_failing_create_runtime_hook_fails_create_and_leaves_nothing(pyrunc, make_bundle, tmp_path: Path) -> None:
    later = tmp_path / "later-ran"
    bundle = make_bundle(["sleep", "100"])
    with_hooks(bundle, {"createRuntime": [
        {"path": "/bin/sh", "args": ["sh", "-c", "echo this-hook-says-no >&2; exit 3"]},
        {"path": "/bin/sh", "args": ["sh", "-c", f"touch {later}"]},
    ], "createContainer": [{"path": "/bin/sh", "args": ["sh", "-c", f"touch {later}"]}]})
    cid = new_id()
    p = pyrunc("create", "-b", str(bundle), cid, check=False)
    assert p.returncode == 1
    assert "createRuntime[0]" in p.stderr and "exit status 3" in p.stderr
    assert "this-hook-says-no" in p.stderr  # what the hook said (runc includes it too)
    assert not later.exists()  # neither the next hook nor the next kind ran
    assert cid not in pyrunc.ids()
    assert not leftovers(pyrunc, cid)


def test_failing_create_container_hook_fails_create_and_leaves_nothing(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["sleep", "100"])
    with_hooks(bundle, {"createContainer": [{"path": "/bin/false", "args": ["false"]}]})
    cid = new_id()
    p = pyrunc("create", "-b", str(bundle), cid, check=False)
    assert p.returncode == 1 and "createContainer[0]" in p.stderr and "/bin/false" in p.stderr
    assert not leftovers(pyrunc, cid)


def test_missing_hook_binary_fails_create_naming_it(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["true"])
    with_hooks(bundle, {"prestart": [{"path": "/no/such/hook"}]})
    cid = new_id()
    p = pyrunc("create", "-b", str(bundle), cid, check=False)
    assert p.returncode == 1 and "prestart[0]" in p.stderr and "/no/such/hook" in p.stderr
    assert not leftovers(pyrunc, cid)


def test_failing_poststart_hook_fails_start_and_stops_the_container(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["sleep", "100"])
    with_hooks(bundle, {"poststart": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 4"]}]})
    cid = new_id()
    pyrunc("create", "-b", str(bundle), cid)
    pid = pyrunc.state(cid)["pid"]
    p = pyrunc("start", cid, check=False)
    assert p.returncode == 1 and "poststart[0]" in p.stderr and "exit status 4" in p.stderr
    deadline = time.monotonic() + 10
    while pyrunc.state(cid)["status"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pyrunc.state(cid)["status"] == "stopped"
    time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists() or \
        Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    pyrunc("delete", cid)
    assert not leftovers(pyrunc, cid)


@pytest.mark.parametrize("userns", [False, True])
def test_failing_start_container_hook_fails_start_and_stops_the_container(pyrunc, make_bundle,
                                                                             userns: bool) -> None:
    """runtime.md: a failing startContainer hook is an error (of `start`, which the hook is part
    of), the container stops before the user's process is exec'd; poststart hooks do not run."""
    bundle = make_bundle(["sleep", "100"], userns=userns)
    with_hooks(bundle, {"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 5"]}],
                        "poststart": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 6"]}]})
    cid = new_id()
    pyrunc("create", "-b", str(bundle), cid)
    p = pyrunc("start", cid, check=False)
    assert p.returncode == 1 and "startContainer[0]" in p.stderr and "exit status 5" in p.stderr, p.stderr
    assert "poststart" not in p.stderr
    assert pyrunc.state(cid)["status"] == "stopped"
    pyrunc("delete", cid)
    assert not leftovers(pyrunc, cid)


def test_start_reports_an_exec_that_fails_after_the_gate(pyrunc, make_bundle, tmp_path: Path) -> None:
    """The executable is found at create time; if it is gone when the gate opens, `start` fails."""
    bundle = make_bundle(["/tmp/prog"])
    rootfs = mkbundle.build_rootfs(tmp_path / "own-rootfs")
    (rootfs / "tmp").mkdir(exist_ok=True)
    prog = rootfs / "tmp" / "prog"
    prog.write_text("#!/bin/sh\necho hi\n")
    prog.chmod(0o755)
    edit_config(bundle, lambda c: (c["root"].update(path=str(rootfs), readonly=False)))
    cid = new_id()
    pyrunc("create", "-b", str(bundle), cid)
    prog.unlink()
    p = pyrunc("start", cid, check=False)
    assert p.returncode == 1 and "exec /tmp/prog: No such file or directory" in p.stderr, p.stderr
    assert pyrunc.state(cid)["status"] == "stopped"
    pyrunc("delete", cid)


def test_failing_poststop_hook_only_warns_and_the_others_still_run(pyrunc, make_bundle, tmp_path: Path) -> None:
    second = tmp_path / "second-ran"
    bundle = make_bundle(["sleep", "100"])
    with_hooks(bundle, {"poststop": [
        {"path": "/bin/sh", "args": ["sh", "-c", "echo poststop-complains >&2; exit 5"]},
        {"path": "/bin/sh", "args": ["sh", "-c", f"touch {second}"]},
    ]})
    cid = new_id()
    pyrunc("create", "-b", str(bundle), cid)
    p = pyrunc("delete", "--force", cid, check=False)
    assert p.returncode == 0
    assert "warn" in p.stderr and "poststop[0]" in p.stderr and "exit status 5" in p.stderr
    assert second.exists()  # config.md: the remaining poststop hooks run
    assert cid not in pyrunc.ids()
    assert not leftovers(pyrunc, cid)


def test_poststart_waits_for_the_user_process_even_after_slow_start_container_hooks(
        pyrunc, make_bundle, hookdir: Path) -> None:
    bundle = make_bundle(["sleep", "100"])
    with_hooks(bundle, {"startContainer": [{"path": "/bin/sleep", "args": ["sleep", "0.5"]}],
                        "poststart": [hook("poststart", hookdir)]})
    cid = new_id()
    pyrunc("create", "-b", str(bundle), cid)
    try:
        pyrunc("start", cid)
        (row,) = read_log(hookdir)
        assert row[3].split() == ["sleep", "100"], "poststart ran before the user process was executed"
    finally:
        pyrunc("delete", "--force", cid)


def test_hook_output_does_not_reach_the_containers_stdio(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["sh", "-c", "echo from-the-container"])
    with_hooks(bundle, {k: [{"path": "/bin/sh", "args": ["sh", "-c", f"echo {k}-out; echo {k}-err >&2"]}]
                        for k in ("prestart", "createRuntime", "createContainer", "poststart")})
    p = pyrunc("run", "-b", str(bundle), new_id())
    assert p.stdout == "from-the-container\n"
    assert "-out" not in p.stderr and "-err" not in p.stderr


def test_hooks_get_only_stdio(pyrunc, make_bundle, hookdir: Path) -> None:
    # pyrunc's caller hands it extra fds (7 and 9 here); no hook, on the host or in the
    # container, may inherit them (runc's hooks get stdin, stdout and stderr only)
    bundle = make_bundle(["true"])
    # the shell globs its own fd directory: no child process, no saved descriptors
    fds_of = {k: ["sh", "-c", f'exec > "$0/{k}.fds"; cd /proc/self/fd && echo *',
                  str(hookdir) if k != "startContainer" else IN_CONTAINER]
              for k in ("prestart", "createContainer", "startContainer", "poststart")}
    with_hooks(bundle, {k: [{"path": "/bin/sh", "args": argv}] for k, argv in fds_of.items()}, hookdir)
    cid = new_id()
    argv = " ".join(f"'{a}'" for a in pyrunc.argv("create", "-b", str(bundle), cid))
    with open(hookdir / "out", "w") as out:
        subprocess.run(["bash", "-c", f"exec {argv} 7</etc/hostname 9</etc/hostname"], check=True,
                       stdout=out, stderr=out, stdin=subprocess.DEVNULL, timeout=30)
    pyrunc("start", cid)
    pyrunc("delete", "--force", cid)
    for kind in fds_of:
        fds = (hookdir / f"{kind}.fds").read_text().split()
        assert {"0", "1", "2"} <= set(fds) and not {"7", "9"} & set(fds), (kind, fds)
