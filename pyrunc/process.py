"""The parent side of the init stage: spawn it, answer its requests, learn its pid.

The init stage is a re-exec of the same interpreter with ``-I -S`` (no site, no
environment, no user paths: about 6 ms to start here, against 9 ms with site)
and an explicit ``sys.path``.  It talks to us over one socketpair (see channel.py).
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys

import _prctl  # python-prctl's C part; ctypes (linux/) is not needed on the runtime's side
from .channel import (CONSOLE, GO, HOOKS, HOOKS_DONE, MOUNT_FD, MOUNT_FD_DONE, PID, PID_DONE, READY, SECCOMP_FD,
                      SECCOMP_FD_DONE, USERMAP, USERMAP_DONE, WARN, Channel, ChannelClosed)
from .errors import InitError

_BOOT = "import sys;sys.path[:0]=sys.argv[2:];from pyrunc.init import main;main(int(sys.argv[1]))"


def _import_paths() -> list[str]:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return [here] + [p for p in sys.path if p and p != here and os.path.isabs(p) and os.path.exists(p)]


class InitProcess:
    """One init stage being created.  ``on_*`` callbacks let the container code do its part."""

    def __init__(self, preserve_fds: int = 0) -> None:
        self.preserve_fds = preserve_fds
        self.stage1_pid = 0
        self.pid = 0  # the container's init, once known
        self.chan: Channel | None = None

    def spawn(self) -> int:
        """Start the init stage; it inherits our end of the channel, and waits for GO (which
        brings create's start gate and report fifo, opened by us: a container with a user
        namespace could not open them by path).  Spawned as early as possible, so that its
        interpreter starts while we validate and set up."""
        parent, child = Channel.pair()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child until exec
            try:
                parent.close()
                # Die with the runtime during create: a half-made container must not linger.
                _prctl.prctl(_prctl.PR_SET_PDEATHSIG, 9)
                # The channel goes above the preserved fds, which the container inherits as 3..3+N-1.
                # Our caller's other fds (an engine's pipes, say) are not the container's business:
                # keep stdio, the preserved ones, and the channel right above them.
                base = 3 + self.preserve_fds
                fd = fcntl.fcntl(child.fileno(), fcntl.F_DUPFD, base + 1)
                os.dup2(fd, base)
                fd = base
                # All the others, also those above a lowered RLIMIT_NOFILE (CVE-2024-21626: a host
                # directory fd left open is a way out through /proc/self/fd/N).
                os.closerange(base + 1, 0x7FFFFFFF)
                for keep in range(3, 3 + self.preserve_fds):
                    os.set_inheritable(keep, True)
                # Not by path: the container must find no writable host file behind our
                # /proc/PID/exe (CVE-2019-5736); argv[0] still tells Python where it lives.
                from .linux import sealed_executable
                os.execve(sealed_executable(sys.executable),
                          [sys.executable, "-I", "-S", "-c", _BOOT, str(fd)] + _import_paths(),
                          os.environ)
            except BaseException as e:  # noqa: BLE001
                os.write(2, f"pyrunc: cannot start the init stage: {e}\n".encode())
            os._exit(127)
        child.close()
        self.stage1_pid = pid
        self.chan = parent
        return pid

    def handshake(self, go: dict, write_id_maps: object, on_pid: object, run_hooks: object,
                  mount_fd: object = None, warn: object = None, on_console: object = None,
                  on_seccomp_fd: object = None, go_fds: list[int] | None = None) -> None:
        """Drive the create protocol until the init reports ready (or fails).  ``on_console``
        takes the pty master of process.terminal (and owns it from then on); ``on_seccomp_fd``
        gets the seccomp listener fd to send to the agent (we close it after).  ``go_fds`` go
        with GO (create's start gate and report fifo)."""
        chan = self.chan
        assert chan is not None
        if go_fds:
            chan.send_fds(GO, go_fds, **go)
        else:
            chan.send(GO, **go)
        try:
            while True:
                msg = chan.recv()
                if msg.kind == USERMAP:
                    write_id_maps(msg["pid"])  # type: ignore[operator]
                    chan.send(USERMAP_DONE)
                elif msg.kind == PID:
                    self.pid = int(msg["pid"])  # type: ignore[arg-type]
                    os.waitpid(self.stage1_pid, 0)
                    self.stage1_pid = 0
                    state = on_pid(self.pid)  # type: ignore[operator]
                    chan.send(PID_DONE, state=state)
                elif msg.kind == MOUNT_FD:
                    tree = mount_fd(msg)  # type: ignore[operator]
                    try:
                        chan.send_fd(MOUNT_FD_DONE, tree)
                    finally:
                        os.close(tree)
                elif msg.kind == HOOKS:
                    run_hooks()  # type: ignore[operator]
                    chan.send(HOOKS_DONE)
                elif msg.kind == CONSOLE and on_console is not None and msg.fd >= 0:
                    on_console(msg.fd)  # type: ignore[operator]
                elif msg.kind == SECCOMP_FD and on_seccomp_fd is not None and msg.fd >= 0:
                    try:
                        # runc's order: the init goes on at once (it waits for the agent
                        # itself if it makes a notifying syscall), then the agent gets the fd.
                        chan.send(SECCOMP_FD_DONE)
                        on_seccomp_fd(msg.fd)  # type: ignore[operator]
                    finally:
                        os.close(msg.fd)
                elif msg.kind == WARN:
                    if warn is not None:
                        warn(str(msg["message"]))  # type: ignore[operator]
                elif msg.kind == READY:
                    return
                else:
                    msg.close_fds()
                    raise InitError(str(msg.get("message", f"unexpected message {msg.kind!r}")))
        except ChannelClosed:
            raise InitError("the container's init stage exited unexpectedly") from None

    def abort(self) -> None:
        """Kill whatever of the init stage is still alive and reap what is ours."""
        for pid in (self.pid, self.stage1_pid):
            if pid:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
        if self.stage1_pid:
            try:
                os.waitpid(self.stage1_pid, 0)
            except ChildProcessError:
                pass
        self.close()

    def close(self) -> None:
        if self.chan is not None:
            self.chan.close()
            self.chan = None


def write_id_maps(pid: int, uid_mappings: list, gid_mappings: list) -> None:
    """Write /proc/PID/{uid,gid}_map for a child that has just unshared its user namespace.

    As runc's nsexec: an unprivileged runtime may itself map only its own uid and gid (one id
    each), and the kernel wants setgroups denied before such a gid_map; runc denies it only for
    exactly ``0 <egid> 1``, we for any one-id map of our egid.  Any other map is written
    directly too and, when the kernel refuses it (EPERM), by the setuid newuidmap/newgidmap
    (package uidmap), which check /etc/subuid and /etc/subgid; setgroups then stays allowed."""
    rootless = os.geteuid() != 0
    if rootless and len(gid_mappings) == 1 and gid_mappings[0].size == 1 \
            and gid_mappings[0].host_id == os.getegid():
        with open(f"/proc/{pid}/setgroups", "w") as f:
            f.write("deny")
    for name, maps in (("uid_map", uid_mappings), ("gid_map", gid_mappings)):
        if not maps:
            continue
        text = "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in maps)
        try:
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(text)
        except OSError as e:
            if not (rootless and e.errno == errno.EPERM):
                raise InitError(f"writing {name} ({text.strip()!r}): {e.strerror}") from None
            _map_with_tool("newuidmap" if name == "uid_map" else "newgidmap", pid, maps, e.strerror or "")


def _map_with_tool(tool: str, pid: int, maps: list, why: str) -> None:
    import shutil
    import subprocess

    what = "linux.uidMappings" if tool == "newuidmap" else "linux.gidMappings"
    path = shutil.which(tool)
    if path is None:
        raise InitError(f"{what}: an unprivileged user may map only its own id ({why}); mapping "
                        f"more needs {tool} (package uidmap) and /etc/sub{tool[3:6]} entries")
    argv = [path, str(pid)] + [str(v) for m in maps for v in (m.container_id, m.host_id, m.size)]
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env={}, check=False)
    if p.returncode != 0:
        out = p.stdout.decode(errors="replace").strip()
        raise InitError(f"{what}: {tool} failed (exit {p.returncode}): {out}")


def userns_with_maps(uid_mappings: list, gid_mappings: list) -> int:
    """An fd of a new user namespace with these mappings (for an idmapped mount's own mappings):
    a child unshares it and waits while we write its maps and open it, then exits."""
    from . import linux as L

    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(ready_r)
            os.close(done_w)
            L.unshare(L.CLONE_NEWUSER)
            os.write(ready_w, b"1")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise InitError("could not create a user namespace for an idmapped mount")
        write_id_maps(pid, uid_mappings, gid_mappings)
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(done_w)
        os.waitpid(pid, 0)
