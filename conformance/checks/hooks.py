"""config.md#posix-platform-hooks and runtime.md#lifecycle: the six hooks, their order, stdin,
namespaces, env/args, timeout and failures."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..harness import Ctx, Fail, check, ns_inode, wait_for

CF = "config.md#posix-platform-hooks"
KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


def _hook(log: str, name: str, extra: str = "") -> dict[str, Any]:
    """A hook that records its name, stdin, mount namespace and env into files beside ``log``.
    /bin/sh is the host's for runtime-namespace hooks and busybox's for startContainer."""
    d = os.path.dirname(log)
    script = (f"cat > {d}/{name}.json; readlink /proc/self/ns/mnt > {d}/{name}.mnt; "
              f"echo \"$CONF_ENV $1\" > {d}/{name}.env; echo {name} >> {log}{extra}")
    return {"path": "/bin/sh", "args": ["sh", "-c", script, "sh", f"arg-{name}"], "env": [f"CONF_ENV=env-{name}"]}


def _hooked(c: Ctx) -> tuple[dict[str, Any], Path]:
    """A config with all six hooks.  They write to a host dir that is also bind-mounted at the
    same path into the container, so that hooks running after pivot_root reach it too."""
    d = c.dir / "hooklog"
    d.mkdir(mode=0o777)
    log = str(d / "log")
    cfg = c.config()
    cfg["mounts"].append({"destination": str(d), "type": "bind", "source": str(d), "options": ["rbind", "rw"]})
    cfg["hooks"] = {k: [_hook(log, k)] for k in KINDS}
    return cfg, d


def _log(d: Path) -> list[str]:
    f = d / "log"
    return f.read_text().split() if f.exists() else []


def _lifecycle(c: Ctx) -> tuple[Any, Path, dict[str, list[str]]]:
    cfg, d = _hooked(c)
    seen: dict[str, list[str]] = {}
    k = c.create(cfg)
    seen["create"] = _log(d)
    k.start()
    seen["start"] = _log(d)
    k.kill("KILL")
    k.wait_status("stopped")
    r = k.delete()
    if not r.ok:
        raise Fail(f"delete: {r.why()}")
    seen["delete"] = _log(d)
    return k, d, seen


@check("hooks: called in lifecycle order", CF)
def hooks_order(c: Ctx) -> None:
    _k, _d, seen = _lifecycle(c)
    want = {"create": ["prestart", "createRuntime", "createContainer"],
            "start": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart"],
            "delete": list(KINDS)}
    for step in ("create", "start", "delete"):
        if seen[step] != want[step]:
            raise Fail(f"after {step}: hooks ran {seen[step]}, want {want[step]}")


@check("hooks: state on stdin", CF)
def hooks_stdin(c: Ctx) -> None:
    k, d, seen = _lifecycle(c)
    for kind in KINDS:
        f = d / f"{kind}.json"
        if not f.exists():
            raise Fail(f"{kind} did not run")
        try:
            st = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise Fail(f"{kind} got no state JSON on stdin: {f.read_text()[:100]!r}") from e
        for key in ("ociVersion", "id", "status", "bundle"):
            if key not in st:
                raise Fail(f"{kind}'s state lacks {key}: {st}")
        if st["id"] != k.id or os.path.realpath(st["bundle"]) != os.path.realpath(k.bundle):
            raise Fail(f"{kind}'s state names {st['id']} {st['bundle']}")
        if kind != "poststop" and not st.get("pid"):
            raise Fail(f"{kind}'s state has no pid: {st}")


@check("hooks: path, args and env", CF)
def hooks_args_env(c: Ctx) -> None:
    _k, d, _seen = _lifecycle(c)
    for kind in KINDS:
        got = (d / f"{kind}.env").read_text().strip() if (d / f"{kind}.env").exists() else None
        if got != f"env-{kind} arg-{kind}":
            raise Fail(f"{kind} saw env/arg {got!r}")


@check("hooks: runtime vs container namespace", CF)
def hooks_namespaces(c: Ctx) -> None:
    cfg, d = _hooked(c)
    k = c.create(cfg)
    ctr_mnt = ns_inode(k.pid, "mnt")
    k.start()
    k.kill("KILL")
    k.wait_status("stopped")
    k.delete()
    for kind in KINDS:
        f = d / f"{kind}.mnt"
        if not f.exists():
            raise Fail(f"{kind} did not run")
        inside = f.read_text().strip() == ctr_mnt
        if inside != (kind in ("createContainer", "startContainer")):
            raise Fail(f"{kind} ran {'inside' if inside else 'outside'} the container's mount namespace")


@check("hooks: startContainer path resolves in the container", CF)
def hooks_start_path(c: Ctx) -> None:
    cfg, d = _hooked(c)
    # /bin/conformance-sh exists in the container's rootfs only (a link to its busybox)
    hook = _hook(str(d / "log"), "startContainer")
    hook["path"] = "/bin/conformance-sh"
    cfg["hooks"] = {"startContainer": [hook]}
    if os.path.exists("/bin/conformance-sh"):
        raise Fail("the host has a /bin/conformance-sh: cannot tell where the path resolved")
    k = c.run(cfg)
    if not wait_for(lambda: _log(d) == ["startContainer"], 5):
        raise Fail(f"startContainer hook log: {_log(d)}")
    exe_ok = (d / "startContainer.mnt").read_text().strip() == ns_inode(k.pid, "mnt")
    if not exe_ok:
        raise Fail("startContainer did not run in the container")


def _failing(kind: str) -> Any:
    def fn(c: Ctx) -> None:
        cfg, d = _hooked(c)
        cfg["hooks"] = {kind: [{"path": "/bin/sh", "args": ["sh", "-c", "cat >/dev/null; exit 3"]}]}
        k = c.try_create(cfg)
        if kind in ("prestart", "createRuntime", "createContainer"):
            if k.create_result.ok:
                raise Fail(f"create succeeded although a {kind} hook failed")
            if c.rt("state", k.id).ok:
                st = json.loads(c.rt("state", k.id).out)
                if st.get("status") != "stopped":
                    raise Fail(f"the container lives on after a failed {kind} hook: {st.get('status')}")
            return
        if not k.create_result.ok:
            raise Fail(f"create: {k.create_result.why()}")
        r = c.rt("start", k.id)
        if r.ok:
            raise Fail(f"start succeeded although a {kind} hook failed")
        if kind == "startContainer" or kind == "poststart":
            st = c.rt("state", k.id)
            if st.ok and json.loads(st.out).get("status") == "running":
                time.sleep(1)
                st = c.rt("state", k.id)
                if st.ok and json.loads(st.out).get("status") == "running":
                    raise Fail(f"the container still runs after a failed {kind} hook")
    fn.__name__ = "fail_" + kind
    return fn


for _kind in ("prestart", "createRuntime", "createContainer", "startContainer", "poststart"):
    check(f"hooks: failing {_kind} is an error and stops the container", "runtime.md#lifecycle")(_failing(_kind))


@check("hooks: failing poststop is only a warning", "runtime.md#lifecycle")
def poststop_fail(c: Ctx) -> None:
    cfg, d = _hooked(c)
    log = str(d / "log")
    cfg["hooks"] = {"poststop": [{"path": "/bin/sh", "args": ["sh", "-c", "cat >/dev/null; exit 3"]},
                                 _hook(log, "poststop")]}
    k = c.run(cfg)
    k.kill("KILL")
    k.wait_status("stopped")
    r = k.delete()
    if not r.ok:
        raise Fail(f"delete failed because a poststop hook failed: {r.why()}")
    if _log(d) != ["poststop"]:
        raise Fail("the poststop hook after the failing one did not run")
    if c.rt("state", k.id).ok:
        raise Fail("the container was not deleted")


@check("hooks: timeout", CF)
def hooks_timeout(c: Ctx) -> None:
    cfg = c.config()
    cfg["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "cat >/dev/null; exec sleep 30"],
                                       "timeout": 1}]}
    t0 = time.monotonic()
    k = c.try_create(cfg)
    took = time.monotonic() - t0
    if k.create_result.ok:
        raise Fail("create succeeded although the hook outlived its timeout")
    if took > 15:
        raise Fail(f"create took {took:.0f}s with a 1s hook timeout")
