"""The init stage: what runs in the re-exec'd ``python -I -S`` child until the user's exec.

Stage 1 (``namespaces``) joins or creates the namespaces and forks; stage 2, PID 1
of the container, builds the root file system (``rootfs``), applies the process
settings (``process``), reports ready and waits at the start gate, then execs.

Everything stage 2 needs is imported before pivot_root; after it, ``sys.path`` is
emptied, so nothing can be imported from files the container controls.
"""

from __future__ import annotations

import _signal
import errno
import os
import select
import sys

from .. import jsonio
from .. import linux as L
from ..channel import (CONSOLE, ERROR, GO, HOOKS, HOOKS_DONE, MOUNT_FD, MOUNT_FD_DONE, READY, SECCOMP_FD,
                       SECCOMP_FD_DONE, WARN, Channel)
from ..config import Config, Process, _process
from ..hooks import run_hooks
from . import console, lsm, namespaces, process, rootfs


_traceback = None  # the traceback module, with --debug
_seccomp: Filter | None = None  # linux.seccomp, compiled; loaded as late as the config allows

TYPE_CHECKING = False  # typing costs ~11 ms to import: only type checkers read it
if TYPE_CHECKING:
    from ..seccomp import Filter


def main(fd: int) -> None:
    """``fd``: our end of the channel.  GO brings, for create, the read end of the start gate
    fifo and the report fifo."""
    # Nobody may ptrace us or open our /proc files (e.g. /proc/PID/exe, the host's
    # python) while a host interpreter runs in the container's namespaces.
    L.prctl(L.PR_SET_DUMPABLE, 0)
    chan = Channel.from_fd(fd)
    go: dict = {}
    try:
        go_msg = chan.expect(GO)
        go = go_msg.fields
        gate, report = (go_msg.fds + [-1, -1])[:2]
        if go.get("debug"):  # imported now: after pivot_root nothing may be imported
            global _traceback
            import traceback as _traceback
        with open(os.path.join(go["state_dir"], "config.json"), "rb") as f:
            cfg = Config.from_dict(jsonio.loads(f.read()))
        if cfg.linux.seccomp is not None:
            _compile_seccomp(chan, cfg.linux.seccomp, go)
        if go.get("exec"):
            exec_process(chan, cfg, go)
            return
        if cfg.process is not None:
            set_oom_score_adj(cfg.process.oom_score_adj)  # before the namespaces, as runc's nsexec
        namespaces.enter(chan, cfg.linux)
        pid_done = namespaces.fork_init(chan)
        container_init(chan, cfg, go, gate, pid_done["state"], report)  # type: ignore[arg-type]
    except BaseException as e:  # noqa: BLE001 - every failure must reach the parent as a message
        if _traceback is not None:
            _traceback.print_exc()
        try:
            chan.send(ERROR, message=describe(e))
        except OSError:
            pass
        os._exit(1)


def describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        where = f" {e.filename}" if e.filename else ""
        return f"{e.strerror}{where}".strip() if not where else f"{e.strerror}:{where}"
    return str(e) or type(e).__name__


def container_init(chan: Channel, cfg: Config, go: dict, gate: int, state: dict, report: int = -1) -> None:
    """The container's PID 1 until exec.  ``report`` (create's report fifo) tells `start` why
    we died when a startContainer hook or the exec itself fails after the gate opened."""
    linux, proc = cfg.linux, cfg.process
    assert proc is not None and cfg.root is not None
    os.setsid()
    labels = lsm.ExecLabels(proc.apparmor_profile, proc.selinux_label)  # while /proc is the host's
    if linux.creates("network"):
        L.interface_up("lo")  # runc brings loopback up in a new network namespace, so do we
    in_user_ns = linux.is_private("user")
    fs = rootfs.RootfsBuilder(go["rootfs"], go["bundle"], in_user_ns, linux.is_private("cgroup"))
    fs.mount_label = linux.mount_label
    fs.request_mount_fd = lambda m, source, recursive: _request_mount_fd(chan, cfg.mounts.index(m), source, recursive)
    fs.prepare(linux.rootfs_propagation)
    fs.mount_all(cfg.mounts)
    fs.setup_dev(cfg.mounts, linux.devices)
    if proc.terminal:
        # Before the masks, the read-only remounts and pivot_root, as runc: the pty is the
        # container's (its devpts) and /dev/console is bound while /dev is still writable.
        pty = console.open_pty(fs.root_fd, proc.console_size, proc.user.uid)
        console.bind_console(fs.root_fd, pty.slave, may_create=not rootfs.dev_is_bound(cfg.mounts))
        _hand_over_console(chan, pty)

    # Settings that live in the container's namespaces; /proc is still the host's here,
    # but /proc/sys and /proc/self follow the namespaces of the process that opens them.
    if not go.get("no_new_keyring"):
        labels.set_keycreate()
        _join_session_keyring(go["id"], in_user_ns)
    if cfg.hostname:
        L.sethostname(cfg.hostname)
    if cfg.domainname:
        L.setdomainname(cfg.domainname)
    for key, value in linux.sysctl.items():
        try:
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write(value)
        except OSError as e:
            raise OSError(e.errno, f"linux.sysctl.{key} = {value!r}: {e.strerror}") from None

    if cfg.hooks.prestart or cfg.hooks.create_runtime:
        chan.send(HOOKS)
        chan.expect(HOOKS_DONE)
    run_hooks("createContainer", cfg.hooks.create_container, state)

    try:
        os.close(rootfs.make_target(fs.root_fd, proc.cwd, True))  # runc creates a missing cwd too
    except OSError as e:
        raise OSError(e.errno, f"process.cwd {proc.cwd!r}: {e.strerror}") from None
    fs.mask_paths(linux.masked_paths)
    fs.readonly_paths(linux.readonly_paths)
    if cfg.root.readonly:
        fs.readonly_root()
    os.set_inheritable(gate, False)
    known = process.last_cap()

    fs.enter(go["no_pivot"])
    _forbid_imports()

    executable = _prepare_process(chan, proc, known, labels)
    chan.send(READY)
    chan.close()

    _wait_at_gate(gate)  # the gate stays open until exec closes it: `start` waits for that
    state["status"] = "created"  # what runc passes: the user's process has not run yet
    try:
        run_hooks("startContainer", cfg.hooks.start_container, state)
    except BaseException as e:  # noqa: BLE001 - `start` reports it; nobody else listens now
        _report(report, describe(e))
        os._exit(1)
    _exec(proc, executable, int(go.get("preserve_fds", 0)), report)


def exec_process(chan: Channel, cfg: Config, go: dict) -> None:
    """``pyrunc exec``: join the running container (its namespaces; the runtime has put us in its
    cgroup) instead of creating one, then set up ``go["process"]`` as the init does its own."""
    proc = _process(go["process"])
    known = process.last_cap()
    set_oom_score_adj(proc.oom_score_adj)  # before we join anything; the children inherit it
    labels = lsm.ExecLabels(proc.apparmor_profile, proc.selinux_label)  # the host's /proc, before join()
    namespaces.join(int(go["init_pid"]), [ns.type for ns in cfg.linux.namespaces])
    if not go.get("no_new_keyring"):
        labels.set_keycreate()
        _join_session_keyring(go["id"], cfg.linux.is_private("user"))  # the container's, not the caller's
    _forbid_imports()
    namespaces.fork_init(chan)  # the child is in the container's PID namespace
    os.setsid()  # a session of its own, as runc's nsexec gives every process it starts
    if proc.terminal:
        root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)  # the container's, since join()
        try:
            pty = console.open_pty(root, proc.console_size, proc.user.uid)
        finally:
            os.close(root)
        _hand_over_console(chan, pty)
    executable = _prepare_process(chan, proc, known, labels)
    chan.send(READY)
    chan.close()
    _exec(proc, executable, int(go.get("preserve_fds", 0)))


def set_oom_score_adj(value: int | None) -> None:
    """process.oomScoreAdj, written while we are still in the host's namespaces.  A rootless
    runtime may only raise it, and must be dumpable for the write: a non-dumpable process's
    /proc files belong to the host's root (runc's nsexec is dumpable at that point)."""
    if value is None:
        return
    rootless = os.geteuid() != 0
    if rootless:
        L.prctl(L.PR_SET_DUMPABLE, 1)
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError as e:
        denied = rootless and e.errno in (errno.EACCES, errno.EPERM)
        hint = " (an unprivileged user can only raise it)" if denied else ""
        raise OSError(e.errno, f"process.oomScoreAdj {value}: {e.strerror}{hint}") from None
    finally:
        if rootless:
            L.prctl(L.PR_SET_DUMPABLE, 0)


def _prepare_process(chan: Channel, proc: Process, known: int, labels: lsm.ExecLabels) -> str:
    """LSM labels, rlimits, capabilities, user, cwd and the PATH lookup; returns the executable's
    path."""
    labels.set_for_exec()
    process.set_rlimits(proc.rlimits)
    if _seccomp is not None and not proc.no_new_privileges:
        # Without no_new_privs, loading a filter takes CAP_SYS_ADMIN: before the capabilities go (runc).
        _load_seccomp(chan)
    process.drop_bounding(proc.capabilities, known)
    process.switch_user(proc.user)
    process.apply_capabilities(proc.capabilities, known, lambda msg: chan.send(WARN, message=msg))
    L.prctl(L.PR_SET_DUMPABLE, 0)  # uid and capability changes reset it to fs.suid_dumpable (may be 1)
    try:
        os.chdir(proc.cwd)
    except OSError as e:
        raise OSError(e.errno, f"process.cwd {proc.cwd!r}: {e.strerror}") from None
    _check_cwd_inside(proc.cwd)
    executable = process.find_executable(proc.args[0], proc.env, proc.cwd)
    if _seccomp is not None and _seccomp.notify and not _seccomp.loaded:
        # The listener fd must reach the runtime while the channel is open (runc loads here too).
        L.prctl(L.PR_SET_NO_NEW_PRIVS, 1)
        _load_seccomp(chan)
    return executable


def _check_cwd_inside(cwd: str) -> None:
    """runc's guard against CVE-2024-21626: a cwd reached through an fd of the host's (say
    /proc/self/fd/N) lies outside our root, where getcwd(3) finds no path."""
    try:
        here = os.getcwd()
    except OSError:
        here = ""
    if not here.startswith("/"):
        raise OSError(errno.EPERM, f"process.cwd {cwd!r} is outside the container's root")


def _exec(proc: Process, executable: str, preserve_fds: int, report: int = -1) -> None:
    """Close what is not the process's, set no_new_privs and default signals, exec.  A failure
    goes to stderr and, for `start`, to ``report``."""
    L.close_range(3 + preserve_fds, 0xFFFFFFFF, L.CLOSE_RANGE_CLOEXEC)
    if proc.no_new_privileges:
        L.prctl(L.PR_SET_NO_NEW_PRIVS, 1)
    _default_signals()
    if _seccomp is not None and not _seccomp.loaded:
        try:  # with no_new_privs: last, so that our own syscalls do not go through the filter
            _seccomp.load()
        except OSError as e:
            _report(report, f"loading linux.seccomp: {e.strerror}")
            os.write(2, f"pyrunc: {e.strerror}\n".encode())
            os._exit(1)
    args: list[str] = proc.args
    try:
        os.execve(executable, args, process.env_dict(proc.env))
    except OSError as e:
        _report(report, f"exec {args[0]}: {e.strerror}")
        os.write(2, f"pyrunc: exec {args[0]}: {e.strerror}\n".encode())
        os._exit(127 if e.errno == 2 else 126)


def _report(report: int, message: str) -> None:
    """Tell `start` (which reads the report fifo once the gate has closed) why we die."""
    if report >= 0:
        try:
            os.write(report, message.encode()[:4000])  # one atomic pipe write
        except OSError:
            pass


def _join_session_keyring(container_id: str, in_user_ns: bool) -> None:
    """The container's session keyring ("_ses.<id>", as runc names it; exec joins the same one)
    instead of the caller's, which would let the container read the host user's keys."""
    try:
        L.join_session_keyring("_ses." + container_id, other_search=in_user_ns)
    except OSError as e:
        if e.errno != errno.ENOSYS:  # a kernel without keyrings: nothing to leak
            raise OSError(e.errno, f"joining a new session keyring: {e.strerror}") from None


def _hand_over_console(chan: Channel, pty: console.Pty) -> None:
    """The master goes to the runtime (for the console socket or its own relay); the peer
    becomes our stdio and controlling terminal."""
    try:
        chan.send_fd(CONSOLE, pty.master)
    finally:
        pty.close_master()
    console.make_controlling(pty)


def _compile_seccomp(chan: Channel, profile: dict, go: dict) -> None:
    """Compile linux.seccomp now, before any namespace or mount work: pyrunc.seccomp, ctypes and
    libseccomp can only be loaded before pivot_root, and a profile libseccomp refuses fails early.
    create keeps the program in the state directory; exec loads that one."""
    global _seccomp
    from .. import seccomp

    kept = os.path.join(go["state_dir"], "seccomp-filter.json")
    if go.get("exec"):
        _seccomp = seccomp.Filter.read(kept)
        seccomp.libseccomp()  # opened now all the same: loading needs it after pivot_root
    if _seccomp is None:
        debug = (lambda msg: chan.send(WARN, message=msg)) if go.get("debug") else None
        _seccomp = seccomp.compile_filter(profile, debug)
        if not go.get("exec"):
            _seccomp.save(kept)


def _load_seccomp(chan: Channel) -> None:
    """Load the filter now; with SCMP_ACT_NOTIFY its listener fd goes to the runtime, which sends it
    to the agent (sendmsg is the one syscall the profile may not make notify)."""
    assert _seccomp is not None
    fd = _seccomp.load()
    if fd >= 0:
        try:
            chan.send_fd(SECCOMP_FD, fd)
        finally:
            os.close(fd)
        chan.expect(SECCOMP_FD_DONE)


def _request_mount_fd(chan: Channel, index: int, source: str, recursive: bool) -> int:
    chan.send(MOUNT_FD, index=index, source=source, recursive=recursive)
    return chan.recv_fd(MOUNT_FD_DONE)


def _default_signals() -> None:
    """Python ignores SIGPIPE and SIGXFSZ, and an ignored signal stays ignored across exec:
    the user's process must start with every signal at its default, as under runc."""
    for num in range(1, _signal.NSIG):
        try:
            if _signal.getsignal(num) is _signal.SIG_IGN:
                _signal.signal(num, _signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # SIGKILL, SIGSTOP and the numbers the kernel has no signal for


def _forbid_imports() -> None:
    """After pivot_root every path on sys.path belongs to the container: import nothing more."""
    sys.path.clear()
    sys.path_importer_cache.clear()
    sys.meta_path[:] = [f for f in sys.meta_path if getattr(f, "__name__", "") != "PathFinder"]


def _wait_at_gate(gate: int) -> None:
    """Block until ``start`` writes to the fifo (crun's direction: we hold the read end).

    We keep the read end open (close-on-exec) so that ``start`` can tell when the user's
    process has been exec'd -- poststart hooks must run after that."""
    while True:
        select.select([gate], [], [])
        try:
            if os.read(gate, 1):
                return
        except BlockingIOError:
            continue
        # A writer came and went without a byte: poll now reports hangup forever, so nap.
        select.select([], [], [], 0.05)
