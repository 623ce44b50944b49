"""config-linux.md: namespaces, id mappings, time offsets, devices, sysctl, seccomp, rootfsPropagation,
maskedPaths, readonlyPaths, mountLabel, personality, memoryPolicy, intelRdt, netDevices."""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from ..harness import Ctx, Fail, Skip, check, in_ns, mount_at, mountinfo, ns_inode, proc_status, unix_listener

CL = "config-linux.md"


def _private_rootfs(c: Ctx) -> Path:
    dst = c.dir / "rootfs"
    shutil.copytree(c.session.rootfs, dst, symlinks=True)
    return dst


def _tmpfs(cfg: dict[str, Any], dest: str, *opts: str) -> None:
    cfg["mounts"].append({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": list(opts)})


def _userns(cfg: dict[str, Any], host: int = 100000, size: int = 65536) -> None:
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": host, "size": size}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": host, "size": size}]


# ------------------------------------------------------------------------------------ namespaces

def _ns_check(kind: str) -> Any:
    def fn(c: Ctx) -> str | None:
        cfg = c.config()
        nss = cfg["linux"]["namespaces"]
        if kind == "user":
            _userns(cfg)
        elif not any(n["type"] == kind for n in nss):
            nss.append({"type": kind})
        if kind == "time":
            if not Path("/proc/self/ns/time").exists():
                raise Skip("host kernel lacks time namespaces")
            k = c.try_create(cfg)
            if not k.create_result.ok:
                return "refused (SHOULD: allowed)"
            k.start()
        else:
            k = c.run(cfg)
        f = {"network": "net", "mount": "mnt"}.get(kind, kind)
        if ns_inode(k.pid, f) == ns_inode("self", f):
            raise Fail(f"the container shares the runtime's {kind} namespace")
        return None
    fn.__name__ = f"ns_{kind}"
    return fn


for _k in ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"):
    check(f"linux.namespaces: {_k}", f"{CL}#namespaces")(_ns_check(_k))


@check("linux.namespaces: absent type inherits the runtime's", f"{CL}#namespaces")
def ns_inherit(c: Ctx) -> None:
    cfg = c.config()
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] not in ("network", "ipc")]
    cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] not in ("/sys", "/sys/fs/cgroup")]
    k = c.run(cfg)
    for f in ("net", "ipc"):
        if ns_inode(k.pid, f) != ns_inode("self", f):
            raise Fail(f"a {f} namespace was made although none was asked")


def _holder(c: Ctx) -> int:
    p = c.host_process(["unshare", "--net", "--uts", "--ipc", "sleep", "3600"])
    if not _wait(lambda: ns_inode(p.pid, "net") != ns_inode("self", "net")):
        raise Fail("could not make a namespace holder with unshare")
    return p.pid


def _wait(pred: Any, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


@check("linux.namespaces[].path: joins the namespace", f"{CL}#namespaces")
def ns_path(c: Ctx) -> None:
    h = _holder(c)
    cfg = c.config()
    for n in cfg["linux"]["namespaces"]:
        if n["type"] in ("network", "uts"):
            n["path"] = f"/proc/{h}/ns/{'net' if n['type'] == 'network' else 'uts'}"
    cfg.pop("hostname", None)
    k = c.run(cfg)
    for f in ("net", "uts"):
        if ns_inode(k.pid, f) != ns_inode(h, f):
            raise Fail(f"the container is not in the {f} namespace of {f'/proc/{h}/ns/{f}'}")


@check("linux.namespaces[].path: wrong type is an error", f"{CL}#namespaces")
def ns_path_wrong(c: Ctx) -> None:
    h = _holder(c)
    cfg = c.config()
    for n in cfg["linux"]["namespaces"]:
        if n["type"] == "network":
            n["path"] = f"/proc/{h}/ns/uts"
    k = c.try_create(cfg)
    if k.create_result.ok:
        try:
            k.start()
        except Fail:
            return
        raise Fail("a uts namespace path for type network was accepted")


@check("linux.namespaces: duplicate type is an error", f"{CL}#namespaces")
def ns_dup(c: Ctx) -> None:
    cfg = c.config()
    cfg["linux"]["namespaces"].append({"type": "pid"})
    if c.try_create(cfg).create_result.ok:
        raise Fail("two pid namespaces accepted")


@check("linux.uidMappings/gidMappings", f"{CL}#user-namespace-mappings")
def idmaps(c: Ctx) -> None:
    cfg = c.config()
    _userns(cfg, 200000, 70000)
    k = c.run(cfg)
    for f in ("uid_map", "gid_map"):
        got = Path(f"/proc/{k.pid}/{f}").read_text().split()
        if got != ["0", "200000", "70000"]:
            raise Fail(f"{f}: {got}")


@check("linux.uidMappings: rootfs ownership not changed", f"{CL}#user-namespace-mappings")
def idmaps_no_chown(c: Ctx) -> None:
    rootfs = _private_rootfs(c)
    cfg = c.config()
    cfg["root"]["path"] = str(rootfs)
    _userns(cfg)
    k = c.run(cfg)
    k.kill("KILL")
    for rel in ("etc/passwd", "bin/busybox", "."):
        if os.lstat(rootfs / rel).st_uid != 0:
            raise Fail(f"rootfs/{rel} was chowned to {os.lstat(rootfs / rel).st_uid}")


@check("linux.timeOffsets", f"{CL}#offset-for-time-namespace")
def time_offsets(c: Ctx) -> str | None:
    if not Path("/proc/self/timens_offsets").exists():
        raise Skip("host kernel lacks time namespaces")
    cfg = c.config()
    cfg["linux"]["namespaces"].append({"type": "time"})
    cfg["linux"]["timeOffsets"] = {"monotonic": {"secs": 86400, "nanosecs": 7}, "boottime": {"secs": 3600}}
    k = c.try_create(cfg)
    if not k.create_result.ok:
        return "refused (unsupported: allowed)"
    k.start()
    got = {line.split()[0]: line.split()[1:] for line in Path(f"/proc/{k.pid}/timens_offsets").read_text()
           .splitlines()}
    if got.get("monotonic") != ["86400", "7"] or got.get("boottime") != ["3600", "0"]:
        raise Fail(f"timens_offsets {got}")
    return None


# ------------------------------------------------------------------------------------ devices

DEFAULT_DEVICES = {"/dev/null": (1, 3), "/dev/zero": (1, 5), "/dev/full": (1, 7), "/dev/random": (1, 8),
                   "/dev/urandom": (1, 9), "/dev/tty": (5, 0)}


@check("default devices (null zero full random urandom tty ptmx)", f"{CL}#default-devices")
def default_devices(c: Ctx) -> None:
    k = c.run(c.config())
    for path, (ma, mi) in DEFAULT_DEVICES.items():
        try:
            st = os.stat(k.root(path))
        except FileNotFoundError as e:
            raise Fail(f"{path} missing") from e
        if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != (ma, mi):
            raise Fail(f"{path} is not char {ma}:{mi}")
    ptmx = k.root("/dev/ptmx")
    st = os.stat(ptmx)
    if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != (5, 2):
        raise Fail("/dev/ptmx is not the devpts ptmx")
    if not os.path.islink(ptmx) and mount_at(k.pid, "/dev/ptmx").fstype != "devpts":
        raise Fail("/dev/ptmx is neither a symlink to pts/ptmx nor a bind of it")


@check("linux.devices: c, b and p types", f"{CL}#devices")
def devices_types(c: Ctx) -> None:
    cfg = c.config()
    cfg["linux"]["devices"] = [
        {"path": "/dev/cnull", "type": "c", "major": 1, "minor": 3},
        {"path": "/dev/bloop", "type": "b", "major": 7, "minor": 0},
        {"path": "/dev/pfifo", "type": "p"},
    ]
    k = c.run(cfg)
    for path, test, rdev in (("/dev/cnull", stat.S_ISCHR, (1, 3)), ("/dev/bloop", stat.S_ISBLK, (7, 0)),
                             ("/dev/pfifo", stat.S_ISFIFO, None)):
        try:
            st = os.stat(k.root(path))
        except FileNotFoundError as e:
            raise Fail(f"{path} missing") from e
        if not test(st.st_mode) or (rdev and (os.major(st.st_rdev), os.minor(st.st_rdev)) != rdev):
            raise Fail(f"{path}: mode {st.st_mode:o} rdev {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")


@check("linux.devices: fileMode, uid, gid", f"{CL}#devices")
def devices_attrs(c: Ctx) -> None:
    cfg = c.config()
    cfg["linux"]["devices"] = [{"path": "/dev/cnull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o640,
                                "uid": 1000, "gid": 5}]
    k = c.run(cfg)
    st = os.stat(k.root("/dev/cnull"))
    if stat.S_IMODE(st.st_mode) != 0o640 or (st.st_uid, st.st_gid) != (1000, 5):
        raise Fail(f"mode {stat.S_IMODE(st.st_mode):o} owner {st.st_uid}:{st.st_gid}, want 640 1000:5")


@check("linux.devices: existing file that is not the device is an error", f"{CL}#devices")
def devices_conflict(c: Ctx) -> None:
    rootfs = _private_rootfs(c)
    cfg = c.config()
    cfg["root"]["path"] = str(rootfs)
    cfg["linux"]["devices"] = [{"path": "/etc/marker", "type": "c", "major": 1, "minor": 3}]
    k = c.try_create(cfg)
    if k.create_result.ok:
        raise Fail("a device over the regular file /etc/marker was accepted")


# ------------------------------------------------------------------------------------ sysctl

@check("linux.sysctl", f"{CL}#sysctl")
def sysctl(c: Ctx) -> None:
    cfg = c.config()
    cfg["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "net.core.somaxconn": "321", "kernel.msgmax": "4321"}
    k = c.run(cfg)
    out = in_ns(k.pid, ["net", "ipc"], "\n".join(
        f"print(open('/proc/sys/{p}').read().strip())" for p in
        ("net/ipv4/ip_forward", "net/core/somaxconn", "kernel/msgmax"))).split()
    if out != ["1", "321", "4321"]:
        raise Fail(f"ip_forward, somaxconn, msgmax = {out}")
    if Path("/proc/sys/kernel/msgmax").read_text().strip() == "4321":
        raise Fail("the host's kernel.msgmax changed")


# ------------------------------------------------------------------------------------ paths

@check("linux.maskedPaths", f"{CL}#masked-paths")
def masked_paths(c: Ctx) -> None:
    cfg = c.config()
    cfg["linux"]["maskedPaths"] = ["/proc/keys", "/sys/firmware", "/etc/marker", "/nonexistent/path"]
    k = c.run(cfg)
    for f in ("/proc/keys", "/etc/marker"):
        with open(k.root(f), "rb") as fh:
            if fh.read(16):
                raise Fail(f"{f} can be read")
    if os.listdir(k.root("/sys/firmware")):
        raise Fail("/sys/firmware is not masked")


@check("linux.readonlyPaths", f"{CL}#readonly-paths")
def readonly_paths(c: Ctx) -> None:
    cfg = c.config(readonly=False)
    rootfs = _private_rootfs(c)
    cfg["root"]["path"] = str(rootfs)
    cfg["linux"]["readonlyPaths"] = ["/proc/sys", "/home", "/nonexistent/path"]
    k = c.run(cfg)
    for p in ("/proc/sys", "/home"):
        if "ro" not in mount_at(k.pid, p).opts:
            raise Fail(f"{p} is not read-only")
    if "ro" in mount_at(k.pid, "/").opts:
        raise Fail("/ became read-only too")


@check("linux.rootfsPropagation", f"{CL}#rootfs-mount-propagation")
def rootfs_propagation(c: Ctx) -> None:
    # a slave has a master only if the host mount holding the rootfs is shared
    host = max((m for m in mountinfo() if str(c.session.rootfs).startswith(m.point.rstrip("/") + "/")),
               key=lambda m: len(m.point))
    host_shared = any(o.startswith("shared:") for o in host.optional)
    want = {"shared": "shared:", "slave": "master:" if host_shared else None, "private": None,
            "unbindable": "unbindable"}
    for prop, tag in want.items():
        cfg = c.config()
        cfg["linux"]["rootfsPropagation"] = prop
        k = c.run(cfg)
        opt = mount_at(k.pid, "/").optional
        if tag is None:
            if any(not o.startswith("master:") or prop != "slave" for o in opt):
                raise Fail(f"{prop}: / has {opt}")
        elif not any(o.startswith(tag) for o in opt):
            raise Fail(f"{prop}: / has {opt or 'no propagation tags'}, want {tag}")
        k.kill("KILL")


@check("linux.mountLabel", f"{CL}#mount-label")
def mount_label(c: Ctx) -> None:
    if not Path("/sys/fs/selinux/enforce").exists():
        raise Skip("host lacks SELinux")
    raise Skip("SELinux checks not written")


@check("linux.personality", f"{CL}#personality")
def personality(c: Ctx) -> str | None:
    cfg = c.config()
    cfg["linux"]["personality"] = {"domain": "LINUX32"}
    k = c.applied_or_refused(cfg, "personality")
    if k is None:
        return "refused (unsupported: allowed)"
    got = int(Path(f"/proc/{k.pid}/personality").read_text(), 16)
    if got & 0xFF != 0x0008:
        raise Fail(f"accepted but personality is {got:#x}, want PER_LINUX32 (0x8)")
    return None


@check("linux.memoryPolicy", f"{CL}#memory-policy")
def memory_policy(c: Ctx) -> str | None:
    if not Path("/proc/self/numa_maps").exists():
        raise Skip("host kernel lacks NUMA (no numa_maps)")
    cfg = c.config()
    cfg["linux"]["memoryPolicy"] = {"mode": "MPOL_BIND", "nodes": "0"}
    k = c.applied_or_refused(cfg, "memoryPolicy")
    if k is None:
        return "refused (unsupported: allowed)"
    text = Path(f"/proc/{k.pid}/numa_maps").read_text()
    if "bind:0" not in text:
        raise Fail(f"accepted but numa_maps shows {text.splitlines()[0] if text else 'nothing'}")
    return None


@check("linux.intelRdt: error without resctrl", f"{CL}#intelrdt")
def intel_rdt(c: Ctx) -> None:
    if any(m.fstype == "resctrl" for m in mountinfo()):
        raise Skip("host has resctrl mounted; only the error case is checked")
    cfg = c.config()
    cfg["linux"]["intelRdt"] = {"closID": "conformance"}
    k = c.try_create(cfg)
    if k.create_result.ok:
        raise Fail("intelRdt accepted although no resctrl filesystem is mounted")


@check("linux.netDevices", f"{CL}#network-devices")
def net_devices(c: Ctx) -> str | None:
    if not shutil.which("ip"):
        raise Skip("host lacks iproute2's ip")
    name = f"cf{os.getpid() % 100000}x{int(time.monotonic() * 1000) % 1000}"[:13]
    r = subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"],
                       capture_output=True, text=True)
    if r.returncode:
        raise Skip(f"cannot make a veth pair: {r.stderr.strip()}")
    def unlink() -> None:  # a veth left on the host (the runtime did not move it) goes with its peer
        subprocess.run(["ip", "link", "del", name + "p"], capture_output=True)
    c.cleanups.append(unlink)
    subprocess.run(["ip", "addr", "add", "10.250.7.1/24", "dev", name], check=True)
    cfg = c.config()
    cfg["linux"]["netDevices"] = {name: {"name": "ctr7"}}
    k = c.applied_or_refused(cfg, "netDevices")
    if k is None:
        return "refused (unsupported: allowed)"
    out = in_ns(k.pid, ["net"], "import subprocess; print(subprocess.run(['ip', '-o', 'addr', 'show', 'dev', "
                                "'ctr7'], capture_output=True, text=True).stdout); print(subprocess.run(['ip', "
                                "'-o', 'link', 'show', 'ctr7'], capture_output=True, text=True).stdout)")
    if "10.250.7.1/24" not in out:
        raise Fail(f"ctr7 missing or lost its address in the container: {out.strip()[:200]!r}")
    if not re.search(r"<[^>]*\bUP\b", out):
        raise Fail("ctr7 is not up")
    return None


# ------------------------------------------------------------------------------------ seccomp

_ARCHES = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]


def _seccomp_run(c: Ctx, seccomp: dict[str, Any], script: str) -> tuple[str, Any]:
    cfg = c.script_config(script + "\nsleep 3600")
    _tmpfs(cfg, "/tmp")
    seccomp.setdefault("architectures", _ARCHES)
    cfg["linux"]["seccomp"] = seccomp
    k = c.run(cfg)
    text = k.stdout_path.read_text
    if not _wait(lambda: "__END__" in text() or "rc=" in text(), 10):
        raise Fail(f"the script did not finish: {text()!r}")
    time.sleep(0.2)
    return text(), k


@check("linux.seccomp: filter installed, action and errnoRet", f"{CL}#seccomp")
def seccomp_errno(c: Ctx) -> None:
    out, k = _seccomp_run(c, {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]},
        "mkdir /tmp/x; echo rc=$?")
    st = proc_status(k.pid)
    if st.get("Seccomp") != "2":
        raise Fail(f"Seccomp: {st.get('Seccomp')}")
    if "Function not implemented" not in out or "rc=1" not in out:
        raise Fail(f"mkdir: {out.strip()!r}, want ENOSYS")


@check("linux.seccomp: errnoRet defaults to EPERM", f"{CL}#seccomp")
def seccomp_eperm(c: Ctx) -> None:
    out, _ = _seccomp_run(c, {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}, "mkdir /tmp/x; echo rc=$?")
    if "Operation not permitted" not in out:
        raise Fail(f"mkdir: {out.strip()!r}, want EPERM")


def _all_syscalls() -> list[str]:
    hdr = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
    if not hdr.exists():
        raise Skip("host lacks asm/unistd_64.h (the syscall list)")
    return re.findall(r"#define __NR_(\w+)\s+\d+", hdr.read_text())


@check("linux.seccomp: defaultAction and defaultErrnoRet", f"{CL}#seccomp")
def seccomp_default(c: Ctx) -> None:
    allowed = [n for n in _all_syscalls() if n not in ("mkdir", "mkdirat")]
    out, _ = _seccomp_run(c, {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
                              "syscalls": [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]},
                          "mkdir /tmp/x; echo rc=$?")
    if "Function not implemented" not in out:
        raise Fail(f"mkdir: {out.strip()!r}, want ENOSYS from the default action")


@check("linux.seccomp: args (SCMP_CMP_EQ)", f"{CL}#seccomp")
def seccomp_args(c: Ctx) -> None:
    out, _ = _seccomp_run(c, {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
         "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}]}]},
        "trap '' USR1 USR2; kill -USR1 $$; echo rc1=$?; kill -USR2 $$; echo rc2=$?; echo rc=")
    if "rc1=1" not in out or "rc2=0" not in out:
        raise Fail(f"kill USR1 (filtered) / USR2 (allowed): {out.strip()!r}")


@check("linux.seccomp: SCMP_ACT_KILL_PROCESS", f"{CL}#seccomp")
def seccomp_kill(c: Ctx) -> None:
    out, _ = _seccomp_run(c, {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL_PROCESS"}]},
        "sh -c 'mkdir /tmp/x'; echo rc=$?")
    if "rc=159" not in out:  # 128 + SIGSYS
        raise Fail(f"mkdir: {out.strip()!r}, want death by SIGSYS (rc=159)")


@check("linux.seccomp: listenerPath, SCMP_ACT_NOTIFY", f"{CL}#seccomp")
def seccomp_notify(c: Ctx) -> None:
    import array
    import json
    sock = c.dir / "seccomp.sock"
    got: dict[str, Any] = {}
    with unix_listener(sock) as srv:
        def serve() -> None:
            try:
                conn, _ = srv.accept()
                with conn:
                    fds = array.array("i")
                    data = b""
                    msg, anc, _f, _a = conn.recvmsg(65536, socket.CMSG_SPACE(4 * fds.itemsize))
                    for level, typ, cdata in anc:
                        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                            fds.frombytes(cdata[: len(cdata) - len(cdata) % fds.itemsize])
                    data = msg
                    while True:
                        more = conn.recv(65536)
                        if not more:
                            break
                        data += more
                    got["msg"] = data
                    got["fds"] = list(fds)
            except OSError as e:
                got["error"] = str(e)
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        cfg = c.script_config("mkdir /tmp/x; echo rc=$?\nsleep 3600")
        _tmpfs(cfg, "/tmp")
        cfg["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": _ARCHES,
                                   "listenerPath": str(sock), "listenerMetadata": "conformance-meta",
                                   "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]}
        k = c.create(cfg)
        st_thread = threading.Thread(target=lambda: k.start(), daemon=True)
        st_thread.start()
        t.join(15)
        for fd in got.get("fds", []):
            os.close(fd)  # the notified mkdir then fails (ENOSYS)
        st_thread.join(15)
    if "msg" not in got:
        raise Fail(f"nothing arrived on listenerPath {got.get('error', '')}")
    try:
        state = json.loads(got["msg"])
    except json.JSONDecodeError as e:
        raise Fail(f"the container process state is not JSON: {got['msg'][:200]!r}") from e
    if state.get("fds") != ["seccompFd"] or len(got["fds"]) != 1:
        raise Fail(f"fds {state.get('fds')} with {len(got['fds'])} descriptors")
    if state.get("metadata") != "conformance-meta" or state.get("state", {}).get("id") != k.id:
        raise Fail(f"metadata/state.id wrong: {state}")
    if not state.get("pid") or not state.get("ociVersion"):
        raise Fail(f"pid/ociVersion missing: {state}")
