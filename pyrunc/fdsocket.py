"""Passing a file descriptor to a caller's AF_UNIX socket (``--console-socket``,
``--pidfd-socket``), as runc's utils.SendRawFd does: one message whose bytes are a name
and whose SCM_RIGHTS carry the fd."""

from __future__ import annotations

from .errors import PyruncError


class FdSocket:
    """A connection made before anything is created (so that a bad path fails cleanly);
    ``what`` prefixes connection errors the way runc words them."""

    def __init__(self, path: str, what: str = "") -> None:
        import _socket

        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            reason = e.strerror or str(e)
            # Go's net error text: lower-case errno strings
            raise PyruncError(f"{what}dial unix {path}: connect: {reason[:1].lower()}{reason[1:]}") from None

    def send_fd(self, fd: int, name: bytes, what: str) -> None:
        import _socket

        rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fd.to_bytes(4, "little"))]
        try:
            self.sock.sendmsg([name], rights)
        except OSError as e:
            raise PyruncError(f"sending {what}: {e.strerror}") from None

    def close(self) -> None:
        self.sock.close()


def connect_pidfd_socket(path: str) -> FdSocket:
    return FdSocket(path, f"failed to dail {path}: ")  # sic: runc's words


def send_pidfd(sock: FdSocket, pid: int, init_type: str) -> None:
    """--pidfd-socket: a pidfd of ``pid``, named "standard" (create/run) or "setns" (exec), as
    runc's setupPidfd sends it."""
    import os

    pidfd = os.pidfd_open(pid)
    try:
        sock.send_fd(pidfd, init_type.encode(), "the pidfd on the pidfd socket")
    finally:
        os.close(pidfd)
