"""Signal names and numbers, and forwarding signals to a foreground container.

``_signal`` (the C module) instead of ``signal``: the latter builds enums at import
time, which costs a couple of milliseconds on every command for nothing we use.
"""

from __future__ import annotations

import _signal
import os

from .errors import UsageError

# Every signal name the kernel has, without the SIG prefix.
NAMES = {name[3:]: getattr(_signal, name) for name in dir(_signal)
         if name.startswith("SIG") and not name.startswith(("SIG_", "SIGRT")) and name.isupper()}
NAMES.setdefault("RTMIN", _signal.SIGRTMIN)
NAMES.setdefault("RTMAX", _signal.SIGRTMAX)

# What `run` passes on to the container instead of acting on itself (runc's signal handler).
FORWARDED = ("HUP", "INT", "QUIT", "TERM", "USR1", "USR2", "WINCH", "CONT", "ALRM", "PIPE")


def parse_signal(text: str) -> int:
    """``9``, ``KILL``, ``SIGKILL``, ``sigkill`` or ``RTMIN+3`` -> the signal number (runc's rules)."""
    if text.isdigit():
        num = int(text)
        if 0 < num <= _signal.SIGRTMAX:
            return num
        raise UsageError(f"invalid signal: {text}")
    name = text.upper()
    if name.startswith("SIG"):
        name = name[3:]
    for base in ("RTMIN", "RTMAX"):
        if name.startswith(base) and len(name) > len(base):
            try:
                num = NAMES[base] + int(name[len(base):])
            except ValueError:
                break
            if _signal.SIGRTMIN <= num <= _signal.SIGRTMAX:
                return num
    if name in NAMES:
        return int(NAMES[name])
    raise UsageError(f"unknown signal {text!r}")


class forward_signals:
    """While the ``with`` body runs, the signals in FORWARDED go to the process ``pid`` instead of
    us, except those ``own`` maps to a handler of ours (SIGWINCH resizes a relayed terminal).

    Installed before the process exists (pid 0), it keeps what arrives and passes it on once
    ``target`` names the process: a signal sent to ``pyrunc run`` while the container is being
    created reaches the container, as with runc."""

    def __init__(self, pid: int = 0, own: dict[int, object] | None = None) -> None:
        self.pid = pid
        self.own = own or {}
        self.pending: list[int] = []
        self.old: dict[int, object] = {}

    def target(self, pid: int) -> None:
        self.pid = pid
        pending, self.pending = self.pending, []
        for signum in pending:
            self._forward(signum, None)

    def handle(self, signum: int, handler: object) -> None:
        """Our own ``handler`` for ``signum`` from now on, instead of forwarding it."""
        self.own[signum] = handler
        if self.old:
            _signal.signal(signum, handler)

    def _forward(self, signum: int, _frame: object) -> None:
        if not self.pid:
            self.pending.append(signum)
            return
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def __enter__(self) -> forward_signals:
        for name in FORWARDED:
            num = NAMES[name]
            self.old[num] = _signal.signal(num, self.own.get(num, self._forward))
        return self

    def __exit__(self, *_exc: object) -> None:
        for num, handler in self.old.items():
            _signal.signal(num, handler)
        self.old = {}
