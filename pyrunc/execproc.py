"""The process of ``exec``: a ``--process`` JSON file, or the container's own process overridden
by runc's flags (runc's exec.go ``getProcess``), validated like config.json's ``process``."""

from __future__ import annotations

from . import jsonio
from .errors import ConfigError, NotSupportedError, PyruncError

TYPE_CHECKING = False  # typing costs ~11 ms to import: only type checkers read it
if TYPE_CHECKING:
    from typing import Sequence


def from_file(path: str) -> dict:
    """A runtime-spec ``process`` object from ``path``; schema errors name the JSON path."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise PyruncError(f"open {path}: {e.strerror}") from None
    try:
        doc = jsonio.loads(raw)
    except ValueError as e:
        raise ConfigError([f"invalid JSON: {e}"], source=path) from None
    check(doc, path)
    return doc  # type: ignore[no-any-return]


def from_flags(base: dict, args: list[str], cwd: str | None = None, env: Sequence[str] = (),
               user: str | None = None, additional_gids: Sequence[str] = (), caps: Sequence[str] = (),
               no_new_privs: bool = False, tty: bool = False, apparmor: str = "", process_label: str = "") -> dict:
    """runc's getProcess without --process: the container's process, then the flags."""
    p = jsonio.loads(jsonio.dumps(base))  # a deep copy
    assert isinstance(p, dict)
    p["args"] = list(args)
    if cwd:
        p["cwd"] = cwd
    if caps:
        sets = p.get("capabilities") or {}
        for kind in ("bounding", "effective", "inheritable", "permitted", "ambient"):
            sets[kind] = list(sets.get(kind) or ()) + list(caps)
        p["capabilities"] = sets
    if env:
        p["env"] = list(p.get("env") or ()) + list(env)
    p["terminal"] = tty  # runc: --tty, whatever the container's own process has
    if no_new_privs:
        p["noNewPrivileges"] = True
    if apparmor:
        p["apparmorProfile"] = apparmor
    if process_label:
        p["selinuxLabel"] = process_label
    u = p.setdefault("user", {"uid": 0, "gid": 0})
    if user:
        uid, sep, gid = user.partition(":")
        if sep:
            if not _is_int(gid):
                raise PyruncError(f'parsing {gid} as int for gid failed: strconv.Atoi: parsing "{gid}": invalid syntax')
            u["gid"] = int(gid)
        if not _is_int(uid):
            raise PyruncError(f'parsing {uid} as int for uid failed: strconv.Atoi: parsing "{uid}": invalid syntax')
        u["uid"] = int(uid)
    for g in additional_gids:
        if not _is_int(g):
            raise PyruncError(f'invalid value "{g}" for flag -additional-gids')
        if int(g) < 0:
            raise PyruncError(f"additional-gids must be a positive number {g}")
        u["additionalGids"] = list(u.get("additionalGids") or ()) + [int(g)]
    check(p, "exec")
    return p  # type: ignore[no-any-return]


def check(doc: object, source: str) -> None:
    """Schema and semantic rules of config.json's ``process``, and what pyrunc cannot do yet."""
    from .config import _process_problems
    from .schema import validate_process

    problems = [str(e) for e in validate_process(doc)]
    if not problems:
        problems = _process_problems(doc)  # type: ignore[arg-type]
    if problems:
        raise ConfigError(problems, source=source)
    assert isinstance(doc, dict)
    for key in ("ioPriority", "scheduler", "execCPUAffinity"):
        if doc.get(key):
            raise NotSupportedError(f"process.{key}: not supported by pyrunc yet")
    if doc.get("apparmorProfile") or doc.get("selinuxLabel"):
        from .config import _process
        from .lsm import problems as lsm_problems
        missing = lsm_problems(_process(doc), None)
        if missing:
            raise NotSupportedError("\n".join(missing))


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit() and text.count("-") <= 1 and not text.endswith("-")
