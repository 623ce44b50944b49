"""``linux.seccomp``: checked, compiled with libseccomp (through ctypes), patched and loaded as runc does.

runc's ``libcontainer/seccomp`` (seccomp_linux.go and patchbpf/) is the model:

- every name of a ``syscalls[]`` entry is a rule of its own; a rule whose action is the default
  action is left out (libseccomp would refuse it);
- a name libseccomp does not know is ignored (runc logs it at debug level; so do we, with --debug);
- conditions on different arguments make one rule (they must all hold); when one argument has
  several conditions, each condition becomes a rule of its own (any may hold), runc's old behaviour;
- ``SCMP_ACT_KILL`` is ``KILL_THREAD``; ``ERRNO`` and ``TRACE`` return ``errnoRet`` (else EPERM);
- without ``flags`` the filter gets ``SECCOMP_FILTER_FLAG_SPEC_ALLOW`` when the kernel has it;
  ``SECCOMP_FILTER_FLAG_TSYNC`` is accepted and ignored (the init is single-threaded);
- libseccomp's own no_new_privs attribute is off: the init sets no_new_privs as the config says;
- the program libseccomp exports is prefixed with runc's -ENOSYS stub: a syscall numbered above
  every syscall the profile names (on that architecture) fails with ENOSYS instead of getting the
  default action, so that a libc falls back from syscalls newer than the profile; not when the
  default action lets syscalls through (ALLOW, LOG, TRACE) or already returns ENOSYS;
- pyrunc loads the program itself with seccomp(2), with ``SECCOMP_FILTER_FLAG_NEW_LISTENER`` when
  a rule is ``SCMP_ACT_NOTIFY``; the listener fd then goes to the runtime over the init channel,
  and the runtime sends it to ``listenerPath`` with the container process state (``send_listener_fd``).

``check`` holds the rules a schema cannot express and needs no libseccomp: config validation
runs it.  ``compile`` runs in the init stage before pivot_root (libseccomp is opened then);
``Filter.load`` is then a single syscall, made as late as the config allows.

No ``ctypes`` at module level: the runtime imports this module to check a config.
"""

from __future__ import annotations

import os

from .record import record

TYPE_CHECKING = False  # typing costs ~11 ms to import: only type checkers read it
if TYPE_CHECKING:
    from typing import Any, Callable

EPERM = 1
ENOSYS = 38
EEXIST = 17
MAX_ERRNO = 4095  # the kernel clamps SECCOMP_RET_ERRNO's data to this

# Action values (libseccomp's seccomp.h, the kernel's SECCOMP_RET_*); ERRNO and TRACE carry 16 bits.
ACT_KILL_THREAD = 0x00000000
ACT_KILL_PROCESS = 0x80000000
ACT_TRAP = 0x00030000
ACT_ERRNO = 0x00050000
ACT_TRACE = 0x7FF00000
ACT_LOG = 0x7FFC0000
ACT_NOTIFY = 0x7FC00000
ACT_ALLOW = 0x7FFF0000

ACTIONS = {
    "SCMP_ACT_KILL": ACT_KILL_THREAD, "SCMP_ACT_KILL_THREAD": ACT_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": ACT_KILL_PROCESS, "SCMP_ACT_TRAP": ACT_TRAP, "SCMP_ACT_ERRNO": ACT_ERRNO,
    "SCMP_ACT_TRACE": ACT_TRACE, "SCMP_ACT_ALLOW": ACT_ALLOW, "SCMP_ACT_LOG": ACT_LOG,
    "SCMP_ACT_NOTIFY": ACT_NOTIFY,
}
WITH_ERRNO = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")
PERMISSIVE = ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE")  # patchbpf's isAllowAction

# The spec's names -> libseccomp's (seccomp_arch_resolve_name).
ARCHES = {
    "SCMP_ARCH_X86": "x86", "SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X32": "x32", "SCMP_ARCH_ARM": "arm",
    "SCMP_ARCH_AARCH64": "aarch64", "SCMP_ARCH_MIPS": "mips", "SCMP_ARCH_MIPS64": "mips64",
    "SCMP_ARCH_MIPS64N32": "mips64n32", "SCMP_ARCH_MIPSEL": "mipsel", "SCMP_ARCH_MIPSEL64": "mipsel64",
    "SCMP_ARCH_MIPSEL64N32": "mipsel64n32", "SCMP_ARCH_PPC": "ppc", "SCMP_ARCH_PPC64": "ppc64",
    "SCMP_ARCH_PPC64LE": "ppc64le", "SCMP_ARCH_S390": "s390", "SCMP_ARCH_S390X": "s390x",
    "SCMP_ARCH_PARISC": "parisc", "SCMP_ARCH_PARISC64": "parisc64", "SCMP_ARCH_RISCV64": "riscv64",
    "SCMP_ARCH_LOONGARCH64": "loongarch64", "SCMP_ARCH_M68K": "m68k", "SCMP_ARCH_SH": "sh",
    "SCMP_ARCH_SHEB": "sheb",
}

# enum scmp_compare
OPERATORS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
             "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}

# seccomp(2) filter flags
FLAG_TSYNC = 1
FLAG_LOG = 2
FLAG_SPEC_ALLOW = 4
FLAG_NEW_LISTENER = 8
FLAG_WAIT_KILLABLE_RECV = 32
FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC": FLAG_TSYNC, "SECCOMP_FILTER_FLAG_LOG": FLAG_LOG,
         "SECCOMP_FILTER_FLAG_SPEC_ALLOW": FLAG_SPEC_ALLOW,
         "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": FLAG_WAIT_KILLABLE_RECV}

SECCOMP_SET_MODE_FILTER = 1
MAX_INSNS = 4096  # BPF_MAXINSNS
MAX_ARGS = 6
X32_SYSCALL_BIT = 0x40000000
# The syscall pyrunc passes the listener fd with (Channel.send_fd): it must not wait for the agent
# (runc refuses "write" for the same reason: its init writes the fd number to its parent).
FD_PASSING_SYSCALL = "sendmsg"


class SeccompError(Exception):
    """A profile libseccomp or the kernel cannot take; the message names the JSON path."""


def action_value(name: str, errno_ret: int | None = None) -> int:
    """An action name (and errnoRet) as libseccomp and the kernel take it (runc's getAction)."""
    base = ACTIONS[name]
    if name in WITH_ERRNO:
        return base | ((EPERM if errno_ret is None else errno_ret) & 0xFFFF)
    return base


# ---------------------------------------------------------------------------- checks (no libseccomp)


def check(sc: dict, path: str = "linux.seccomp") -> list[str]:
    """The rules of config-linux.md and runc a schema cannot express, as ``json.path: rule``.
    ``sc`` already passed the schema (names, actions, arches, operators and flags are known)."""
    out: list[str] = []
    default = sc.get("defaultAction", "")
    if "defaultErrnoRet" in sc:
        out += _errno_problems(f"{path}.defaultErrnoRet", default, sc["defaultErrnoRet"])
    if default == "SCMP_ACT_NOTIFY":
        out.append(f"{path}.defaultAction: SCMP_ACT_NOTIFY cannot be used as default action")
    notify = False
    for i, call in enumerate(sc.get("syscalls") or ()):
        where = f"{path}.syscalls[{i}]"
        action = call.get("action", "")
        if "errnoRet" in call:
            out += _errno_problems(f"{where}.errnoRet", action, call["errnoRet"])
        for k, name in enumerate(call.get("names") or ()):
            if not name:
                out.append(f"{where}.names[{k}]: empty string is not a valid syscall")
            elif action == "SCMP_ACT_NOTIFY" and name == FD_PASSING_SYSCALL:
                out.append(f"{where}.names[{k}]: SCMP_ACT_NOTIFY cannot be used for the {name} syscall "
                           "(pyrunc passes the seccomp listener's fd to the runtime with it)")
        for j, arg in enumerate(call.get("args") or ()):
            index = arg.get("index", 0)
            if index >= MAX_ARGS:
                out.append(f"{where}.args[{j}].index: {index} is out of range: a syscall has "
                           f"{MAX_ARGS} arguments (0 to {MAX_ARGS - 1})")
        if action == "SCMP_ACT_NOTIFY":
            if not notify and not sc.get("listenerPath"):
                out.append(f"{where}.action: SCMP_ACT_NOTIFY needs {path}.listenerPath (the socket of the "
                           "seccomp agent that gets the listener fd)")
            notify = True
    for i, flag in enumerate(sc.get("flags") or ()):
        if flag == "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" and not notify:
            out.append(f"{path}.flags[{i}]: {flag} needs a rule with SCMP_ACT_NOTIFY (the kernel refuses it "
                       "without a listener)")
    return out


def _errno_problems(where: str, action: str, value: int) -> list[str]:
    if action not in WITH_ERRNO:
        return [f"{where}: {action} does not return an errno (only SCMP_ACT_ERRNO and SCMP_ACT_TRACE do)"]
    if value > MAX_ERRNO:
        return [f"{where}: {value} is not an errno (the kernel's largest is {MAX_ERRNO})"]
    return []


# ---------------------------------------------------------------------------- rules


@record
class Rule:
    """One libseccomp rule: a syscall name, an action value and its conditions."""

    name: str
    action: int
    args: list[tuple[int, int, int, int]] = []  # (index, operator, datum_a, datum_b)
    where: str = ""  # the JSON path of the syscalls[] entry it comes from


def rules(sc: dict, path: str = "linux.seccomp") -> list[Rule]:
    """The profile's rules in order, one per syscall name (runc's specconv and matchCall).

    Conditions on distinct arguments stay one rule; if an argument has more than one condition,
    every condition becomes a rule of its own, as runc does."""
    out = []
    for i, call in enumerate(sc.get("syscalls") or ()):
        action = action_value(call["action"], call.get("errnoRet"))
        conds = [(int(a["index"]), OPERATORS[a["op"]], int(a["value"]), int(a.get("valueTwo", 0)))
                 for a in call.get("args") or ()]
        indexes = [c[0] for c in conds]
        groups = [[c] for c in conds] if len(set(indexes)) < len(indexes) else [conds]
        for name in call["names"]:
            for group in groups:
                out.append(Rule(name, action, list(group), f"{path}.syscalls[{i}]"))
    return out


# ---------------------------------------------------------------------------- libseccomp


class _Lib:
    """libseccomp.so.2 and libc's syscall(), opened once (before pivot_root: dlopen needs the host's
    library paths)."""

    def __init__(self) -> None:
        import ctypes as C

        self.C = C
        try:
            lib = C.CDLL("libseccomp.so.2", use_errno=True)
        except OSError as e:
            raise SeccompError(f"linux.seccomp: cannot open libseccomp (libseccomp.so.2): {e}") from None
        self.lib = lib

        class Version(C.Structure):
            _fields_ = [("major", C.c_uint), ("minor", C.c_uint), ("micro", C.c_uint)]

        class ArgCmp(C.Structure):  # struct scmp_arg_cmp
            _fields_ = [("arg", C.c_uint), ("op", C.c_int), ("datum_a", C.c_uint64), ("datum_b", C.c_uint64)]

        class SockFprog(C.Structure):
            _fields_ = [("len", C.c_ushort), ("filter", C.c_void_p)]

        self.ArgCmp = ArgCmp
        self.SockFprog = SockFprog
        ctx = C.c_void_p
        for name, restype, argtypes in (
                ("seccomp_version", C.POINTER(Version), []),
                ("seccomp_api_get", C.c_uint, []),
                ("seccomp_init", ctx, [C.c_uint32]),
                ("seccomp_release", None, [ctx]),
                ("seccomp_arch_native", C.c_uint32, []),
                ("seccomp_arch_resolve_name", C.c_uint32, [C.c_char_p]),
                ("seccomp_arch_add", C.c_int, [ctx, C.c_uint32]),
                ("seccomp_attr_set", C.c_int, [ctx, C.c_int, C.c_uint32]),
                ("seccomp_syscall_resolve_name", C.c_int, [C.c_char_p]),
                ("seccomp_syscall_resolve_name_arch", C.c_int, [C.c_uint32, C.c_char_p]),
                ("seccomp_rule_add_array", C.c_int, [ctx, C.c_uint32, C.c_int, C.c_uint, C.POINTER(ArgCmp)]),
                ("seccomp_export_bpf", C.c_int, [ctx, C.c_int])):
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
        v = lib.seccomp_version().contents
        self.version = f"{v.major}.{v.minor}.{v.micro}"
        self.api = int(lib.seccomp_api_get())
        self.native = int(lib.seccomp_arch_native())
        self.nr_seccomp = int(lib.seccomp_syscall_resolve_name(b"seccomp"))
        libc = C.CDLL(None, use_errno=True)
        self.syscall = libc.syscall
        self.syscall.restype = C.c_long

    def seccomp(self, flags: int, fprog: object) -> int:
        """seccomp(SECCOMP_SET_MODE_FILTER, flags, fprog); -errno on failure."""
        C = self.C
        ret = int(self.syscall(C.c_long(self.nr_seccomp), C.c_ulong(SECCOMP_SET_MODE_FILTER), C.c_ulong(flags),
                               fprog))
        return -C.get_errno() if ret < 0 else ret

    def known_arches(self) -> list[str]:
        """The spec's architecture names this libseccomp knows (2.5 lacks LOONGARCH64, M68K, SH, SHEB)."""
        return [a for a, name in ARCHES.items() if self.lib.seccomp_arch_resolve_name(name.encode())]

    def flag_supported(self, flags: int) -> bool:
        """The kernel knows these filter flags: it gets as far as reading the (NULL) program."""
        return self.seccomp(flags, None) == -14  # EFAULT


_lib: _Lib | None = None


def libseccomp() -> _Lib:
    global _lib
    if _lib is None:
        _lib = _Lib()
    return _lib


@record
class Filter:
    """A compiled profile, ready to load: the cBPF program (struct sock_filter[]) and its flags."""

    program: bytes
    flags: int = 0
    notify: bool = False
    ignored: list[str] = []  # syscall names libseccomp does not know (left out, as runc does)
    stub: int = 0  # instructions of the -ENOSYS stub at the program's start
    loaded: bool = False

    def __len__(self) -> int:
        return len(self.program) // 8

    def save(self, path: str) -> None:
        """Keep the compiled filter (in the container's state directory), for ``exec``."""
        from . import jsonio

        doc = {"flags": self.flags, "notify": self.notify, "stub": self.stub, "ignored": self.ignored,
               "program": self.program.hex()}
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, jsonio.dumps(doc).encode())
        finally:
            os.close(fd)
        os.rename(tmp, path)

    @staticmethod
    def read(path: str) -> Filter | None:
        """What ``save`` kept, or None: compiling podman's profile takes libseccomp some 20 ms."""
        from . import jsonio

        try:
            with open(path, "rb") as f:
                doc = jsonio.loads(f.read())
            return Filter(bytes.fromhex(doc["program"]), int(doc["flags"]), bool(doc["notify"]),
                          list(doc["ignored"]), int(doc["stub"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def load(self) -> int:
        """Install the filter on the calling thread; the listener fd with SCMP_ACT_NOTIFY, else -1.
        Needs no_new_privs or CAP_SYS_ADMIN."""
        lib = libseccomp()
        C = lib.C
        buf = C.create_string_buffer(self.program, len(self.program))
        fprog = lib.SockFprog(len(self), C.cast(buf, C.c_void_p))
        ret = lib.seccomp(self.flags, C.byref(fprog))
        if ret < 0:
            hint = " (no_new_privs is off and CAP_SYS_ADMIN is missing)" if ret == -13 else ""
            raise OSError(-ret, f"loading the seccomp filter: {os.strerror(-ret)}{hint}")
        self.loaded = True
        return ret if self.flags & FLAG_NEW_LISTENER else -1


def compile_filter(sc: dict, debug: Callable[[str], None] | None = None, path: str = "linux.seccomp") -> Filter:
    """Build the profile with libseccomp, prefix runc's -ENOSYS stub and work out the flags.
    ``debug(message)`` hears about the syscall names libseccomp does not know."""
    lib = libseccomp()
    L = lib.lib
    default_name = sc["defaultAction"]
    default = action_value(default_name, sc.get("defaultErrnoRet"))
    all_rules = rules(sc, path)
    notify = any(r.action == ACT_NOTIFY for r in all_rules)
    if notify and lib.api < 6:
        raise SeccompError(f"{path}: seccomp notify unsupported: API level: got {lib.api}, want at least 6. "
                           "Please try with libseccomp >= 2.5.0 and Linux >= 5.7")
    flags = _flags(lib, sc, path)
    if notify:
        flags |= FLAG_NEW_LISTENER

    ctx = L.seccomp_init(default)
    if not ctx:
        raise SeccompError(f"{path}.defaultAction: libseccomp {lib.version} refuses {default_name} "
                           "(not supported by this kernel?)")
    try:
        arches = [lib.native]
        for i, name in enumerate(sc.get("architectures") or ()):
            token = int(L.seccomp_arch_resolve_name(ARCHES[name].encode()))
            if not token:
                raise SeccompError(f"{path}.architectures[{i}]: {name} is not known to libseccomp {lib.version}")
            rc = L.seccomp_arch_add(ctx, token)
            if rc not in (0, -EEXIST):
                raise SeccompError(f"{path}.architectures[{i}]: adding {name}: {os.strerror(-rc)}")
            if token not in arches:
                arches.append(token)
        _attr(L, ctx, 3, 0, path)  # SCMP_FLTATR_CTL_NNP: the init sets no_new_privs itself
        if len(all_rules) > 32:
            L.seccomp_attr_set(ctx, 8, 2)  # SCMP_FLTATR_CTL_OPTIMIZE: binary tree (runc; best effort)

        ignored: list[str] = []
        for r in all_rules:
            if r.action == default:
                continue  # redundant, and libseccomp refuses it
            nr = int(L.seccomp_syscall_resolve_name(r.name.encode()))
            if nr == -1:  # __NR_SCMP_ERROR
                if r.name not in ignored:
                    ignored.append(r.name)
                    if debug is not None:
                        debug(f'seccomp: syscall "{r.name}" ({r.where}) is not known to libseccomp '
                              f"{lib.version}: ignored")
                continue
            conds = (lib.ArgCmp * max(1, len(r.args)))(*[lib.ArgCmp(*a) for a in r.args])
            rc = L.seccomp_rule_add_array(ctx, r.action, nr, len(r.args), conds)
            if rc < 0:
                raise SeccompError(f"{r.where}: libseccomp cannot add the rule for {r.name}: {os.strerror(-rc)}")
        program = _export(L, ctx)
    finally:
        L.seccomp_release(ctx)

    stub = b""
    # runc means to skip the stub when the default already returns ENOSYS (its test never holds;
    # the filter does the same either way)
    enosys_default = default_name == "SCMP_ACT_ERRNO" and sc.get("defaultErrnoRet") == ENOSYS
    if default_name not in PERMISSIVE and not enosys_default:
        stub = assemble(enosys_stub(_last_syscalls(lib, sc, arches)))
    whole = stub + program
    if len(whole) // 8 > MAX_INSNS:
        raise SeccompError(f"{path}: the filter has {len(whole) // 8} instructions, more than the kernel's "
                           f"{MAX_INSNS}")
    return Filter(whole, flags, notify, ignored, len(stub) // 8)


def _flags(lib: _Lib, sc: dict, path: str) -> int:
    if sc.get("flags") is None:  # runc: no flags at all (not even []) means SPEC_ALLOW, where it exists
        return FLAG_SPEC_ALLOW if lib.flag_supported(FLAG_SPEC_ALLOW) else 0
    flags = 0
    for i, name in enumerate(sc["flags"]):
        bit = FLAGS[name]
        if bit == FLAG_TSYNC:
            continue  # the init has one thread; runc ignores it too
        probe = bit | (FLAG_NEW_LISTENER if bit == FLAG_WAIT_KILLABLE_RECV else 0)
        if not lib.flag_supported(probe):
            raise SeccompError(f"{path}.flags[{i}]: {name} is not supported by this kernel")
        flags |= bit
    return flags


def _attr(L: Any, ctx: int, attr: int, value: int, path: str) -> None:
    rc = L.seccomp_attr_set(ctx, attr, value)
    if rc < 0:
        raise SeccompError(f"{path}: libseccomp attribute {attr}: {os.strerror(-rc)}")


def _export(L: Any, ctx: int) -> bytes:
    fd = os.memfd_create("pyrunc-seccomp", os.MFD_CLOEXEC)
    try:
        rc = L.seccomp_export_bpf(ctx, fd)
        if rc < 0:
            raise SeccompError(f"linux.seccomp: libseccomp cannot export the filter: {os.strerror(-rc)}")
        size = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- runc's -ENOSYS stub

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_S390 = 0x00000016
AUDIT_ARCH_S390X = 0x80000016

# cBPF opcodes
_LD_W_ABS = 0x20
_JA = 0x05
_JEQ = 0x15
_JGT = 0x25
_JSET = 0x45
_RET_K = 0x06
RET_ENOSYS = ACT_ERRNO | ENOSYS

Insn = tuple[int, int, int, int]  # (code, jt, jf, k)


def _last_syscalls(lib: _Lib, sc: dict, arches: list[int]) -> dict[int, dict[int, int]]:
    """patchbpf's findLastSyscalls: audit arch -> {libseccomp arch token: largest syscall number
    of the profile on it}.  x32 shares x86_64's audit arch (its numbers have bit 30 set)."""
    names = {n for call in sc.get("syscalls") or () for n in call["names"]}
    L = lib.lib
    out: dict[int, dict[int, int]] = {}
    for token in arches:
        audit = AUDIT_ARCH_X86_64 if token == 0x4000003E else token  # SCMP_ARCH_X32
        largest = 0
        for name in names:
            nr = int(L.seccomp_syscall_resolve_name_arch(token, name.encode()))
            largest = max(largest, nr)  # unknown (-1) and pseudo (negative) numbers never win
        if largest:
            out.setdefault(audit, {})[token] = largest
    return out


def enosys_stub(last: dict[int, dict[int, int]]) -> list[Insn]:
    """patchbpf's generateEnosysStub, instruction for instruction: per audit arch, a syscall number
    above the profile's largest returns ENOSYS, anything else falls through to the filter.  Jumps
    are measured from the stub's end, so sections are prepended."""
    x32_token = 0x4000003E
    tail: list[Insn] = [(_JA, 0, 0, 1), (_RET_K, 0, 0, RET_ENOSYS)]
    table: dict[int, int] = {}
    for audit, maxes in last.items():
        enosys = len(tail) - 1  # from the end of this section to the ENOSYS return
        to_filter = enosys + 1
        section: list[Insn] = [(_LD_W_ABS, 0, 0, 0)]  # A = seccomp_data.nr
        if len(maxes) == 1:
            ((token, sysno),) = maxes.items()
            if token in (AUDIT_ARCH_S390, AUDIT_ARCH_S390X):
                # syscall 0 multiplexes the large syscall numbers there: unknown ones end up as 0
                section += [(_JEQ, 0, 1, 0), (_RET_K, 0, 0, RET_ENOSYS)]
            if enosys + 1 <= 255:
                stail: list[Insn] = [(_JGT, enosys + 1, 0, sysno), (_JA, 0, 0, to_filter)]
            else:
                stail = [(_JGT, 0, 1, sysno), (_RET_K, 0, 0, RET_ENOSYS), (_JA, 0, 0, to_filter)]
            if audit == AUDIT_ARCH_X86_64:
                if token == x32_token:  # only x32 calls (bit 30 set) are checked
                    stail = [(_JSET, 0, len(stail) - 1, X32_SYSCALL_BIT)] + stail
                else:  # only x86_64 calls (bit 30 clear) are checked
                    stail = [(_JSET, len(stail) - 1, 0, X32_SYSCALL_BIT)] + stail
            section += stail
        elif len(maxes) == 2:
            if audit != AUDIT_ARCH_X86_64 or x32_token not in maxes:
                raise SeccompError(f"seccomp: unknown architecture overlap on native arch {audit:#x}")
            x32 = maxes[x32_token]
            x86 = next(v for k, v in maxes.items() if k != x32_token)
            if enosys + 2 <= 255:
                section += [(_JSET, 1, 0, X32_SYSCALL_BIT), (_JGT, enosys + 2, 1, x86),
                            (_JGT, enosys + 1, 0, x32), (_JA, 0, 0, to_filter)]
            else:
                section += [(_JSET, 1, 0, X32_SYSCALL_BIT), (_JGT, 1, 2, x86), (_JGT, 0, 1, x32),
                            (_RET_K, 0, 0, RET_ENOSYS), (_JA, 0, 0, to_filter)]
        else:
            continue
        tail = section + tail
        table[audit] = len(tail)
    tail = [(_JA, 0, 0, len(tail))] + tail  # an arch not listed: straight to the filter
    for audit in table:
        jump = len(tail) - table[audit]
        if jump <= 255:
            tail = [(_JEQ, jump, 0, audit)] + tail
        else:
            tail = [(_JEQ, 0, 1, audit), (_JA, 0, 0, jump)] + tail
    return [(_LD_W_ABS, 0, 0, 4)] + tail  # A = seccomp_data.arch


def assemble(program: list[Insn]) -> bytes:
    """struct sock_filter[] in host byte order: u16 code, u8 jt, u8 jf, u32 k."""
    import sys

    order = sys.byteorder
    out = bytearray()
    for code, jt, jf, k in program:
        out += code.to_bytes(2, order) + bytes((jt, jf)) + (k & 0xFFFFFFFF).to_bytes(4, order)
    return bytes(out)


def disassemble(program: bytes) -> list[Insn]:
    import sys

    order = sys.byteorder
    return [(int.from_bytes(program[i:i + 2], order), program[i + 2], program[i + 3],
             int.from_bytes(program[i + 4:i + 8], order)) for i in range(0, len(program), 8)]


# ---------------------------------------------------------------------------- the listener (runtime side)


def process_state(state: dict, pid: int, metadata: str | None) -> dict:
    """The container process state (config-linux.md) that goes with the listener fd."""
    out: dict = {"ociVersion": state["ociVersion"], "fds": ["seccompFd"], "pid": pid}
    if metadata:
        out["metadata"] = metadata
    out["state"] = state
    return out


def send_listener_fd(listener_path: str, doc: dict, fd: int) -> None:
    """One connection to the seccomp agent's socket: the JSON document and the fd (SCM_RIGHTS), then
    close, as the spec says.  Raises OSError with runc's words."""
    import _socket
    import sys

    from . import jsonio

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        try:
            sock.connect(listener_path)
        except OSError as e:
            raise OSError(e.errno, "failed to connect with seccomp agent specified in the seccomp profile: "
                                   f"dial unix {listener_path}: {e.strerror}") from None
        data = jsonio.dumps(doc).encode()
        rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fd.to_bytes(4, sys.byteorder))]
        try:
            sent = sock.sendmsg([data], rights)
            if sent < len(data):
                sock.sendall(data[sent:])  # the fds went with the first part, as the spec wants
        except OSError as e:
            raise OSError(e.errno, f"cannot send seccomp fd to {listener_path}: {e.strerror}") from None
    finally:
        sock.close()
