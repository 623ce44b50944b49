"""The container lifecycle: create, start, state, kill, delete, run.

``Runtime`` is the public entry point (``pyrunc.Runtime(root=...)``); it hands out
``Container`` objects.  The CLI is a thin layer over these two classes.
"""

from __future__ import annotations

import _signal
import errno
import os
import time

from . import state as S
from .config import Config, Resources, device_cgroup_rules, load_bundle
from .errors import (ConfigError, ContainerNotExistError, ContainerNotPausedError, ContainerNotRunningError,
                     InvalidStateError, NotSupportedError, PyruncError)
from .hooks import run_hooks

TYPE_CHECKING = False  # typing costs ~11 ms to import: only type checkers read it
if TYPE_CHECKING:
    from typing import Callable

    from .fdsocket import FdSocket
    from .signals import forward_signals

DEFAULT_ROOT = "/run/pyrunc"
SIGKILL = 9

# Test hook, for tests/integration/test_security_host.py only: with PYRUNC_TEST_CRASH_AT=<step>,
# ``create`` SIGKILLs itself right after that step, to show that ``delete --force`` cleans up
# after a crash anywhere.  Steps, in order: dir config state spawn cgroup-create cgroup-apply
# cgroup-add usermap pid hooks mount-fd ready pidfile.  Read once; a string compare per step.
_CRASH_AT = os.environ.get("PYRUNC_TEST_CRASH_AT")


def _crash_point(step: str) -> None:
    if step == _CRASH_AT:
        os.kill(os.getpid(), SIGKILL)


def _then(step: str, fn: Callable[..., object]) -> Callable[..., object]:
    """``fn`` followed by the crash point ``step`` (``fn`` itself when no crash is asked for)."""
    if _CRASH_AT is None:
        return fn

    def both(*args: object) -> object:
        out = fn(*args)
        _crash_point(step)
        return out
    return both


def _cgroups():  # type: ignore[no-untyped-def]
    from . import cgroups  # imported on demand: kill/state/list do not need it
    return cgroups


class Runtime:
    """A state root (``--root``) and the containers in it."""

    def __init__(self, root: str = DEFAULT_ROOT, warn: Callable[[str], None] | None = None,
                 debug: bool = False, rootless: str = "auto") -> None:
        self.root = root
        self.rootless = rootless  # --rootless true|false|auto: skip cgroups we may not make (rootless.py)
        self.debug = debug  # the init stage prints tracebacks of its failures
        self.store = S.Store(root)
        self.warn: Callable[[str], None] = warn or (lambda msg: None)  # where non-fatal problems go

    # -- lookups ------------------------------------------------------------------------------

    def get(self, container_id: str) -> Container:
        entry = self.store.open(container_id)
        return Container(self, entry, entry.read_state())

    def list(self) -> list[Container]:
        out = []
        for cid in self.store.ids():
            try:
                out.append(self.get(cid))
            except (ContainerNotExistError, ValueError, OSError):
                continue  # deleted meanwhile, or not ours
        return out

    # -- create / run -------------------------------------------------------------------------

    def create(self, container_id: str, bundle: str = ".", pid_file: str | None = None,
               console_socket: str | None = None, no_pivot: bool = False,
               no_new_keyring: bool = False, preserve_fds: int = 0, foreground: bool = False,
               pidfd_socket: str | None = None) -> Container:
        """Set the container up and leave its process waiting at the start gate.

        With process.terminal, the pty's master goes to ``console_socket``; or, when
        ``foreground`` (``run`` without --detach), it is kept as ``Container.console`` for
        the caller to relay (``pyrunc.console.relay``)."""
        from .process import InitProcess, write_id_maps

        S.validate_id(container_id)
        # Spawned first: its interpreter starts on the other core while we validate and set up.
        # It waits for GO, so it does nothing before it is in the cgroup, and dies with us.
        init = InitProcess(preserve_fds)
        init.spawn()
        sink = pidfd_sock = None
        try:
            bundle = os.path.abspath(bundle)
            doc, cfg = load_bundle(bundle)
            rootfs = _check_runnable(cfg, bundle)
            netdevs = None
            if cfg.linux.net_devices:  # checked on the host now, moved at the PID step (netdevices.py)
                from .netdevices import NetDevices
                netdevs = NetDevices(cfg.linux, os.geteuid() != 0)
            terminal = cfg.process is not None and cfg.process.terminal
            sink = _ConsoleSink(terminal, not foreground, console_socket)
            if pidfd_socket:
                from .fdsocket import connect_pidfd_socket
                pidfd_sock = connect_pidfd_socket(pidfd_socket)
            entry = self.store.new(container_id)
        except BaseException:
            init.abort()
            if sink is not None:
                sink.close()
            if pidfd_sock is not None:
                pidfd_sock.close()
            raise
        entry.lock(new=True)
        _crash_point("dir")
        st = S.ContainerState(
            id=container_id, bundle=bundle, rootfs=rootfs, created=S.now_rfc3339(),
            owner_uid=os.geteuid(), creator_pid=os.getpid(),
            creator_start=S.process_start_time(os.getpid()) or 0,
            own_pid_namespace=cfg.linux.creates("pid"), annotations=cfg.annotations,
            no_new_keyring=no_new_keyring)
        cgroup = None
        gate = report = -1
        try:
            entry.write_config(doc)
            _crash_point("config")
            from .rootless import use_rootless_cgroups
            cgroup = _cgroups().manager_for(cfg.linux.cgroups_path, container_id,
                                            rootless=use_rootless_cgroups(self.rootless))
            st.cgroup = cgroup.to_state()
            entry.write_state(st)  # from here on, delete --force can find everything
            _crash_point("state")
            os.mkfifo(entry.file(S.GATE_FIFO), 0o600)
            os.mkfifo(entry.file(S.REPORT_FIFO), 0o600)
            # Opened by us and handed over with GO: in a user namespace the init could not open them.
            gate = os.open(entry.file(S.GATE_FIFO), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            report = os.open(entry.file(S.REPORT_FIFO), os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            _crash_point("spawn")
            resources = cfg.linux.resources or Resources()
            resources.devices = device_cgroup_rules(cfg.linux)
            from .cgroups.resources import ignored_warnings

            for msg in ignored_warnings(resources):
                self.warn(msg)
            cgroup.create(resources)
            if cgroup.kept:  # an existing cgroup: delete --force must leave it, even after a crash
                st.cgroup = cgroup.to_state()
                entry.write_state(st)
            _crash_point("cgroup-create")
            cgroup.apply(resources)
            _crash_point("cgroup-apply")
            cgroup.add(init.stage1_pid)
            _crash_point("cgroup-add")
            if cgroup.rootless:  # what was skipped is not ours to delete; runc warns as below
                st.cgroup = cgroup.to_state()
                for msg in _cgroups().rootless_warnings(cgroup, cfg.linux):
                    self.warn(msg)
            container = Container(self, entry, st)
            init.handshake(
                go={"id": container_id, "state_dir": entry.path, "rootfs": rootfs, "bundle": bundle,
                    "no_pivot": no_pivot, "no_new_keyring": no_new_keyring, "preserve_fds": preserve_fds,
                    "debug": self.debug},
                go_fds=[gate, report],
                write_id_maps=_then("usermap", lambda pid: write_id_maps(pid, cfg.linux.uid_mappings,
                                                                         cfg.linux.gid_mappings)),
                on_pid=_then("pid", netdevs.on_pid(container._record_init_pid) if netdevs
                             else container._record_init_pid),
                run_hooks=_then("hooks", lambda: container._run_create_hooks(cfg)),
                mount_fd=_then("mount-fd", lambda msg: container._idmapped_tree(cfg, msg)),
                warn=self.warn,
                on_console=sink.take,
                on_seccomp_fd=lambda fd: container._send_seccomp_fd(cfg, fd, S.CREATING, container._state.init_pid),
            )
            _crash_point("ready")
            if pid_file:
                S.atomic_write(os.path.abspath(pid_file), str(init.pid), 0o644)
                _crash_point("pidfile")
            if pidfd_sock is not None:
                from .fdsocket import send_pidfd
                send_pidfd(pidfd_sock, init.pid, "standard")
            st.creating = False
            entry.write_state(st)
        except BaseException:
            sink.close(master_too=True)
            if netdevs is not None:
                _quietly(netdevs.restore)  # while the namespace lives: the devices go back to the host
            init.abort()
            if cgroup is not None:
                _quietly(cgroup.destroy)
            entry.remove()
            raise
        finally:
            init.close()
            for fd in (gate, report):
                if fd >= 0:
                    os.close(fd)
            if netdevs is not None:
                netdevs.close()
            entry.unlock()
            if pidfd_sock is not None:
                pidfd_sock.close()
        sink.close()
        container.console = sink.master
        return container

    def run(self, container_id: str, bundle: str = ".", detach: bool = False, keep: bool = False,
            no_subreaper: bool = False, **create_options: object) -> int:
        """create + start; in the foreground, wait and return the container's exit status."""
        if not detach and not no_subreaper:
            # The container's init is our grandchild: become its reaper to learn its status.
            import _prctl  # python-prctl's C part
            _prctl.prctl(_prctl.PR_SET_CHILD_SUBREAPER, 1)
        if detach:
            self.create(container_id, bundle, **create_options).start()  # type: ignore[arg-type]
            return 0
        from .signals import forward_signals
        with forward_signals() as signals:  # from now on: what arrives goes to the container
            container = self.create(container_id, bundle, foreground=True, **create_options)  # type: ignore[arg-type]
            try:
                container.start()
            except BaseException:
                container.close_console()
                _quietly(lambda: container.delete(force=True))
                raise
            signals.target(container.pid)
            status = _foreground(container.console, container.wait, signals)
            container.close_console()
        if not keep:
            container.delete(force=True)
        return status


class Container:
    def __init__(self, runtime: Runtime, entry: S.Entry, st: S.ContainerState) -> None:
        self.runtime = runtime
        self.entry = entry
        self._state = st
        self.console = -1  # the pty master kept for a foreground run (see Runtime.create)

    def close_console(self) -> None:
        if self.console >= 0:
            os.close(self.console)
            self.console = -1

    @property
    def id(self) -> str:
        return self._state.id

    @property
    def status(self) -> str:
        return S.derive_status(self.entry, self._state)

    @property
    def pid(self) -> int:
        """The init's host pid, or 0 once the container has stopped (as runc's state shows)."""
        return 0 if self.status == S.STOPPED else self._state.init_pid

    @property
    def bundle(self) -> str:
        return self._state.bundle

    @property
    def created(self) -> str:
        return self._state.created

    def config(self) -> Config:
        """The config as validated at create time (never the bundle's current file)."""
        return Config.from_dict(self.entry.read_config())

    def state(self) -> dict:
        """The runtime-spec state, with runc's fields and order."""
        out = {
            "ociVersion": S.OCI_VERSION, "id": self.id, "pid": self.pid, "status": self.status,
            "bundle": self._state.bundle, "rootfs": self._state.rootfs, "created": self._state.created,
            "owner": "",
        }
        if self._state.annotations:
            out["annotations"] = self._state.annotations
        return out

    def owner_name(self) -> str:
        import pwd
        try:
            return pwd.getpwuid(self._state.owner_uid).pw_name
        except KeyError:
            return f"#{self._state.owner_uid}"

    # -- create helpers (called by Runtime.create through the init handshake) -------------------

    def _record_init_pid(self, pid: int) -> dict:
        self._state.init_pid = pid
        self._state.init_start = S.process_start_time(pid) or 0
        self.entry.write_state(self._state)
        return self._hook_state(S.CREATING, pid)

    def _hook_state(self, status: str, pid: int | None = None) -> dict:
        out = {"ociVersion": S.OCI_VERSION, "id": self.id, "status": status,
               "pid": self._state.init_pid if pid is None else pid, "bundle": self._state.bundle}
        if self._state.annotations:
            out["annotations"] = self._state.annotations
        return out

    def _idmapped_tree(self, cfg: Config, msg: object) -> int:
        """For the init: a detached idmapped clone of a bind mount's source.  The mapping is the
        mount's own uidMappings/gidMappings, or else the container's user namespace."""
        from . import linux as L
        from .process import userns_with_maps

        m = cfg.mounts[int(msg["index"])]  # type: ignore[index]
        if m.uid_mappings or m.gid_mappings:
            userns = userns_with_maps(m.uid_mappings, m.gid_mappings)
        else:
            userns = os.open(f"/proc/{self._state.init_pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        try:
            return L.idmapped_tree(str(msg["source"]), userns, bool(msg["recursive"]))  # type: ignore[index]
        except OSError as e:
            raise PyruncError(f"mounts[{msg['index']}]: cannot idmap {msg['source']}: {e.strerror}") from None  # type: ignore[index]
        finally:
            os.close(userns)

    def _send_seccomp_fd(self, cfg: Config, fd: int, status: str, pid: int) -> None:
        """linux.seccomp with SCMP_ACT_NOTIFY: the listener fd and the container process state
        (``pid``: the process the filter is on) go to the agent at listenerPath, as runc does."""
        from .seccomp import process_state, send_listener_fd

        sc = cfg.linux.seccomp or {}
        doc = process_state(self._hook_state(status), pid, sc.get("listenerMetadata"))
        try:
            send_listener_fd(str(sc.get("listenerPath", "")), doc, fd)
        except OSError as e:
            raise PyruncError(f"linux.seccomp.listenerPath: {e.strerror}") from None

    def _run_create_hooks(self, cfg: Config) -> None:
        state = self._hook_state(S.CREATING)
        run_hooks("prestart", cfg.hooks.prestart, state)
        run_hooks("createRuntime", cfg.hooks.create_runtime, state)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._lock_and_reload()
        try:
            status = self.status
            if status != S.CREATED:
                raise InvalidStateError(_START_ERRORS.get(status, f"cannot start a container in status {status}"))
            fifo = self.entry.file(S.GATE_FIFO)
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as e:
                if e.errno == errno.ENXIO:  # nobody holds the read end: the init is gone
                    raise ContainerNotRunningError() from None
                raise
            report = _open_report(self.entry.file(S.REPORT_FIFO))
            try:
                os.write(fd, b"0")
                os.unlink(fifo)
                _wait_for_no_reader(fd)  # the init holds the read end until its exec
                failure = _read_report(report)
            finally:
                os.close(fd)
                if report >= 0:
                    os.close(report)
            if failure:
                # runtime.md: a failing startContainer hook is an error of `start`, and the
                # container stops (the init has already exited).
                self._signal_init(SIGKILL)
                raise PyruncError(failure)
            cfg = self.config()
            try:
                run_hooks("poststart", cfg.hooks.poststart, self._hook_state(S.RUNNING))
            except PyruncError:
                # runtime-spec 1.3.0: a failing poststart hook stops the container.
                self._signal_init(SIGKILL)
                raise
        finally:
            self.entry.unlock()

    def kill(self, signum: int, all_processes: bool = False) -> None:
        status = self.status
        if status not in (S.CREATED, S.RUNNING, S.PAUSED):
            raise ContainerNotRunningError()
        if all_processes or (signum == SIGKILL and not self._state.own_pid_namespace):
            # Without its own PID namespace the init's death does not take the others with it.
            cgroup = self._cgroup()
            if cgroup.rootless and not cgroup.exists():  # no cgroup: its PID namespace (rootless.py)
                from .cgroups.base import signal_pids
                signal_pids([p for p in self.processes() if p != self._state.init_pid], signum)
            else:
                cgroup.kill_all(signum)
        sent = self._signal_init(signum)
        if signum == SIGKILL and status == S.PAUSED:
            self._thaw_after_kill()
        if not sent and not all_processes:
            raise ContainerNotRunningError()

    def _signal_init(self, signum: int) -> bool:
        """Signal the init through a pidfd, after checking the pid was not reused."""
        pid = self._state.init_pid
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        try:
            if S.process_start_time(pid) != self._state.init_start:
                return False
            _signal.pidfd_send_signal(pidfd, signum)
            return True
        except ProcessLookupError:
            return False
        finally:
            os.close(pidfd)

    def delete(self, force: bool = False) -> None:
        self._lock_and_reload()
        try:
            status = self.status
            if status in (S.RUNNING, S.PAUSED, S.CREATING) and not force:
                raise InvalidStateError(f"cannot delete container {self.id} that is not stopped: {status}")
            if status != S.STOPPED:
                self._signal_init(SIGKILL)
                if status == S.PAUSED:
                    self._thaw_after_kill()
                self._wait_gone(10.0)
            self._destroy()
        finally:
            self.entry.unlock()

    def pause(self) -> None:
        """Freeze every process of the container (runc: from created or running)."""
        self._lock_and_reload()
        try:
            if self.status not in (S.CREATED, S.RUNNING):
                raise ContainerNotRunningError()
            self._cgroup().freeze()
        finally:
            self.entry.unlock()

    def resume(self) -> None:
        """Thaw a paused container; it is created or running again, as it was before."""
        self._lock_and_reload()
        try:
            if self.status != S.PAUSED:
                raise ContainerNotPausedError()
            self._cgroup().thaw()
        finally:
            self.entry.unlock()

    def processes(self) -> list[int]:
        """Host pids in the container's cgroup tree, sorted (runc's Processes); [] once it is gone."""
        if not self._state.cgroup:
            return []
        cgroup = self._cgroup()
        if cgroup.rootless and not cgroup.exists():
            # a rootless container without a cgroup (runc's ps fails there): its PID namespace
            from .rootless import ns_pids
            own = self._state.own_pid_namespace and self.status != S.STOPPED
            return ns_pids(self._state.init_pid) if own else []
        return cgroup.pids()  # type: ignore[no-any-return]

    def _thaw_after_kill(self) -> None:
        """After SIGKILL to a paused container: frozen v1 tasks die only once thawed (runc)."""
        try:
            self._cgroup().thaw()
        except PyruncError as e:
            self.runtime.warn(f"container {self.id}: cannot thaw after SIGKILL: {e}")

    def _lock_and_reload(self) -> None:
        """Take the container's lock and re-read its state: another command may have changed it."""
        self.entry.lock()
        try:
            self._state = self.entry.read_state()
        except BaseException:
            self.entry.unlock()
            raise

    def _destroy(self) -> None:
        cfg = None
        try:
            cfg = self.config()
        except (OSError, ValueError) as e:
            self.runtime.warn(f"container {self.id}: persisted config unreadable ({e}); poststop hooks skipped")
        cgroup = self._cgroup()
        if cgroup.exists():
            cgroup.kill_all(SIGKILL)  # whatever is left, e.g. processes that shared our PID namespace
            cgroup.destroy()
        if cfg is not None and cfg.hooks.poststop:
            try:
                run_hooks("poststop", cfg.hooks.poststop, self._hook_state(S.STOPPED))
            except PyruncError as e:
                self.runtime.warn(str(e))  # config.md: a failing poststop hook is only a warning
        self.entry.remove()

    def _cgroup(self):  # type: ignore[no-untyped-def]
        return _cgroups().manager_from_state(self._state.cgroup)

    def _wait_gone(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while S.process_start_time(self._state.init_pid) == self._state.init_start:
            if time.monotonic() > deadline:
                raise PyruncError(f"container {self.id}: init {self._state.init_pid} did not die after SIGKILL")
            time.sleep(0.002)

    def wait(self) -> int:
        """Reap the init (we must be its reaper: ``run`` made us a subreaper) and return its status
        as a shell would: the exit code, or 128 + the signal number."""
        return _reap(self._state.init_pid)

    # -- exec -----------------------------------------------------------------------------------

    def exec(self, process: dict, detach: bool = False, pid_file: str | None = None,
             preserve_fds: int = 0, ignore_paused: bool = False, console_socket: str | None = None,
             pidfd_socket: str | None = None, sub_cgroup: dict[str, str] | None = None) -> int:
        """Run ``process`` (a runtime-spec process object, see ``pyrunc.execproc``) in the
        container: its namespaces, its cgroup (or the existing ``sub_cgroup`` of it, see
        ``pyrunc.cgroups.parse_sub_cgroups``).  In the foreground, wait and return its status
        (128 + N when killed by signal N), forwarding signals and relaying its terminal, if it
        has one; detached, return 0 once it runs (its terminal's master sent to
        ``console_socket``)."""
        from .execproc import check

        status = self.status
        if status == S.STOPPED:
            raise InvalidStateError("cannot exec in a stopped container")
        if status == S.PAUSED and not ignore_paused:
            raise InvalidStateError("cannot exec in a paused container (use --ignore-paused to override)")
        if status == S.CREATING:
            raise InvalidStateError("cannot exec in a container that is still being created")
        check(process, "process")
        sink = _ConsoleSink(bool(process.get("terminal")), detach, console_socket)
        pidfd_sock = None
        if pidfd_socket:
            from .fdsocket import connect_pidfd_socket
            try:
                pidfd_sock = connect_pidfd_socket(pidfd_socket)
            except BaseException:
                sink.close()
                raise
        if detach:
            self._spawn_exec(process, sink, pidfd_sock, preserve_fds, sub_cgroup, pid_file)
            return 0
        # The process is our grandchild (the init stage forks it into the PID namespace and
        # exits): become its reaper to learn its status.
        import _prctl
        _prctl.prctl(_prctl.PR_SET_CHILD_SUBREAPER, 1)
        from .signals import forward_signals
        with forward_signals() as signals:  # what arrives from now on goes to the process
            pid = self._spawn_exec(process, sink, pidfd_sock, preserve_fds, sub_cgroup, pid_file)
            signals.target(pid)
            try:
                return _foreground(sink.master, lambda: _reap(pid), signals)
            finally:
                if sink.master >= 0:
                    os.close(sink.master)

    def _spawn_exec(self, process: dict, sink: _ConsoleSink, pidfd_sock: FdSocket | None, preserve_fds: int,
                    sub_cgroup: dict[str, str] | None, pid_file: str | None) -> int:
        """The exec's init stage, through its handshake: the process is running when this returns
        its host pid (its terminal and pidfd handed over, its pid file written)."""
        from .process import InitProcess

        init = InitProcess(preserve_fds)
        try:
            init.spawn()
            self._cgroup().add(init.stage1_pid, sub_cgroup)
            init.handshake(
                go={"exec": True, "id": self.id, "state_dir": self.entry.path, "init_pid": self._state.init_pid,
                    "process": process, "preserve_fds": preserve_fds, "debug": self.runtime.debug,
                    "no_new_keyring": self._state.no_new_keyring},
                write_id_maps=None, on_pid=lambda pid: {}, run_hooks=None, warn=self.runtime.warn,
                on_console=sink.take,
                on_seccomp_fd=lambda fd: self._send_seccomp_fd(self.config(), fd, S.RUNNING, init.pid))
            if pid_file:
                S.atomic_write(os.path.abspath(pid_file), str(init.pid), 0o644)
            if pidfd_sock is not None:
                from .fdsocket import send_pidfd
                send_pidfd(pidfd_sock, init.pid, "setns")
        except BaseException:
            sink.close(master_too=True)
            init.abort()
            raise
        finally:
            init.close()
            if pidfd_sock is not None:
                pidfd_sock.close()
        sink.close()
        return init.pid

    # -- update / events ------------------------------------------------------------------------

    def update(self, resources: dict) -> None:
        """runc update: merge a LinuxResources document (``pyrunc.update.merge``) into the
        persisted linux.resources, apply the result to the cgroup, then persist it atomically.

        Device rules are left alone (runc's SkipDevices).  A failure names the flag or JSON
        path; the limits written before it are set back to the old ones (best effort) and the
        persisted config is unchanged."""
        from .config import _resources
        from .update import check_merged, merge, rollback

        self._lock_and_reload()
        try:
            if self.status == S.STOPPED:
                raise ContainerNotRunningError()
            doc = self.entry.read_config()
            linux = doc.setdefault("linux", {})
            old = linux.get("resources") or {}
            merged = merge(old, resources)
            check_merged(merged)
            new_r, old_r = _resources(merged), _resources(rollback(old, merged))
            new_r.devices, old_r.devices = [], []
            cgroup = self._cgroup()
            try:
                cgroup.apply(new_r)
            except PyruncError:
                _quietly(lambda: cgroup.apply(old_r))
                raise
            linux["resources"] = merged
            self.entry.write_config(doc)
        finally:
            self.entry.unlock()

    def cgroup_manager(self):  # type: ignore[no-untyped-def]
        """The container's cgroup Manager (``pyrunc.cgroups``)."""
        return self._cgroup()

    def cgroup_stats(self) -> dict:
        """The cgroup's statistics (``Manager.stats()``), for ``events``."""
        return self._cgroup().stats()  # type: ignore[no-any-return]


_START_ERRORS = {
    S.STOPPED: "cannot start a container that has stopped",
    S.RUNNING: "cannot start an already running container",
    S.PAUSED: "cannot start a paused container",
    S.CREATING: "cannot start a container that is still being created",
}


def _check_runnable(cfg: Config, bundle: str) -> str:
    """What create needs beyond a valid config; returns the absolute rootfs path."""
    problems = []
    if cfg.process is None:
        problems.append("process: required to create a container")
    if cfg.root is None:
        problems.append("root: required on Linux")
        raise ConfigError(problems)
    rootfs = os.path.join(bundle, cfg.root.path)
    if not os.path.isdir(rootfs):
        problems.append(f"root.path: {rootfs} is not a directory")
    if problems:
        raise ConfigError(problems)
    _check_implemented(cfg)
    return os.path.realpath(rootfs)


def _check_implemented(cfg: Config) -> None:
    """Refuse clearly what pyrunc cannot do yet, instead of silently doing less."""
    proc, lx = cfg.process, cfg.linux
    missing = []
    if (proc is not None and (proc.apparmor_profile or proc.selinux_label)) or lx.mount_label:
        from .lsm import problems
        missing += problems(proc, lx)
    for name, value in (("linux.intelRdt", lx.intel_rdt),
                        ("linux.personality", lx.personality), ("linux.memoryPolicy", lx.memory_policy),
                        ("process.ioPriority", proc and proc.io_priority),
                        ("process.scheduler", proc and proc.scheduler),
                        ("process.execCPUAffinity", proc and proc.exec_cpu_affinity)):
        if value:
            missing.append(f"{name}: not supported by pyrunc yet")
    if missing:
        raise NotSupportedError("\n".join(f"config.json: {m}" for m in missing))


class _ConsoleSink:
    """Where the pty master of process.terminal goes: the console socket, or kept in
    ``master`` for a foreground relay.  Checked and connected before anything is made."""

    def __init__(self, terminal: bool, detach: bool, console_socket: str | None) -> None:
        self.socket = None
        self.master = -1
        if terminal or console_socket:
            from .console import check_terminal, connect_console_socket
            check_terminal(terminal, detach, console_socket)
            if console_socket:
                self.socket = connect_console_socket(console_socket)

    def take(self, master: int) -> None:
        if self.socket is None:
            from .console import follow_window_size
            follow_window_size(master)  # now, before the process can ask for its size
            self.master = master
            return
        from .console import send_master
        try:
            send_master(self.socket, master)
        finally:
            os.close(master)

    def close(self, master_too: bool = False) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None
        if master_too and self.master >= 0:
            os.close(self.master)
            self.master = -1


def _foreground(master: int, wait: Callable[[], int], signals: forward_signals) -> int:
    """Wait for a foreground process (``signals`` forwards ours to it); with a terminal
    (``master`` >= 0), relay our stdio to it in raw mode, its window size following ours."""
    if master < 0:
        return wait()
    from .console import RawTerminal, follow_window_size, relay
    signals.handle(_signal.SIGWINCH, follow_window_size(master))
    with RawTerminal():
        relay(master, signals.pid)
        return wait()


def _open_report(path: str) -> int:
    """The read end of the init's report fifo, opened before the gate opens so that what the
    init writes before it dies stays readable; -1 without one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return -1
    os.unlink(path)
    return fd


def _read_report(fd: int) -> str:
    if fd < 0:
        return ""
    try:
        return os.read(fd, 65536).decode(errors="replace").strip()
    except BlockingIOError:
        return ""


def _wait_for_no_reader(fd: int) -> None:
    """Wait until the fifo's last reader is gone: the init's exec (or its death) closes it."""
    import select
    poller = select.poll()
    poller.register(fd, 0)  # POLLERR is always reported: no readers left
    while not poller.poll():
        pass


def _reap(pid: int) -> int:
    """Reap children until ``pid``; its status as a shell gives it (128 + N for signal N)."""
    while True:
        try:
            got, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        except InterruptedError:
            continue
        if got == pid:
            if os.WIFSIGNALED(status):
                return 128 + os.WTERMSIG(status)
            return os.waitstatus_to_exitcode(status)


def _quietly(fn: object) -> None:
    try:
        fn()  # type: ignore[operator]
    except Exception:  # noqa: BLE001 - best-effort cleanup after another error
        pass
