"""Exploit regressions, part 1: the init stage (a host Python running in the container's namespaces)
and the runtime's own executable.

Each test mounts a known attack against pyrunc on the real kernel, from where an attacker sits (a
process in the container, a second container, the host as an ordinary user) and checks that the
kernel refused it -- and that the attack *ran*, so that a test cannot pass by the payload failing
for some unrelated reason.  The tools: ``probe`` (tests/security_helpers.py), a static binary that
tries /proc/PID/{exe,cwd,fd,environ,mem} and ptrace on a pid; and a copy of the host's interpreter
runtime libraries in a rootfs, so that a container can run the interpreter pyrunc's init runs.

- CVE-2019-5736: the container re-executes the runtime's own executable (for pyrunc: the Python
  interpreter) through /proc/self/exe -- as args[0], through a symlink, as a script's ``#!`` -- and
  tries to open it for writing once the runtime has gone;
- CVE-2016-9962 and friends: the init waiting at the start gate, and the init stage of ``exec``
  while it runs, are not dumpable, so a process of the container cannot ptrace them nor open their
  /proc files (exe, cwd, fds, environ, mem), from the same container, from a second container
  sharing its PID namespace, in a user namespace with every capability;
- the init imports nothing after pivot_root (where every path of sys.path is the container's);
- CVE-2024-21626: no host fd survives into the init or the exec'd process, so ``/proc/self/fd/N``
  as the cwd (create) or ``exec --cwd`` leads nowhere; the host's cwd never shows;
- container ids that try path traversal or break the state directory's layout.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PYRUNC, TEST_PREFIX, Pyrunc, edit_config, needs_root, new_id
from security_helpers import (bundle_on, create, exec_detached, interpreter_rootfs, parse_probe, private_interpreter,
                              refused, wait_for)

pytestmark = needs_root
# The fixtures probe, scratch and own_rootfs come from security_helpers (a plugin of tests/conftest.py).


# ------------------------------------------------------------------------- CVE-2019-5736

# Runs as the container's process, in the runtime's own interpreter reached through /proc/self/exe:
# hold the executable (O_PATH), report which file it is, then become busybox's sh (so that no one
# runs the interpreter any more) and try to open the held file for writing, as the exploit does.
# ``: >>`` opens and closes without writing a byte: even a vulnerable runtime's file is left as it was.
_ATTACK = """exec 2>&1
i=0
while [ $i -lt 50 ]; do
  err=$( { : >> /proc/self/fd/9; } 2>&1 ) && { echo "RESULT opened for writing"; exit 0; }
  case "$err" in *busy*) ;; *) break ;; esac
  i=$((i+1)); sleep 0.1
done
echo "RESULT refused: $err"
"""
_PAYLOAD = f"""
import posix
fd = posix.open("/proc/self/exe", posix.O_PATH)
st = posix.fstat(fd)
posix.dup2(fd, 9)
print("HOLDING %d:%d ro=%d" % (st.st_dev, st.st_ino, posix.fstatvfs(fd).f_flag & 1), flush=True)
posix.execv("/bin/sh", ["sh", "-c", {_ATTACK!r}])
"""


class PrivatePyrunc(Pyrunc):
    """The ``pyrunc`` runner (same --root), on a private copy of the interpreter."""

    def __init__(self, root: Path, launcher: Path) -> None:
        super().__init__(root)
        self.launcher = launcher

    def argv(self, *args: str) -> list[str]:
        return [str(self.launcher), "--root", str(self.root), *args]


@pytest.mark.parametrize("how", ["args0", "symlink", "shebang"])
@pytest.mark.parametrize("mode", ["create", "exec"])
def test_cve_2019_5736_runtime_executable_cannot_be_opened_for_writing(pyrunc, make_bundle, own_rootfs: Path,
                                                                       scratch: Path, mode: str, how: str) -> None:
    python, launcher = private_interpreter(scratch / "pyhome", Path(PYRUNC))
    before = hashlib.sha256(python.read_bytes()).hexdigest()
    runner = PrivatePyrunc(pyrunc.root, launcher)
    interpreter_rootfs(own_rootfs, python)
    os.symlink("/proc/self/exe", own_rootfs / "bin/evil")
    (own_rootfs / "bin/evil.py").write_text("#!/proc/self/exe -S\n" + _PAYLOAD)
    (own_rootfs / "bin/evil.py").chmod(0o755)
    argv = {"args0": ["/proc/self/exe", "-S", "-c", _PAYLOAD], "symlink": ["evil", "-S", "-c", _PAYLOAD],
            "shebang": ["/bin/evil.py"]}[how]
    if mode == "create":
        bundle = bundle_on(make_bundle, own_rootfs, argv)
        cid, _pid, out = create(runner, bundle)
        runner("start", cid)
    else:
        bundle = bundle_on(make_bundle, own_rootfs, ["sleep", "300"])
        cid, _pid, _ = create(runner, bundle)
        runner("start", cid)
        out = bundle / "exec.out"
        exec_detached(runner, cid, out, *argv)
    wait_for(lambda: "RESULT" in out.read_text(), 20, f"the attack's result in {out.read_text()!r}")
    text = out.read_text()
    held = [line.split() for line in text.splitlines() if line.startswith("HOLDING ")]
    assert held, f"the payload did not run in the runtime's interpreter: {text}"
    # what the container got hold of through /proc/self/exe: never a writable way to our executable
    dev_ino, ro = held[0][1], held[0][2]
    st = python.stat()
    if dev_ino == f"{st.st_dev}:{st.st_ino}":
        assert ro == "ro=1", f"the container holds the runtime's interpreter through a writable mount: {text}"
    assert "RESULT opened for writing" not in text, text
    assert "RESULT refused:" in text and "busy" not in text.split("RESULT refused:")[1], text
    assert hashlib.sha256(python.read_bytes()).hexdigest() == before
    runner("delete", "--force", cid)


def test_sealed_executable_is_read_only_and_runs(scratch: Path) -> None:
    """The fd the init stage is executed from (pyrunc.linux.sealed_executable): a read-only bind of
    the file, and the fallback, a sealed memfd copy; neither is a way to write the file, both run."""
    import errno
    import fcntl

    from pyrunc import linux as L

    binary = scratch / "busybox"  # a copy of our own: nothing else executes it, so no ETXTBSY
    binary.write_bytes(Path("/bin/busybox").read_bytes())
    binary.chmod(0o755)
    bound, copy = L.sealed_executable(str(binary)), L._sealed_copy(str(binary))
    try:
        st = binary.stat()
        assert (os.fstat(bound).st_dev, os.fstat(bound).st_ino) == (st.st_dev, st.st_ino)
        assert os.fstatvfs(bound).f_flag & os.ST_RDONLY
        with pytest.raises(OSError) as e:
            os.open(f"/proc/self/fd/{bound}", os.O_WRONLY)
        assert e.value.errno == errno.EROFS
        seals = fcntl.fcntl(copy, fcntl.F_GET_SEALS)
        assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SEAL and seals & fcntl.F_SEAL_GROW
        with pytest.raises(PermissionError):
            os.pwrite(copy, b"x", 0)
        for fd in (bound, copy):
            p = subprocess.run([sys.executable, "-c", f"import os; os.execve({fd}, ['busybox', 'echo', 'ran'], {{}})"],
                               pass_fds=(fd,), capture_output=True, text=True)
            assert p.stdout == "ran\n", (fd, p.stderr)
    finally:
        os.close(bound)
        os.close(copy)
    assert binary.read_bytes() == Path("/bin/busybox").read_bytes()


# -------------------------------------------------- non-dumpable init stage, CVE-2016-9962 (ptrace)


@pytest.mark.parametrize("attacker", ["root", "user", "userns-all-caps", "second-container"])
def test_init_at_the_start_gate_is_out_of_reach_of_the_container(pyrunc, make_bundle, own_rootfs: Path,
                                                                 attacker: str) -> None:
    """Between create and start the init is a host Python in the container's namespaces, holding
    the state directory's fifo and its channel: no process of the container may ptrace it or
    open its /proc files (runc's CVE-2016-9962: ptrace of runc init from the container)."""
    userns = attacker == "userns-all-caps"
    bundle = bundle_on(make_bundle, own_rootfs, ["true"], userns=userns)
    cid, pid, _ = create(pyrunc, bundle)
    assert pyrunc.state(cid)["status"] == "created"
    if attacker == "second-container":
        other = bundle_on(make_bundle, own_rootfs, ["probe", "pid", "1"])
        edit_config(other, lambda c: c["linux"]["namespaces"].__setitem__(
            0, {"type": "pid", "path": f"/proc/{pid}/ns/pid"}))
        result = pyrunc("run", "-b", str(other), new_id()).stdout
    else:
        flags = {"root": [], "user": ["--user", "1000:1000"],
                 "userns-all-caps": [f for c in ("CAP_SYS_PTRACE", "CAP_SYS_ADMIN", "CAP_DAC_READ_SEARCH")
                                     for f in ("--cap", c)]}[attacker]
        result = pyrunc("exec", *flags, cid, "probe", "pid", "1").stdout
    got = parse_probe(result)
    assert refused(got) and set(got) == {"exe", "cwd", "fd", "environ", "mem", "ptrace"}, result
    assert got["ptrace"] == "EPERM" and got["exe"] == "EACCES", result
    assert pyrunc.state(cid)["status"] == "created"  # and it still waits, untouched
    pyrunc("delete", "--force", cid)


def test_init_stage_is_not_dumpable_as_the_host_sees_it(pyrunc, make_bundle, own_rootfs: Path,
                                                        probe: Path) -> None:
    """The kernel shows a non-dumpable process's /proc files as root's; a host user with the
    container process's uid gets nowhere either."""
    bundle = bundle_on(make_bundle, own_rootfs, ["true"], uid=1000, gid=1000)
    edit_config(bundle, lambda c: c["process"].update(capabilities={}))  # nothing a peer would lack
    cid, pid, _ = create(pyrunc, bundle)
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    assert status["Uid"].split()[0] == "1000"  # the init has become the container's user ...
    assert os.stat(f"/proc/{pid}/status").st_uid == 0  # ... and /proc shows its files as root's: not dumpable
    p = subprocess.run([str(probe), "pid", str(pid)], user=1000, group=1000, extra_groups=[],
                       capture_output=True, text=True, check=True)
    assert refused(parse_probe(p.stdout)), p.stdout
    pyrunc("delete", "--force", cid)


def test_exec_stage_is_out_of_reach_while_it_runs(pyrunc, make_bundle, own_rootfs: Path) -> None:
    """A process of the container watches /proc for the init stage of ``pyrunc exec`` (a host
    Python that has joined the container) and attacks it from the moment it appears until it
    execs.  A long PATH keeps it busy in the lookup, after it dropped to the container's
    capabilities and user, for tens of milliseconds: the window CVE-2019-5736's exploit used."""
    bundle = bundle_on(make_bundle, own_rootfs, ["sleep", "300"])
    cid, _pid, _ = create(pyrunc, bundle)
    pyrunc("start", cid)
    watch_out = bundle / "watch.out"
    exec_detached(pyrunc, cid, watch_out, "probe", "watch", "60", "/dev/shm/stop")
    long_path = ":".join(["/x"] * 40000) + ":/bin"
    for _ in range(5):
        pyrunc("exec", "--env", f"PATH={long_path}", cid, "true")
    pyrunc("exec", cid, "touch", "/dev/shm/stop")
    wait_for(lambda: "DONE" in watch_out.read_text(), 20, "the watcher to finish")
    text = watch_out.read_text()
    assert "BREACH" not in text, text
    seen = [parse_probe(line) for line in text.splitlines() if line.startswith("SEEN ")]
    tries = sum(int(line.split()[2]) for line in text.splitlines() if line.startswith("TRIES "))
    assert len(seen) >= 2, f"the watcher should have caught most of the exec stages: {text}"
    assert all(refused(s) for s in seen), text
    assert tries > 20, f"the exec stages should have been attacked throughout: {text}"
    pyrunc("delete", "--force", cid)


# ------------------------------------------------------------------ nothing imported after pivot_root

# What a planted module does when it is imported: leave a mark where the test finds it.
_SHADOW = """import posix
_fd = posix.open("/shadow-imported", posix.O_WRONLY | posix.O_CREAT | posix.O_APPEND, 0o644)
posix.write(_fd, (__name__ + "\\n").encode())
posix.close(_fd)
"""
_CODEC = "pyrunc_shadow_codec"


def _init_sys_path() -> list[Path]:
    """The directories the init stage imports from (process._import_paths of the launcher's sys.path)."""
    import sysconfig

    import _prctl

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [Path(__file__).resolve().parents[2], Path(_prctl.__file__).parent, stdlib, stdlib / "lib-dynload"]


def plant_shadow_modules(rootfs: Path) -> int:
    """Mirror, inside the rootfs, every module the init could import from its sys.path -- each a
    module that marks /shadow-imported when it runs -- and the init's own source with a coding
    cookie naming a planted codec (what a traceback's line lookup would import after pivot_root)."""
    planted = 0
    for base in _init_sys_path():
        for top, dirs, files in os.walk(base):
            dirs[:] = [d for d in dirs if d not in ("__pycache__", "site-packages", "dist-packages", ".venv", ".git")
                       and not (Path(top) == base and d in ("tests", "hack", "spec"))]
            rel = Path(top).relative_to("/")
            target = rootfs / rel
            target.mkdir(parents=True, exist_ok=True)
            for name in files:
                mod = name.split(".")[0]
                if name.endswith((".py", ".so")) and mod:
                    (target / f"{mod}.py").write_text(_SHADOW)
                    planted += 1
    init_src = rootfs / Path(__file__).resolve().parents[2].relative_to("/") / "pyrunc/init/__init__.py"
    init_src.write_text(f"# -*- coding: {_CODEC} -*-\n" + _SHADOW)
    stdlib = Path(_init_sys_path()[2])
    (rootfs / stdlib.relative_to("/") / "encodings" / f"{_CODEC}.py").write_text(_SHADOW)
    return planted


def test_nothing_is_imported_after_pivot_root(pyrunc, make_bundle, own_rootfs: Path) -> None:
    """After pivot_root every path of the init's sys.path is the container's: a module imported
    then (a lazy import, a codec looked up for a traceback's source line) would run the image's
    code as the host's root.  Every module name is planted there; the runs below go through the
    init's normal and error paths with --debug (tracebacks read the source lines)."""
    assert plant_shadow_modules(own_rootfs) > 500
    debug = Pyrunc(pyrunc.root)
    debug.extra_global = ["--debug"]
    bundle = bundle_on(make_bundle, own_rootfs, ["sleep", "300"], readonly=False)
    cid, _pid, _ = create(debug, bundle)
    debug("start", cid)
    assert debug("exec", "--user", "1000:1000", cid, "id", "-u").stdout == "1000\n"
    p = debug("exec", cid, "/no/such/binary", check=False)  # fails after joining the container
    assert p.returncode != 0 and "/no/such/binary" in p.stderr, p.stderr
    p = debug("exec", "--cwd", "/no/such/dir", cid, "true", check=False)
    assert p.returncode != 0 and "process.cwd" in p.stderr, p.stderr
    bad = bundle_on(make_bundle, own_rootfs, ["/no/such/binary"], readonly=False)
    p = debug("create", "-b", str(bad), new_id(), check=False)  # the lookup fails after pivot_root
    assert p.returncode != 0 and "/no/such/binary" in p.stderr, p.stderr
    assert not (own_rootfs / "shadow-imported").exists(), (own_rootfs / "shadow-imported").read_text()
    debug("delete", "--force", cid)


# ------------------------------------------------------------------------ fds, cwd: CVE-2024-21626


def run_with_fds(argv: list[str], fds: dict[int, Path], out: Path, cwd: Path | None = None,
                 soft_nofile: int | None = None) -> subprocess.CompletedProcess:
    """Run ``argv`` with ``fds`` open (read-only, inheritable: what an engine may leak) as those
    numbers, optionally with the soft RLIMIT_NOFILE lowered below them afterwards."""
    redirs = " ".join(f'{n}<"{path}"' for n, path in fds.items())
    lower = f"ulimit -Sn {soft_nofile}; " if soft_nofile else ""
    cmd = " ".join(f"'{a}'" for a in argv)
    with open(out, "w") as f:
        return subprocess.run(["bash", "-c", f"exec {redirs}; {lower}exec {cmd}"], stdout=f, stderr=f,
                              stdin=subprocess.DEVNULL, timeout=60, cwd=cwd)


LEAK_FDS = [3, 4, 5, 6, 7, 8, 9, 10, 1500]  # 1500: above the soft RLIMIT_NOFILE of the runtime


@pytest.mark.parametrize("mode", ["create", "exec"])
def test_cve_2024_21626_a_leaked_host_fd_is_no_way_out_as_cwd(pyrunc, make_bundle, own_rootfs: Path,
                                                              scratch: Path, mode: str) -> None:
    """pyrunc is started with host directories open as fds 3..10 and 1500 (an engine's leak; 1500
    above a lowered RLIMIT_NOFILE), and the container's cwd is /proc/self/fd/N: were any of
    them still open in the init stage, chdir would take the process out to the host."""
    host = scratch / "host"
    host.mkdir()
    (host / "host-secret").write_text("secret\n")
    fds = {n: host for n in LEAK_FDS}
    script = "pwd; ls; cat host-secret"
    box = None
    if mode == "exec":
        box = bundle_on(make_bundle, own_rootfs, ["sleep", "300"])
        box_id, _pid, _ = create(pyrunc, box)
        pyrunc("start", box_id)
    for n in LEAK_FDS:
        cwd = f"/proc/self/fd/{n}"
        out = scratch / f"out-{mode}-{n}"
        if mode == "create":
            bundle = bundle_on(make_bundle, own_rootfs, ["sh", "-c", script], cwd=cwd)
            cid = new_id()
            p = run_with_fds(pyrunc.argv("run", "-b", str(bundle), cid), fds, out, soft_nofile=1024)
        else:
            p = run_with_fds(pyrunc.argv("exec", "--cwd", cwd, box_id, "sh", "-c", script), fds, out,
                             soft_nofile=1024)
        text = out.read_text()
        assert "secret" not in text, f"fd {n}: the container reached the host's directory: {text}"
        # refused: create while resolving the cwd in the rootfs (a magic link), exec at chdir
        assert p.returncode != 0 and ("process.cwd" in text or f"{cwd}" in text), f"fd {n}: {p.returncode} {text}"
    assert pyrunc.ids() == ([box_id] if box else [])
    if box:
        pyrunc("delete", "--force", box_id)


def test_exec_passes_only_stdio_and_the_preserved_fds(pyrunc, make_bundle, own_rootfs: Path, scratch: Path) -> None:
    """Whatever the caller of ``pyrunc exec`` has open reaches neither the process nor its init
    stage (fds 3..10 and one above the soft RLIMIT_NOFILE); --preserve-fds N passes exactly 3..3+N-1."""
    bundle = bundle_on(make_bundle, own_rootfs, ["sleep", "300"])
    cid, _pid, _ = create(pyrunc, bundle)
    pyrunc("start", cid)
    files = {n: scratch / f"file{n}" for n in LEAK_FDS}
    for n, f in files.items():
        f.write_text(f"fd {n}\n")
    listing = "cd /proc/self/fd && for f in *; do echo $f $(readlink $f); done"
    out = scratch / "plain.out"
    assert run_with_fds(pyrunc.argv("exec", cid, "sh", "-c", listing), files, out, soft_nofile=1024).returncode == 0
    assert sorted(int(line.split()[0]) for line in out.read_text().splitlines()) == [0, 1, 2, 3], out.read_text()
    # (3 is the directory the listing itself opened)
    out = scratch / "preserved.out"
    argv = pyrunc.argv("exec", "--preserve-fds", "2", cid, "sh", "-c", listing)
    assert run_with_fds(argv, files, out, soft_nofile=1024).returncode == 0
    got = {int(line.split()[0]): line.split()[1] if len(line.split()) > 1 else "" for line in out.read_text().splitlines()}
    assert sorted(got) == [0, 1, 2, 3, 4, 5], out.read_text()
    assert (got[3], got[4]) == (str(files[3]), str(files[4]))
    pyrunc("delete", "--force", cid)


def test_the_hosts_cwd_never_reaches_the_container(pyrunc, make_bundle, own_rootfs: Path, scratch: Path) -> None:
    """pyrunc run from a host directory: neither the container's process nor an exec'd one (from
    create's and exec's point of view) has it as cwd, nor a way to it."""
    here = scratch / "host-cwd"
    here.mkdir()
    (here / "host-secret").write_text("secret\n")
    bundle = bundle_on(make_bundle, own_rootfs, ["sleep", "300"], cwd="/home/user")
    cid, pid, _ = create(pyrunc, bundle, cwd=str(here))
    pyrunc("start", cid, cwd=str(here))
    out = scratch / "exec.out"
    epid = exec_detached(pyrunc, cid, out, "sh", "-c", "pwd; ls; exec sleep 300", cwd=str(here))
    wait_for(lambda: out.read_text().strip() != "", 10, "the exec'd process")
    assert "secret" not in out.read_text() and out.read_text().splitlines()[0] == "/home/user"
    inside = os.stat(own_rootfs / "home/user")
    for p in (pid, epid):
        st = os.stat(f"/proc/{p}/cwd")
        assert (st.st_dev, st.st_ino) == (inside.st_dev, inside.st_ino), p
    pyrunc("delete", "--force", cid)


# ------------------------------------------------------------------------------------ container ids


BAD_IDS = ["../x", "/abs", "..", ".", "a/../../x", "x\ny", "tab\there", "sp ace", "a" * 256, "é", "x:y",
           "$(touch pwned)", "a\\b", "a*"]


def test_container_ids_that_try_to_leave_the_state_root_are_refused(pyrunc, make_bundle, scratch: Path) -> None:
    """runc's rule, ^[\\w+-\\.]+$ but not "." or "..", at most 255 bytes (a file name): anything
    else is refused by every command before it touches the disk."""
    runner = Pyrunc(scratch / "root")
    bundle = make_bundle(["true"])
    commands = [["create", "-b", str(bundle)], ["run", "-b", str(bundle)], ["start"], ["state"], ["delete"],
                ["delete", "--force"], ["kill"], ["exec"], ["pause"], ["resume"], ["ps"], ["events", "--stats"],
                ["update", "--pids-limit", "10"]]
    try:
        for bad in BAD_IDS:
            for cmd in commands:
                p = runner(*cmd, bad, *(["true"] if cmd == ["exec"] else []), check=False)
                assert p.returncode != 0 and "invalid container id" in p.stderr, (bad, cmd, p.stderr)
                assert "Traceback" not in p.stderr, p.stderr
    finally:
        made = runner.ids()
        for cid in made:  # had one been accepted: no container may outlive the test
            runner("delete", "--force", cid, check=False)
    assert made == []
    assert set(os.listdir(scratch)) <= {"root"}, os.listdir(scratch)
    assert not (scratch / "root").exists() or os.listdir(scratch / "root") == []
    from pyrunc import Runtime
    from pyrunc.errors import InvalidIDError
    with pytest.raises(InvalidIDError):
        Runtime(root=str(scratch / "root")).create("a\0b", bundle=str(bundle))


def test_the_ids_runc_accepts_work(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["true"])
    for good in (TEST_PREFIX + "Az09_+-.,", TEST_PREFIX + "..dots..", TEST_PREFIX + "x" * (255 - len(TEST_PREFIX))):
        assert pyrunc("run", "-b", str(bundle), good).returncode == 0
        assert good not in pyrunc.ids()


def test_bundle_path_with_dot_dot_is_stored_clean(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["sleep", "300"])
    cid = new_id()
    crooked = f"{bundle}/../{bundle.name}/./"
    pyrunc("create", "-b", crooked, cid)
    assert pyrunc.state(cid)["bundle"] == str(bundle)
    pyrunc("delete", "--force", cid)
