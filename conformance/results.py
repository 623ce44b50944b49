"""Read the suite's TAP back: {(runtime, row): "pass" | "FAIL" | "skip"} (used by the CI test)."""

from __future__ import annotations

import re

_LINE = re.compile(r"^(ok|not ok) \d+ - (.*?): (.*?)(?: # (SKIP)?.*)?$")


def parse_tap(text: str) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            ok, runtime, row, skip = m.groups()
            out[(runtime, row)] = "FAIL" if ok == "not ok" else ("skip" if skip else "pass")
    return out
