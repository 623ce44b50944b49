"""``--log`` and ``--log-format``, shaped like runc's logrus output.

text: ``time="2026-12-04T16:44:57Z" level=error msg="container does not exist"``
json: ``{"level":"error","msg":"container does not exist","time":"2026-12-04T16:44:57Z"}``

A failure writes exactly ONE error record to the log: podman unmarshals the whole
log file as a single JSON object, and containerd takes the last error line.  When
the log is a file, the plain message also goes to stderr, as runc does (conmon
reads stderr when it cannot use the log).
"""

from __future__ import annotations

import os
import sys
import time

from . import jsonio


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Logger:
    def __init__(self) -> None:
        self.fd = 2
        self.to_file = False
        self.json = False
        self.debug_enabled = False

    def configure(self, path: object, fmt: str, debug: bool) -> None:
        from .errors import UsageError
        if fmt not in ("text", "json"):
            raise UsageError(f"invalid log-format: {fmt}")
        self.json = fmt == "json"
        self.debug_enabled = debug
        if path:
            # Created up front, as runc does: callers read it even when we print nothing.
            self.fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            self.to_file = True

    def _record(self, level: str, msg: str) -> None:
        if self.json:
            line = jsonio.dumps({"level": level, "msg": msg, "time": _now()})
        else:
            line = f"time=\"{_now()}\" level={level} msg={jsonio.dumps(msg)}"
        os.write(self.fd, (line + "\n").encode())

    def fatal(self, msg: str) -> None:
        if self.to_file or self.json:
            self._record("error", msg)
        else:
            # On a terminal, one logrus line per line of the message keeps config errors readable.
            for part in msg.splitlines() or [msg]:
                self._record("error", part)
        if self.to_file:
            sys.stderr.write(msg + "\n")
            sys.stderr.flush()

    def warn(self, msg: str) -> None:
        self._record("warning", msg)

    def debug(self, msg: str) -> None:
        if self.debug_enabled:
            self._record("debug", msg)
