"""config.json -> typed records, with schema and semantic validation.

A bundle is validated once, at create time (``load_bundle``): JSON syntax, then
our schema (spec/, runtime-spec v1.3.0), then the semantic rules a schema cannot
express (namespaces not duplicated, sysctls only where their namespace is
private, ...).  Every finding names its JSON path.  The validated document is
persisted in the state store, and later commands rebuild the records from that
copy with ``Config.from_dict`` without validating or reading the bundle again.
"""

from __future__ import annotations

import os

from . import jsonio
from .errors import ConfigError
from .record import record

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")

# Capability numbers from linux/capability.h; the order is the kernel's.
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)

RLIMITS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}

# sysctls that belong to the IPC namespace (runc's configs/validate list).
IPC_SYSCTLS = frozenset({
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
    "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
})


# The devices every container gets (config-linux.md, "Default Devices"): name, major, minor.
DEFAULT_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
                   ("urandom", 1, 9), ("tty", 5, 0))


# ---------------------------------------------------------------------------- records


@record
class IDMapping:
    container_id: int
    host_id: int
    size: int


@record
class Mount:
    destination: str
    type: str = ""
    source: str = ""
    options: list[str] = []
    uid_mappings: list[IDMapping] = []
    gid_mappings: list[IDMapping] = []


@record
class Root:
    path: str
    readonly: bool = False


@record
class User:
    uid: int = 0
    gid: int = 0
    umask: int | None = None
    additional_gids: list[int] = []


@record
class Capabilities:
    bounding: list[str] = []
    effective: list[str] = []
    inheritable: list[str] = []
    permitted: list[str] = []
    ambient: list[str] = []


@record
class Rlimit:
    type: str
    hard: int
    soft: int


@record
class Process:
    args: list[str]
    cwd: str = "/"
    env: list[str] = []
    terminal: bool = False
    console_size: tuple[int, int] | None = None  # (height, width)
    user: User = None  # type: ignore[assignment]  # filled in by from_dict
    capabilities: Capabilities | None = None
    rlimits: list[Rlimit] = []
    no_new_privileges: bool = False
    apparmor_profile: str = ""
    selinux_label: str = ""
    oom_score_adj: int | None = None
    io_priority: dict | None = None
    scheduler: dict | None = None
    exec_cpu_affinity: dict | None = None


@record
class Hook:
    path: str
    args: list[str] = []
    env: list[str] | None = None  # None (not given): the hook inherits the runner's environment
    timeout: int | None = None


@record
class Hooks:
    prestart: list[Hook] = []
    create_runtime: list[Hook] = []
    create_container: list[Hook] = []
    start_container: list[Hook] = []
    poststart: list[Hook] = []
    poststop: list[Hook] = []


@record
class Namespace:
    type: str
    path: str = ""


@record
class Device:
    type: str
    path: str
    major: int = 0
    minor: int = 0
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None


@record
class DeviceRule:
    allow: bool
    type: str = "a"
    major: int | None = None
    minor: int | None = None
    access: str = "rwm"


def device_cgroup_rules(linux: Linux) -> list[DeviceRule]:
    """Deny everything, then the config's device rules, then what the container must reach
    whatever they say: the default devices, /dev/ptmx and the pts devices, and every entry
    of linux.devices (runc's AllowedDevices, including mknod of any device node).  The
    leading deny-all is runc's whitelist default: a config without rules gets no other device."""
    rules = [DeviceRule(False, "a", None, None, "rwm")]
    rules += list(linux.resources.devices) if linux.resources is not None else []
    rules += [DeviceRule(True, "c", None, None, "m"), DeviceRule(True, "b", None, None, "m")]
    rules += [DeviceRule(True, "c", major, minor, "rwm") for _, major, minor in DEFAULT_DEVICES]
    rules += [DeviceRule(True, "c", 5, 2, "rwm"), DeviceRule(True, "c", 136, None, "rwm")]
    for d in linux.devices:
        if d.type != "p":
            rules.append(DeviceRule(True, "b" if d.type == "b" else "c", d.major, d.minor, "rwm"))
    return rules


@record
class Memory:
    limit: int | None = None
    reservation: int | None = None
    swap: int | None = None
    kernel: int | None = None
    kernel_tcp: int | None = None
    swappiness: int | None = None
    disable_oom_killer: bool | None = None
    use_hierarchy: bool | None = None
    check_before_update: bool | None = None


@record
class CPU:
    shares: int | None = None
    quota: int | None = None
    burst: int | None = None
    period: int | None = None
    realtime_runtime: int | None = None
    realtime_period: int | None = None
    cpus: str = ""
    mems: str = ""
    idle: int | None = None


@record
class Pids:
    limit: int | None = None


@record
class Resources:
    """linux.resources; the groups the cgroup managers do not model yet stay raw dicts."""

    devices: list[DeviceRule] = []
    memory: Memory | None = None
    cpu: CPU | None = None
    pids: Pids | None = None
    block_io: dict | None = None
    hugepage_limits: list[dict] = []
    network: dict | None = None
    rdma: dict | None = None
    unified: dict[str, str] = {}


@record
class Linux:
    namespaces: list[Namespace] = []
    uid_mappings: list[IDMapping] = []
    gid_mappings: list[IDMapping] = []
    time_offsets: dict[str, tuple[int, int]] = {}  # clock -> (secs, nanosecs)
    devices: list[Device] = []
    net_devices: dict[str, dict] = {}
    cgroups_path: str = ""
    rootfs_propagation: str = ""
    resources: Resources | None = None
    sysctl: dict[str, str] = {}
    seccomp: dict | None = None
    masked_paths: list[str] = []
    readonly_paths: list[str] = []
    mount_label: str = ""
    personality: dict | None = None
    intel_rdt: dict | None = None
    memory_policy: dict | None = None

    def namespace(self, ns_type: str) -> Namespace | None:
        for ns in self.namespaces:
            if ns.type == ns_type:
                return ns
        return None

    def creates(self, ns_type: str) -> bool:
        """True when the container gets a new namespace of this type (not joined by path)."""
        ns = self.namespace(ns_type)
        return ns is not None and not ns.path

    def is_private(self, ns_type: str) -> bool:
        return self.namespace(ns_type) is not None


@record
class Config:
    oci_version: str
    root: Root | None = None
    process: Process | None = None
    mounts: list[Mount] = []
    hostname: str = ""
    domainname: str = ""
    hooks: Hooks = None  # type: ignore[assignment]
    annotations: dict[str, str] = {}
    linux: Linux = None  # type: ignore[assignment]

    @staticmethod
    def from_dict(doc: dict) -> Config:
        """Build records from an already validated document (no checks here)."""
        return _config(doc)


# ---------------------------------------------------------------------------- conversion


def _idmaps(items: list[dict] | None) -> list[IDMapping]:
    return [IDMapping(m["containerID"], m["hostID"], m["size"]) for m in items or ()]


def _hooks(items: list[dict] | None) -> list[Hook]:
    return [Hook(h["path"], list(h.get("args") or ()), None if h.get("env") is None else list(h["env"]),
                 h.get("timeout")) for h in items or ()]


def _process(p: dict) -> Process:
    u = p.get("user") or {}
    caps = p.get("capabilities")
    size = p.get("consoleSize")
    return Process(
        args=list(p.get("args") or ()),
        cwd=p.get("cwd", "/"),
        env=list(p.get("env") or ()),
        terminal=bool(p.get("terminal", False)),
        console_size=(size["height"], size["width"]) if size else None,
        user=User(u.get("uid", 0), u.get("gid", 0), u.get("umask"), list(u.get("additionalGids") or ())),
        capabilities=None if caps is None else Capabilities(
            list(caps.get("bounding") or ()), list(caps.get("effective") or ()),
            list(caps.get("inheritable") or ()), list(caps.get("permitted") or ()),
            list(caps.get("ambient") or ())),
        rlimits=[Rlimit(r["type"], r["hard"], r["soft"]) for r in p.get("rlimits") or ()],
        no_new_privileges=bool(p.get("noNewPrivileges", False)),
        apparmor_profile=p.get("apparmorProfile", ""),
        selinux_label=p.get("selinuxLabel", ""),
        oom_score_adj=p.get("oomScoreAdj"),
        io_priority=p.get("ioPriority"),
        scheduler=p.get("scheduler"),
        exec_cpu_affinity=p.get("execCPUAffinity"),
    )


def _resources(r: dict) -> Resources:
    mem, cpu, pids = r.get("memory"), r.get("cpu"), r.get("pids")
    return Resources(
        devices=[DeviceRule(d["allow"], d.get("type", "a"), d.get("major"), d.get("minor"),
                            d.get("access", "rwm")) for d in r.get("devices") or ()],
        memory=None if mem is None else Memory(
            mem.get("limit"), mem.get("reservation"), mem.get("swap"), mem.get("kernel"),
            mem.get("kernelTCP"), mem.get("swappiness"), mem.get("disableOOMKiller"),
            mem.get("useHierarchy"), mem.get("checkBeforeUpdate")),
        cpu=None if cpu is None else CPU(
            cpu.get("shares"), cpu.get("quota"), cpu.get("burst"), cpu.get("period"),
            cpu.get("realtimeRuntime"), cpu.get("realtimePeriod"), cpu.get("cpus", ""),
            cpu.get("mems", ""), cpu.get("idle")),
        pids=None if pids is None else Pids(pids.get("limit")),
        block_io=r.get("blockIO"),
        hugepage_limits=list(r.get("hugepageLimits") or ()),
        network=r.get("network"),
        rdma=r.get("rdma"),
        unified=dict(r.get("unified") or {}),
    )


def _linux(lx: dict) -> Linux:
    res = lx.get("resources")
    return Linux(
        namespaces=[Namespace(n["type"], n.get("path", "")) for n in lx.get("namespaces") or ()],
        uid_mappings=_idmaps(lx.get("uidMappings")),
        gid_mappings=_idmaps(lx.get("gidMappings")),
        time_offsets={k: (v.get("secs", 0), v.get("nanosecs", 0))
                      for k, v in (lx.get("timeOffsets") or {}).items()},
        devices=[Device(d["type"], d["path"], d.get("major", 0), d.get("minor", 0),
                        d.get("fileMode"), d.get("uid"), d.get("gid")) for d in lx.get("devices") or ()],
        net_devices=dict(lx.get("netDevices") or {}),
        cgroups_path=lx.get("cgroupsPath", ""),
        rootfs_propagation=lx.get("rootfsPropagation", ""),
        resources=None if res is None else _resources(res),
        sysctl=dict(lx.get("sysctl") or {}),
        seccomp=lx.get("seccomp"),
        masked_paths=list(lx.get("maskedPaths") or ()),
        readonly_paths=list(lx.get("readonlyPaths") or ()),
        mount_label=lx.get("mountLabel", ""),
        personality=lx.get("personality"),
        intel_rdt=lx.get("intelRdt"),
        memory_policy=lx.get("memoryPolicy"),
    )


def _mount_dest(dest: str) -> str:
    """config.md: a relative mount destination (deprecated) MUST be taken as relative to "/"."""
    return dest if dest.startswith("/") else "/" + dest


def _config(doc: dict) -> Config:
    root, proc, hooks = doc.get("root"), doc.get("process"), doc.get("hooks") or {}
    return Config(
        oci_version=doc["ociVersion"],
        root=None if root is None else Root(root["path"], bool(root.get("readonly", False))),
        process=None if proc is None else _process(proc),
        mounts=[Mount(_mount_dest(m["destination"]), m.get("type", ""), m.get("source", ""),
                      list(m.get("options") or ()), _idmaps(m.get("uidMappings")),
                      _idmaps(m.get("gidMappings"))) for m in doc.get("mounts") or ()],
        hostname=doc.get("hostname", ""),
        domainname=doc.get("domainname", ""),
        hooks=Hooks(*(_hooks(hooks.get(k)) for k in (
            "prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"))),
        annotations=dict(doc.get("annotations") or {}),
        linux=_linux(doc.get("linux") or {}),
    )


# ---------------------------------------------------------------------------- validation


def load_bundle(bundle: str) -> tuple[dict, Config]:
    """Read, validate and convert ``bundle/config.json``; raise ConfigError listing every problem."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError([f"no such file: {path}"]) from None
    except OSError as e:
        raise ConfigError([f"cannot read {path}: {e.strerror}"]) from None
    doc = parse(raw)
    return doc, Config.from_dict(doc)


def parse(raw: bytes | str) -> dict:
    """JSON text -> validated document (raises ConfigError with every finding)."""
    try:
        doc = jsonio.loads(raw)
    except ValueError as e:
        raise ConfigError([f"invalid JSON: {e}"]) from None
    problems = validate(doc)
    if problems:
        raise ConfigError(problems)
    return doc  # type: ignore[no-any-return]


def validate(doc: object) -> list[str]:
    """Every schema and semantic finding for a parsed config.json, as ``path: rule`` strings."""
    from .schema import validate_config

    problems = [str(e) for e in validate_config(doc)]
    if problems or not isinstance(doc, dict):
        return problems  # semantics assume the shapes the schema guarantees
    return check_semantics(doc)


def check_semantics(doc: dict) -> list[str]:
    """The rules of config.md / config-linux.md (and runc's validator) a schema cannot express."""
    out: list[str] = []
    linux = doc.get("linux") or {}
    namespaces = linux.get("namespaces") or []
    present: dict[str, str] = {}
    for i, ns in enumerate(namespaces):
        t = ns.get("type")
        if t in present:
            out.append(f'linux.namespaces[{i}].type: namespace "{t}" is listed more than once')
        present[t] = ns.get("path", "")
        if ns.get("path") and not ns["path"].startswith("/"):
            out.append(f"linux.namespaces[{i}].path: must be an absolute path")

    def private(t: str) -> bool:
        return t in present

    creates_user = "user" in present and not present["user"]
    for key in ("uidMappings", "gidMappings"):
        if creates_user and not linux.get(key):
            out.append(f"linux.{key}: required when a new user namespace is created")
        if linux.get(key) and not private("user"):
            out.append(f"linux.{key}: mappings are set but linux.namespaces has no user namespace")
    if linux.get("timeOffsets") and not (private("time") and not present["time"]):
        out.append("linux.timeOffsets: needs a new time namespace in linux.namespaces")
    for clock, offset in (linux.get("timeOffsets") or {}).items():
        if clock not in ("monotonic", "boottime"):
            out.append(f"linux.timeOffsets.{clock}: the kernel can only offset monotonic and boottime")
        if offset.get("nanosecs", 0) >= 1_000_000_000:
            out.append(f"linux.timeOffsets.{clock}.nanosecs: must be below 1000000000")
    for field in ("hostname", "domainname"):
        if doc.get(field) and not private("uts"):
            out.append(f"{field}: cannot be set without a private UTS namespace")
        elif doc.get(field) and is_own_namespace("uts", present["uts"]):
            out.append(f"{field}: cannot be set in the host's UTS namespace (the one linux.namespaces joins)")

    for i, m in enumerate(doc.get("mounts") or []):
        # config.md: a relative destination (deprecated) is relative to "/"
        dest = _mount_dest(m.get("destination", ""))
        if m.get("type") in ("bind", "rbind") or "bind" in (m.get("options") or ()) \
                or "rbind" in (m.get("options") or ()):
            # normpath keeps a leading "//": fold it, so "//dev" is caught too (symlinks to /dev
            # are caught at create time, where the source is resolved on the host)
            if _fold(m.get("source", "")) == "/dev" and _fold(dest) == "/dev":
                out.append(f"mounts[{i}]: bind-mounting the host's /dev would hand the container "
                           "the host's devices; list the devices it needs in linux.devices")
        if (m.get("uidMappings") or m.get("gidMappings")) and not _has_idmap_option(m):
            out.append(f"mounts[{i}]: uidMappings/gidMappings need the idmap or ridmap option")
        if _has_idmap_option(m) and not (m.get("uidMappings") or m.get("gidMappings")) \
                and "user" not in present:
            out.append(f"mounts[{i}]: an idmap mount needs its own uidMappings/gidMappings "
                       "or a user namespace in linux.namespaces")

    for name in (doc.get("linux") or {}).get("sysctl") or {}:
        problem = _sysctl_problem(name, present)
        if problem:
            out.append(f"linux.sysctl.{name}: {problem}")

    proc = doc.get("process")
    if proc is not None:
        out += _process_problems(proc)
    for i, d in enumerate(linux.get("devices") or []):
        path = os.path.normpath(d.get("path", ""))
        if not path.startswith("/dev/"):
            out.append(f"linux.devices[{i}].path: must be under /dev, got {d.get('path')!r}")
        if d.get("type") != "p" and ("major" not in d or "minor" not in d):
            out.append(f"linux.devices[{i}]: major and minor are required for type {d.get('type')!r}")
    for key in ("maskedPaths", "readonlyPaths"):
        for i, p in enumerate(linux.get(key) or []):
            if not p.startswith("/"):
                out.append(f"linux.{key}[{i}]: must be an absolute path, got {p!r}")
    if linux.get("seccomp") is not None:
        from .seccomp import check as seccomp_problems  # imported only for configs that have one

        out += seccomp_problems(linux["seccomp"])
    return out


def _fold(path: str) -> str:
    return os.path.normpath("/" + path.lstrip("/")) if path.startswith("/") else os.path.normpath(path)


def _has_idmap_option(m: dict) -> bool:
    opts = m.get("options") or ()
    return "idmap" in opts or "ridmap" in opts


def _sysctl_problem(name: str, namespaces: dict[str, str]) -> str:
    key = name.replace("/", ".")
    if key in IPC_SYSCTLS or key.startswith("fs.mqueue."):
        ns_type, label = "ipc", "IPC"
    elif key.startswith("net."):
        ns_type, label = "network", "network"
    elif key in ("kernel.hostname", "kernel.domainname"):
        ns_type, label = "uts", "UTS"
    else:
        return "is not namespaced: setting it would change the host"
    if ns_type not in namespaces:
        return f"needs a private {label} namespace"
    if is_own_namespace(ns_type, namespaces[ns_type]):
        return f"not allowed in the host's {label} namespace (the one linux.namespaces joins)"
    return ""


_PROC_NS_NAMES = {"network": "net", "ipc": "ipc", "uts": "uts"}  # (pyrunc.linux has them all, with ctypes)


def is_own_namespace(ns_type: str, path: str) -> bool:
    """True when ``path`` (a namespace to join) is the namespace pyrunc itself runs in, i.e. the
    host's (runc refuses net.* sysctls there for that reason)."""
    if not path:
        return False
    try:
        there, here = os.stat(path), os.stat(f"/proc/self/ns/{_PROC_NS_NAMES[ns_type]}")
    except (OSError, KeyError):
        return False  # joining it will fail, and say why
    return (there.st_dev, there.st_ino) == (here.st_dev, here.st_ino)


def _process_problems(proc: dict) -> list[str]:
    out: list[str] = []
    if not proc.get("args"):
        out.append("process.args: must not be empty")
    for i, arg in enumerate(proc.get("args") or ()):
        if "\0" in arg:
            out.append(f"process.args[{i}]: must not contain a NUL byte")
    if not str(proc.get("cwd", "")).startswith("/"):
        out.append(f"process.cwd: must be an absolute path, got {proc.get('cwd')!r}")
    for i, pair in enumerate(proc.get("env") or ()):
        # runc's populateProcessEnvironment refuses these; execve could not pass them anyway
        name, eq, value = pair.partition("=")
        if not eq:
            out.append(f'process.env[{i}]: invalid environment variable "{pair}": no "="')
        elif not name:
            out.append(f'process.env[{i}]: environment variable name can\'t be empty: "{pair}"')
        elif "\0" in pair:
            out.append(f"process.env[{i}]: must not contain a NUL byte")
    adj = proc.get("oomScoreAdj")
    if adj is not None and not -1000 <= adj <= 1000:
        out.append(f"process.oomScoreAdj: {adj} is outside the kernel's range [-1000, 1000]")
    known = set(CAPABILITIES)
    caps = proc.get("capabilities") or {}
    for kind, names in caps.items():
        for i, name in enumerate(names or ()):
            if name not in known:
                out.append(f'process.capabilities.{kind}[{i}]: unknown capability "{name}"')
    # What capset(2) would refuse at the last moment of create (runc: "unable to apply caps:
    # operation not permitted"); an ambient capability outside permitted and inheritable is
    # only a warning, as in runc.
    for kind, within in (("effective", "permitted"), ("inheritable", "bounding")):
        allowed = set(caps.get(within) or ())
        for i, name in enumerate(caps.get(kind) or ()):
            if name in known and name not in allowed:
                out.append(f"process.capabilities.{kind}[{i}]: {name} is not in the {within} set")
    seen: set[str] = set()
    for i, r in enumerate(proc.get("rlimits") or []):
        if r.get("type") in seen:
            out.append(f"process.rlimits[{i}].type: {r['type']} is listed more than once")
        seen.add(r.get("type"))
        if r.get("soft", 0) > r.get("hard", 0):
            out.append(f"process.rlimits[{i}]: soft limit {r['soft']} is above hard limit {r['hard']}")
    return out
