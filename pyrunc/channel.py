"""The typed message channel between the runtime (parent) and its init stage.

One ``SOCK_SEQPACKET`` socketpair carries every step of the create handshake, so
message boundaries are kept by the kernel and a dead peer shows as EOF.  Each
message is a small JSON object whose ``kind`` is one of the constants below;
``Message`` gives them attribute access.  An ``error`` message from the init stage
becomes an ``InitError`` in the parent, with the init's own words.

The steps, in order (init -> parent unless marked):

``GO`` (parent -> stage 1)          what the init stage needs besides config.json
``USERMAP``                         stage 1 has unshared its user ns: write the id maps
``USERMAP_DONE`` (parent -> init)
``PID``                             stage 1 forked the container init: its host pid
``PID_DONE`` (parent -> init)       the parent recorded it; stage 2 may go on
``MOUNT_FD``                        make an idmapped tree of ``source`` (only the runtime can)
``MOUNT_FD_DONE`` (parent -> init)  the tree's fd, passed with SCM_RIGHTS
``HOOKS``                           run prestart and createRuntime hooks now
``HOOKS_DONE`` (parent -> init)
``WARN``                            something runc only warns about; the runtime logs it
``CONSOLE``                         the pty master of process.terminal, passed with SCM_RIGHTS
``SECCOMP_FD``                      the seccomp listener fd (SCMP_ACT_NOTIFY), passed with SCM_RIGHTS
``SECCOMP_FD_DONE`` (parent -> init) the runtime has it (and sends it to linux.seccomp.listenerPath)
``READY``                           set up and about to wait at the start gate
``ERROR``                           set-up failed; ``message`` says why

``_socket`` rather than ``socket``: the wrapper module builds enums at import time.
"""

from __future__ import annotations

import _socket
import os
import sys

from . import jsonio

GO = "go"
USERMAP = "usermap"
USERMAP_DONE = "usermap-done"
PID = "pid"
PID_DONE = "pid-done"
HOOKS = "hooks"
HOOKS_DONE = "hooks-done"
MOUNT_FD = "mount-fd"
MOUNT_FD_DONE = "mount-fd-done"  # (parent -> init) carries the fd with SCM_RIGHTS
READY = "ready"
WARN = "warn"
CONSOLE = "console"  # carries the pty master with SCM_RIGHTS
SECCOMP_FD = "seccomp-fd"  # carries the seccomp listener fd with SCM_RIGHTS
SECCOMP_FD_DONE = "seccomp-fd-done"
ERROR = "error"

_MAX = 1 << 18  # above what a socket buffer takes in one message: exec's process (its env) may be big
_MAX_FDS = 4  # the most fds one message carries (GO: the start gate and the report fifo)



class ChannelClosed(Exception):
    """The peer went away without a word (it died, or exec'd)."""


TYPE_CHECKING = False  # typing costs ~11 ms to import: only type checkers read it
if TYPE_CHECKING:
    from typing import Any


class Message:
    __slots__ = ("kind", "fields", "fds")

    def __init__(self, kind: str, fields: dict, fds: list[int] | None = None) -> None:
        self.kind = kind
        self.fields = fields
        self.fds = fds or []  # file descriptors that came with it (SCM_RIGHTS): the receiver's

    @property
    def fd(self) -> int:
        """The first fd that came with it, or -1."""
        return self.fds[0] if self.fds else -1

    def close_fds(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: object = None) -> Any:
        return self.fields.get(key, default)

    def __repr__(self) -> str:
        return f"Message({self.kind!r}, {self.fields!r})"


class Channel:
    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock

    @classmethod
    def pair(cls) -> tuple[Channel, Channel]:
        a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        return cls(a), cls(b)

    @classmethod
    def from_fd(cls, fd: int) -> Channel:
        return cls(_socket.socket(fileno=fd))

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, kind: str, **fields: object) -> None:
        fields["kind"] = kind
        self.sock.send(jsonio.dumps(fields).encode())

    def send_fd(self, kind: str, fd: int, **fields: object) -> None:
        self.send_fds(kind, [fd], **fields)

    def send_fds(self, kind: str, fds: list[int], **fields: object) -> None:
        fields["kind"] = kind
        payload = b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds)
        self.sock.sendmsg([jsonio.dumps(fields).encode()], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, payload)])

    def recv(self) -> Message:
        """The next message, with the fds it carried (if any) as ``.fds``: the receiver owns them
        (received close-on-exec)."""
        data, ancillary, flags, _addr = self.sock.recvmsg(_MAX, _socket.CMSG_SPACE(4 * _MAX_FDS),
                                                         _socket.MSG_CMSG_CLOEXEC)
        fds = []
        for level, ctype, payload in ancillary:
            if level == _socket.SOL_SOCKET and ctype == _socket.SCM_RIGHTS:
                fds += [int.from_bytes(payload[i:i + 4], sys.byteorder) for i in range(0, len(payload) - 3, 4)]
        msg = Message("", {}, fds)
        if flags & _socket.MSG_TRUNC:
            msg.close_fds()
            raise ChannelClosed(f"a message of more than {_MAX} bytes")
        if not data:
            msg.close_fds()
            raise ChannelClosed()
        doc = jsonio.loads(data)
        msg.kind, msg.fields = doc.pop("kind"), doc  # type: ignore[union-attr]
        return msg

    def recv_fd(self, kind: str) -> int:
        """Receive ``kind`` with one fd attached (or raise the peer's error)."""
        msg = self.expect(kind)
        if msg.fd < 0:
            raise ChannelClosed(f"expected {kind!r} with a file descriptor")
        return msg.fd

    def expect(self, kind: str) -> Message:
        """Receive and insist on ``kind``; an ``error`` from the peer is raised as InitError."""
        msg = self.recv()
        if msg.kind != kind:
            msg.close_fds()
        if msg.kind == ERROR:
            from .errors import InitError
            raise InitError(str(msg.get("message")))
        if msg.kind != kind:
            raise ChannelClosed(f"expected {kind!r}, got {msg.kind!r}")
        return msg

    def close(self) -> None:
        self.sock.close()
