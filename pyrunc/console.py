"""The runtime's side of ``process.terminal``: where the pty master goes.

The init stage makes the pty inside the container and hands the master over the init
channel (see ``pyrunc.init.console``).  Then either

* ``--console-socket PATH``: the master is passed on to the caller's AF_UNIX socket with
  SCM_RIGHTS, as runc does (containerd's shim and conmon listen there), or
* a foreground ``run`` / ``exec``: pyrunc itself relays between its own stdio and the
  master until the process exits, with its terminal in raw mode, window-size changes
  passed on, and the terminal restored afterwards (runc's tty.go).

runc's rules for when each applies are ``check_terminal``.
"""

from __future__ import annotations

import errno
import os

from .errors import PyruncError

TYPE_CHECKING = False  # typing costs ~11 ms to import: only type checkers read it
if TYPE_CHECKING:
    from typing import Callable

    from .fdsocket import FdSocket

# What runc sends beside the fd (the master's name: containerd/console opens "/dev/ptmx").
_MASTER_NAME = b"/dev/ptmx"
_TIOCGWINSZ = 0x5413
_TIOCSWINSZ = 0x5414


def check_terminal(terminal: bool, detach: bool, console_socket: str | None) -> None:
    """runc's checkTerminal, with its words."""
    if detach and terminal and not console_socket:
        raise PyruncError("cannot allocate tty if runc will detach without setting console socket")
    if (not detach or not terminal) and console_socket:
        raise PyruncError("cannot use console socket if runc will not detach or allocate tty")


def connect_console_socket(path: str) -> FdSocket:
    """The caller's console socket, connected now: a bad path fails before anything is made."""
    from .fdsocket import FdSocket
    return FdSocket(path)


def send_master(sock: FdSocket, master: int) -> None:
    sock.send_fd(master, _MASTER_NAME, "the console's master to the console socket")


def window_size(fd: int) -> tuple[int, int] | None:
    """(rows, columns) of the terminal on ``fd``, or None if it is not a terminal."""
    import fcntl
    import struct

    try:
        rows, cols, _x, _y = struct.unpack("HHHH", fcntl.ioctl(fd, _TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return None
    return rows, cols


def set_window_size(fd: int, rows: int, cols: int) -> None:
    import fcntl
    import struct

    fcntl.ioctl(fd, _TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def follow_window_size(master: int, host: int = 0) -> Callable[..., None]:
    """A SIGWINCH handler that gives the pty our terminal's size (and applies it once now)."""
    def resize(*_args: object) -> None:
        size = window_size(host)
        if size is not None and size[0] and size[1]:
            try:
                set_window_size(master, *size)
            except OSError:
                pass  # the pty is gone: the process is exiting
    resize()
    return resize


class RawTerminal:
    """Our stdin terminal (if it is one) in raw mode for the ``with`` body: keys such as ^C go to
    the container's terminal, whose line discipline turns them into signals there."""

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        self.saved: list | None = None

    def __enter__(self) -> RawTerminal:
        import termios
        import tty

        if os.isatty(self.fd):
            self.saved = termios.tcgetattr(self.fd)
            tty.setraw(self.fd, termios.TCSANOW)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.saved is not None:
            import termios
            try:
                termios.tcsetattr(self.fd, termios.TCSANOW, self.saved)
            except termios.error:
                pass


def relay(master: int, pid: int, stdin: int = 0, stdout: int = 1) -> None:
    """Copy ``stdin`` to the pty and the pty to ``stdout`` until process ``pid`` has exited and
    its output is drained.  Returns without reaping it.

    Writes to the pty never block: what the process has not read yet waits in ``pending`` (and
    we read no more input meanwhile), so its output keeps flowing even when it reads nothing."""
    import select

    pidfd = os.pidfd_open(pid)
    os.set_blocking(master, False)
    poller = select.poll()
    poller.register(master, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    reading = True
    try:
        poller.register(stdin, select.POLLIN)
    except (OSError, ValueError):
        reading = False  # no stdin (closed): output only
    pending = b""
    master_open = True
    try:
        while True:
            for fd, events in poller.poll():
                if fd == pidfd:
                    _drain(master, stdout)
                    return
                if fd == master:
                    if events & select.POLLOUT and pending:
                        pending = pending[_write_some(master, pending):]
                    if events & (select.POLLIN | select.POLLHUP | select.POLLERR) and not _copy(master, stdout):
                        poller.unregister(master)  # every peer closed: wait for the exit itself
                        master_open, pending = False, b""
                elif fd == stdin:
                    try:
                        data = os.read(stdin, 65536)
                    except BlockingIOError:
                        continue
                    if not data:
                        poller.unregister(stdin)  # end of our input; the process goes on
                        reading = False
                    elif master_open:
                        pending += data
                        pending = pending[_write_some(master, pending):]
            if master_open:
                poller.modify(master, select.POLLIN | (select.POLLOUT if pending else 0))
            if reading:
                poller.modify(stdin, 0 if pending else select.POLLIN)
    finally:
        os.close(pidfd)


def _write_some(fd: int, data: bytes) -> int:
    """As much of ``data`` as a non-blocking ``fd`` takes now."""
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0


def _copy(src: int, dst: int) -> bool:
    """One read from ``src`` written wholly to ``dst``; False at the end of ``src``."""
    try:
        data = os.read(src, 65536)
    except BlockingIOError:
        return True
    except OSError as e:
        if e.errno == errno.EIO:  # a pty master whose peers are all closed
            return False
        raise
    if not data:
        return False
    _write_all(dst, data)
    return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BrokenPipeError:
            return  # nobody reads our output any more: drop it, as runc's io.Copy would stop


def _drain(master: int, stdout: int) -> None:
    """What the process wrote just before it exited may still be in the pty: copy it out until
    the pty reports that every peer is closed (EIO), or nothing more comes for a moment (a
    process outside the container's PID namespace may still hold it open)."""
    import select

    while select.select([master], [], [], 0.2)[0]:
        if not _copy(master, stdout):
            return
