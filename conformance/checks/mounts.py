"""config.md#mounts: order, destination, source, type and the Linux mount options."""

from __future__ import annotations

import os
from typing import Any

from ..harness import Ctx, Fail, Mount, check, mount_at, mountinfo

CF = "config.md#mounts"
CO = "config.md#linux-mount-options"


def _tmpfs(dest: str, *opts: str) -> dict[str, Any]:
    return {"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": list(opts)}


def _bind(c: Ctx, dest: str, *opts: str) -> dict[str, Any]:
    return {"destination": dest, "type": "bind", "source": str(c.session.src), "options": list(opts)}


def _with_mounts(c: Ctx, *mounts: dict[str, Any], **kw: Any) -> Any:
    cfg = c.config(**kw)
    cfg["mounts"].extend(mounts)
    return c.run(cfg)


@check("mounts: applied in the listed order", CF)
def order(c: Ctx) -> None:
    k = _with_mounts(c, _tmpfs("/m1", "size=1m"), _tmpfs("/m1", "size=2m"))
    m = mount_at(k.pid, "/m1")
    if "size=2048k" not in m.super_opts:
        raise Fail(f"the mount on top of /m1 has {sorted(m.super_opts)}, want the second one (size=2048k)")


@check("mounts: type (tmpfs, proc, sysfs, devpts, mqueue)", CF)
def types(c: Ctx) -> None:
    k = c.run(c.config())
    for point, fstype in (("/proc", "proc"), ("/sys", "sysfs"), ("/dev", "tmpfs"), ("/dev/pts", "devpts"),
                          ("/dev/shm", "tmpfs"), ("/dev/mqueue", "mqueue")):
        got = mount_at(k.pid, point).fstype
        if got != fstype:
            raise Fail(f"{point} is {got}, want {fstype}")


@check("mounts: relative destination is relative to /", CF)
def rel_destination(c: Ctx) -> None:
    k = _with_mounts(c, _tmpfs("m2", "size=1m"))
    if "size=1024k" not in mount_at(k.pid, "/m2").super_opts:
        raise Fail("no tmpfs at /m2")


@check("mounts: bind source relative to the bundle", CF)
def rel_source(c: Ctx) -> None:
    cfg = c.config()
    cfg["mounts"].append({"destination": "/m1", "type": "bind", "source": "data", "options": ["bind"]})
    b = c.bundle(cfg)
    (b / "data").mkdir()
    (b / "data" / "hello").write_text("relative\n")
    k = c.create(cfg, bundle=b)
    if not k.root("/m1/hello").exists():
        raise Fail("the bundle's data dir is not at /m1")


@check("mounts: bind", CO)
def bind(c: Ctx) -> None:
    k = _with_mounts(c, _bind(c, "/m1", "bind"))
    if k.root("/m1/file").read_text() != "bind source\n":
        raise Fail("the source is not at /m1")
    if (k.root("/m1/sub/subfile")).exists():
        raise Fail("bind (not rbind) carried the submount along")


@check("mounts: rbind", CO)
def rbind(c: Ctx) -> None:
    k = _with_mounts(c, _bind(c, "/m1", "rbind"))
    if not k.root("/m1/sub/subfile").exists():
        raise Fail("rbind did not carry the submount")


def _opt_check(row: str, mount: Any, want: set[str], absent: set[str] = frozenset(),  # type: ignore[assignment]
               ref: str = CO, where: str = "/m1", submount: bool = False, refusable: bool = False) -> None:
    def fn(c: Ctx) -> str | None:
        m = mount(c)
        cfg = c.config()
        cfg["mounts"].append(m)
        if refusable:
            k = c.try_create(cfg)
            if not k.create_result.ok:
                return "refused (SHOULD/MAY: allowed)"
            k.start()
        else:
            k = c.run(cfg)
        points = [where] + ([where + "/sub"] if submount else [])
        for p in points:
            mi: Mount = mount_at(k.pid, p)
            have = mi.all_opts
            if not want <= have or have & absent:
                raise Fail(f"{p} has {sorted(mi.opts)} / {sorted(mi.super_opts)}; want {sorted(want)}"
                           + (f" and none of {sorted(absent)}" if absent else ""))
        return None
    fn.__name__ = "opt_" + row
    check(row, ref)(fn)


_opt_check("mounts: option ro", lambda c: _tmpfs("/m1", "ro"), {"ro"})
_opt_check("mounts: option rw (on a read-only root)", lambda c: _tmpfs("/m1", "rw"), {"rw"})
_opt_check("mounts: option nosuid", lambda c: _tmpfs("/m1", "nosuid"), {"nosuid"})
_opt_check("mounts: option nodev", lambda c: _tmpfs("/m1", "nodev"), {"nodev"})
_opt_check("mounts: option noexec", lambda c: _tmpfs("/m1", "noexec"), {"noexec"})
_opt_check("mounts: options suid, dev, exec (the later option wins)",
           lambda c: _tmpfs("/m1", "nosuid", "nodev", "noexec", "suid", "dev", "exec"), set(),
           {"nosuid", "nodev", "noexec"})
_opt_check("mounts: option noatime", lambda c: _tmpfs("/m1", "noatime"), {"noatime"})
_opt_check("mounts: option strictatime", lambda c: _tmpfs("/m1", "strictatime"), set(), {"noatime", "relatime"})
_opt_check("mounts: option relatime", lambda c: _tmpfs("/m1", "relatime"), {"relatime"}, {"noatime"})
_opt_check("mounts: option nodiratime", lambda c: _tmpfs("/m1", "nodiratime"), {"nodiratime"})
_opt_check("mounts: option sync", lambda c: _tmpfs("/m1", "sync"), {"sync"})
_opt_check("mounts: option dirsync", lambda c: _tmpfs("/m1", "dirsync"), {"dirsync"})
_opt_check("mounts: option lazytime", lambda c: _tmpfs("/m1", "lazytime"), {"lazytime"})
_opt_check("mounts: option nosymfollow", lambda c: _tmpfs("/m1", "nosymfollow"), {"nosymfollow"},
           refusable=True)
_opt_check("mounts: option ro on a bind mount", lambda c: _bind(c, "/m1", "bind", "ro"), {"ro"})
_opt_check("mounts: filesystem-specific options go to mount(2) data",
           lambda c: _tmpfs("/m1", "size=3m", "mode=700", "nr_inodes=1234"), {"size=3072k", "mode=700",
                                                                             "nr_inodes=1234"})
for _o, _want in (("rro", {"ro"}), ("rnosuid", {"nosuid"}), ("rnodev", {"nodev"}), ("rnoexec", {"noexec"}),
                  ("rnoatime", {"noatime"}), ("rnosymfollow", {"nosymfollow"})):
    _opt_check(f"mounts: option {_o} (recursive)", lambda c, o=_o: _bind(c, "/m1", "rbind", o), _want,
               submount=True, refusable=True)


def _prop_check(opt: str, want: str | None, forbid: tuple[str, ...]) -> None:
    def fn(c: Ctx) -> None:
        k = _with_mounts(c, _bind(c, "/m1", "rbind", opt))
        opts = mount_at(k.pid, "/m1").optional
        if want and not any(o.startswith(want) for o in opts):
            raise Fail(f"/m1 has {opts or 'no propagation tags'}, want {want}")
        if any(o.startswith(f) for o in opts for f in forbid):
            raise Fail(f"/m1 has {opts}, none of {forbid} wanted")
    fn.__name__ = "prop_" + opt
    check(f"mounts: option {opt}", CO)(fn)


_prop_check("shared", "shared:", ("unbindable",))
_prop_check("rshared", "shared:", ("unbindable",))
_prop_check("private", None, ("shared:", "master:", "unbindable"))
_prop_check("rprivate", None, ("shared:", "master:", "unbindable"))
_prop_check("slave", None, ("shared:", "unbindable"))
_prop_check("rslave", None, ("shared:", "unbindable"))
_prop_check("unbindable", "unbindable", ("shared:",))
_prop_check("runbindable", "unbindable", ("shared:",))


@check("mounts: option tmpcopyup", CO)
def tmpcopyup(c: Ctx) -> str | None:
    cfg = c.config()
    cfg["mounts"].append(_tmpfs("/etc", "tmpcopyup"))
    k = c.try_create(cfg)
    if not k.create_result.ok:
        return "refused (MAY: allowed)"
    k.start()
    if mount_at(k.pid, "/etc").fstype != "tmpfs":
        raise Fail("no tmpfs at /etc")
    if not k.root("/etc/marker").exists():
        raise Fail("accepted, but /etc's content was not copied up")
    return None


@check("mounts: option idmap with uidMappings/gidMappings", CO)
def idmap(c: Ctx) -> str | None:
    cfg = c.config()
    maps = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = maps
    cfg["linux"]["gidMappings"] = maps
    cfg["mounts"].append({**_bind(c, "/m1", "rbind", "idmap"), "uidMappings": maps, "gidMappings": maps})
    k = c.try_create(cfg)
    if not k.create_result.ok:
        return "refused (SHOULD: allowed)"
    k.start()
    st = os.stat(k.root("/m1/file"))
    if (st.st_uid, st.st_gid) != (100000, 100000):
        raise Fail(f"accepted, but /m1/file shows as {st.st_uid}:{st.st_gid} from the host, want 100000 "
                   "(on-disk 0 through the mount's mapping)")
    return None


@check("mounts: idmap without mappings or user namespace is an error", CO)
def idmap_error(c: Ctx) -> None:
    cfg = c.config()
    cfg["mounts"].append(_bind(c, "/m1", "rbind", "idmap"))
    k = c.try_create(cfg)
    if k.create_result.ok:
        raise Fail("idmap with neither mount mappings nor a user namespace was accepted")


@check("default filesystems: /proc /sys /dev/pts /dev/shm", "config-linux.md#default-filesystems")
def default_fs(c: Ctx) -> None:
    k = c.run(c.config())
    have = {m.point: m.fstype for m in mountinfo(k.pid)}
    for point, fstype in (("/proc", "proc"), ("/sys", "sysfs"), ("/dev/pts", "devpts"), ("/dev/shm", "tmpfs")):
        if have.get(point) != fstype:
            raise Fail(f"{point}: {have.get(point)}")
