"""Running OCI hooks: the container's state JSON on stdin, ``timeout`` honoured.

Who runs which hook, and where (config.md, "POSIX-platform Hooks"):

* prestart, createRuntime: the runtime, in the runtime's namespaces, during create
* createContainer: the init stage, in the container's namespaces, before pivot_root
* startContainer: the init stage, in the container, after start and before exec
* poststart: the runtime, after the user process has started (``start``)
* poststop: the runtime, when the container is deleted

No ``subprocess`` here: the init stage runs hooks too, and must not import from
files the container could have replaced, so everything is imported up front and
kept to os-level calls.
"""

from __future__ import annotations

import errno
import os
import time

from . import jsonio
from .errors import PyruncError


class HookError(PyruncError):
    pass


def run_hooks(kind: str, hooks: list, state: dict) -> None:
    """Run each hook in order; the first failure raises HookError naming the hook."""
    payload = jsonio.dumps(state).encode()
    for i, hook in enumerate(hooks):
        run_hook(f"{kind}[{i}]", hook, payload)


def run_hook(label: str, hook: object, payload: bytes) -> None:
    path: str = hook.path  # type: ignore[attr-defined]
    args: list[str] = hook.args or [path]  # type: ignore[attr-defined]
    env: list[str] = hook.env  # type: ignore[attr-defined]
    timeout: int | None = hook.timeout  # type: ignore[attr-defined]
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        raise
    if pid == 0:  # child: state on stdin, then exec the hook
        try:
            os.dup2(r, 0)
            os.execve(path, args, dict(e.split("=", 1) for e in env if "=" in e))
        except OSError as e:
            os.write(2, f"hook {path}: {e.strerror}\n".encode())
        os._exit(127)
    os.close(r)
    try:
        os.write(w, payload)
    except OSError as e:
        if e.errno != errno.EPIPE:  # a hook may exit without reading its stdin
            raise
    finally:
        os.close(w)
    status = _wait(pid, timeout)
    if status is None:
        raise HookError(f"{label}: hook {path} did not finish within its timeout of {timeout}s")
    if status != 0:
        raise HookError(f"{label}: hook {path} failed: {describe_status(status)}")


def _wait(pid: int, timeout: int | None) -> int | None:
    """Wait for pid; on timeout kill it and return None, else its raw wait status."""
    if not timeout:
        return os.waitpid(pid, 0)[1]
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() >= deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return None
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
