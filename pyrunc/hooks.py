"""Running OCI hooks: the container's state JSON on stdin, ``timeout`` honoured.

Who runs which hook, and where (config.md, "POSIX-platform Hooks"):

* prestart, createRuntime: the runtime, in the runtime's namespaces, during create
* createContainer: the init stage, in the container's namespaces, before pivot_root
* startContainer: the init stage, in the container, after start and before exec
* poststart: the runtime, after the user process has started (``start``)
* poststop: the runtime, when the container is deleted

As runc does, a hook's stdout and stderr are captured (the init's own stdio is the
container's, which a hook must not write into) and quoted in the error when it
fails; a hook without ``env`` inherits the environment of the runtime (but gets
none inside the container).

No ``subprocess`` here: the init stage runs hooks too, and must not import from
files the container could have replaced, so everything is imported up front and
kept to os-level calls.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import time

import _signal

from . import jsonio
from .errors import PyruncError

_OUTPUT_MAX = 4096  # how much of a failing hook's stdout/stderr goes into the error


class HookError(PyruncError):
    pass


def run_hooks(kind: str, hooks: list, state: dict) -> None:
    """Run each hook in order; the first failure raises HookError naming the hook.

    poststop hooks are the exception (config.md: a failing one only warrants a warning and
    "the remaining hooks ... continue"): all of them run, and their failures are raised
    together at the end for the caller to report."""
    payload = jsonio.dumps(state).encode()
    failures = []
    # A hook without env inherits its runner's environment, as in runc; but not inside the
    # container (createContainer, startContainer), where the runtime's own must not leak.
    inherit = kind not in ("createContainer", "startContainer")
    for i, hook in enumerate(hooks):
        try:
            run_hook(f"{kind}[{i}]", hook, payload, inherit)
        except HookError as e:
            if kind != "poststop":
                raise
            failures.append(str(e))
    if failures:
        raise HookError("\n".join(failures))


def run_hook(label: str, hook: object, payload: bytes, inherit_env: bool = True) -> None:
    path: str = hook.path  # type: ignore[attr-defined]
    args: list[str] = hook.args or [path]  # type: ignore[attr-defined]
    env_list: list[str] | None = hook.env  # type: ignore[attr-defined]
    timeout: int | None = hook.timeout  # type: ignore[attr-defined]
    if env_list is None:
        env = dict(os.environ) if inherit_env else {}
    else:
        env = dict(e.split("=", 1) for e in env_list if "=" in e)
    pipes = [_pipe() for _ in range(4)]  # stdin, stdout, stderr, exec error
    (in_r, in_w), (out_r, out_w), (err_r, err_w), (exec_r, exec_w) = pipes
    try:
        pid = os.fork()
    except OSError:
        for fd in (fd for pair in pipes for fd in pair):
            os.close(fd)
        raise
    if pid == 0:  # child: state on stdin, output into our pipes, then exec the hook
        try:
            os.dup2(in_r, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            # Only stdio, as runc's exec.Cmd passes: none of the fds the runtime (or the init,
            # inside the container) inherited from its caller may reach the hook.
            os.closerange(3, exec_w)
            os.closerange(exec_w + 1, 0x7FFFFFFF)
            # Python ignores these; an ignored signal stays ignored across exec
            _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
            _signal.signal(_signal.SIGXFSZ, _signal.SIG_DFL)
            os.execve(path, args, env)
        except OSError as e:
            os.write(exec_w, str(e.errno).encode())
        except BaseException:  # noqa: BLE001 - e.g. an argument with a NUL byte
            os.write(exec_w, b"0")
        os._exit(127)
    for fd in (in_r, out_w, err_w, exec_w):
        os.close(fd)
    try:
        status, out, err = _communicate(pid, in_w, out_r, err_r, payload, timeout)  # closes in_w
        exec_errno = os.read(exec_r, 16)
    finally:
        for fd in (out_r, err_r, exec_r):
            os.close(fd)
    if exec_errno:
        code = int(exec_errno)
        reason = os.strerror(code) if code else "invalid path, arguments or environment"
        raise HookError(f"{label}: cannot run hook {path}: {reason}")
    if status is None:
        raise HookError(f"{label}: hook {path} did not finish within its timeout of {timeout}s "
                        f"and was killed{_quote(out, err)}")
    if status != 0:
        raise HookError(f"{label}: hook {path} failed: {describe_status(status)}{_quote(out, err)}")


def _pipe() -> tuple[int, int]:
    """A close-on-exec pipe whose ends are above stdio: the child's dup2 onto 0/1/2 must never
    clobber another end (the runner's own stdio may be closed, freeing those numbers)."""
    ends = []
    for fd in os.pipe2(os.O_CLOEXEC):
        if fd <= 2:
            high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
            os.close(fd)
            fd = high
        ends.append(fd)
    return ends[0], ends[1]


def _communicate(pid: int, in_w: int, out_r: int, err_r: int, payload: bytes,
                 timeout: int | None) -> tuple[int | None, bytes, bytes]:
    """Feed stdin (then close ``in_w``), collect stdout/stderr and reap the hook, killing it
    at the deadline.

    Returns (raw wait status or None on timeout, stdout, stderr).  Stops reading as soon as
    the hook has exited: a daemon it left behind may keep the pipes open for ever."""
    deadline = None if not timeout else time.monotonic() + timeout
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    readers = [out_r, err_r]
    writers = [in_w]
    status: int | None = None
    try:
        pidfd = os.pidfd_open(pid)
    except BaseException:
        os.close(in_w)
        raise
    try:
        for fd in (in_w, out_r, err_r):
            os.set_blocking(fd, False)
        while True:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                pid = 0
                for fd in list(readers):
                    _read_into(fd, chunks, readers, drain=True)
                break
            readable, writable, _ = select.select(readers + [pidfd], writers, [], wait)
            for fd in writable:
                try:
                    payload = payload[os.write(fd, payload[:65536]):]
                except OSError as e:
                    if e.errno not in (errno.EPIPE, errno.EAGAIN):  # a hook may ignore its stdin
                        raise
                    payload = b"" if e.errno == errno.EPIPE else payload
                if not payload:
                    writers = []
                    os.close(fd)
            for fd in readable:
                if fd != pidfd:
                    _read_into(fd, chunks, readers)
            if pidfd in readable:
                status = os.waitpid(pid, 0)[1]
                pid = 0
                for fd in list(readers):  # what it wrote before exiting
                    _read_into(fd, chunks, readers, drain=True)
                break
    finally:
        if pid:  # we are leaving on an error of our own: the hook must not outlive it
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(pidfd)
        if writers:
            os.close(in_w)
    return status, b"".join(chunks[out_r]), b"".join(chunks[err_r])


def _read_into(fd: int, chunks: dict[int, list[bytes]], readers: list[int], drain: bool = False) -> None:
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not data:
            readers.remove(fd)
            return
        if sum(map(len, chunks[fd])) < _OUTPUT_MAX:
            chunks[fd].append(data)
        if not drain:
            return


def _quote(out: bytes, err: bytes) -> str:
    text = ""
    for name, data in (("stdout", out), ("stderr", err)):
        s = data[:_OUTPUT_MAX].decode(errors="replace").strip()
        if s:
            text += f", {name}: {s}"
    return text


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
