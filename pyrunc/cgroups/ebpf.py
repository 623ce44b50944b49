"""The cgroup v2 device controller: a ``BPF_PROG_TYPE_CGROUP_DEVICE`` program per container.

cgroup v2 has no devices.* files.  Like runc, crun and youki we assemble an eBPF
program from the device rules, load it with ``bpf(BPF_PROG_LOAD)`` and attach it to
the container's cgroup (``BPF_CGROUP_DEVICE``, ``BPF_F_ALLOW_MULTI``).  The kernel runs
it for every open/mknod of a device node by a task in that cgroup (or below) with

    struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; };

``access_type`` = device type (``BPF_DEVCG_DEV_BLOCK`` 1 / ``_CHAR`` 2) in the low 16
bits and the requested access (``BPF_DEVCG_ACC_MKNOD`` 1 / ``_READ`` 2 / ``_WRITE`` 4,
possibly several) in the high 16 bits; the program returns 1 (allow) or 0 (deny).

Semantics: the rules first go through the same v1 model the cgroup v1 backend uses
(``resources.device_target``: a default plus exceptions, rules applied in order, an
"a" rule resetting everything), like runc's devicefilter runs its v1 emulator first.
The program then checks the exceptions (all of the action opposite to the default,
so their order does not matter: "the last matching rule wins" is already folded in)
and falls back to the default:

* an allowance (deny-by-default mode) must cover every requested access bit,
* a denial (allow-by-default mode) applies when it covers any requested bit.

That is the v1 kernel's rule (match_exception / match_exception_partial).  runc also
asks a denial to cover every requested bit, so with "a rwm allow, c 1:3 w deny" it
lets an O_RDWR open of c 1:3 through; we deny it, as cgroup v1 does.

Updates attach the new program, then detach the ones we attached before (recognised
by their program name), so the cgroup is never without a filter; programs other
tools attached are left alone (they can only restrict further).  Nothing is pinned:
the programs go away with the cgroup.

The assembler is pure Python (``struct``); ``ctypes`` is imported only by the
functions that call ``bpf(2)``.
"""

from __future__ import annotations

import errno
import os
import struct
import sys

from .base import CgroupError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (hot path)
if TYPE_CHECKING:
    import ctypes

    from .resources import DeviceState

# ---------------------------------------------------------------------------- eBPF ISA

# instruction classes / fields (include/uapi/linux/bpf_common.h, bpf.h)
BPF_LDX = 0x01
BPF_ALU = 0x04
BPF_JMP = 0x05
BPF_W = 0x00
BPF_MEM = 0x60
BPF_K = 0x00
BPF_X = 0x08
BPF_AND = 0x50
BPF_RSH = 0x70
BPF_MOV = 0xB0
BPF_JEQ = 0x10
BPF_JNE = 0x50
BPF_EXIT = 0x90

OP_LDXW = BPF_LDX | BPF_MEM | BPF_W       # 0x61  dst = *(u32 *)(src + off)
OP_AND32_IMM = BPF_ALU | BPF_AND | BPF_K  # 0x54  dst &= imm (32-bit)
OP_RSH32_IMM = BPF_ALU | BPF_RSH | BPF_K  # 0x74  dst >>= imm (32-bit)
OP_MOV32_IMM = BPF_ALU | BPF_MOV | BPF_K  # 0xb4  dst = imm (32-bit)
OP_MOV32_REG = BPF_ALU | BPF_MOV | BPF_X  # 0xbc  dst = src (32-bit)
OP_JEQ_IMM = BPF_JMP | BPF_JEQ | BPF_K    # 0x15  if dst == imm goto +off
OP_JNE_IMM = BPF_JMP | BPF_JNE | BPF_K    # 0x55  if dst != imm goto +off
OP_JNE_REG = BPF_JMP | BPF_JNE | BPF_X    # 0x5d  if dst != src goto +off
OP_EXIT = BPF_JMP | BPF_EXIT              # 0x95  return r0

# struct bpf_cgroup_dev_ctx
BPF_DEVCG_DEV_BLOCK = 1
BPF_DEVCG_DEV_CHAR = 2
BPF_DEVCG_ACC_MKNOD = 1
BPF_DEVCG_ACC_READ = 2
BPF_DEVCG_ACC_WRITE = 4
ACC_ALL = BPF_DEVCG_ACC_MKNOD | BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE

DEV_TYPES = {"b": BPF_DEVCG_DEV_BLOCK, "c": BPF_DEVCG_DEV_CHAR}
ACCESS_BITS = {"m": BPF_DEVCG_ACC_MKNOD, "r": BPF_DEVCG_ACC_READ, "w": BPF_DEVCG_ACC_WRITE}

# bpf(2) commands and attributes
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6  # enum bpf_attach_type
BPF_F_ALLOW_MULTI = 2

LICENSE = b"Apache"
PROG_NAME = b"pyrunc_devices"  # BPF_OBJ_NAME_LEN 16: how we recognise our own programs

# Registers: r1 = ctx on entry, then scratch; r2 type; r3 access; r4 major; r5 minor.
R0, R1, R2, R3, R4, R5 = range(6)


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> tuple[int, int, int, int, int]:
    return (code, dst, src, off, imm)


def _imm32(value: int) -> int:
    """A u32 as the s32 the instruction's imm field holds."""
    return value - (1 << 32) if value >= 1 << 31 else value


# ---------------------------------------------------------------------------- assembler


def access_mask(access: str) -> int:
    mask = 0
    for c in access:
        try:
            mask |= ACCESS_BITS[c]
        except KeyError:
            raise CgroupError(f"linux.resources.devices: unknown device access {c!r} in {access!r}") from None
    return mask


def assemble(state: DeviceState) -> list[tuple[int, int, int, int, int]]:
    """The device filter for a ``resources.DeviceState``, as (code, dst, src, off, imm) tuples."""
    default = 1 if state.default_allow else 0
    action = 1 - default  # every exception does the opposite of the default
    insns = [
        _insn(OP_LDXW, R2, R1, 0),            # r2 = ctx->access_type
        _insn(OP_AND32_IMM, R2, imm=0xFFFF),  # r2 &= 0xffff  (device type)
        _insn(OP_LDXW, R3, R1, 0),            # r3 = ctx->access_type
        _insn(OP_RSH32_IMM, R3, imm=16),      # r3 >>= 16     (requested access)
        _insn(OP_LDXW, R4, R1, 4),            # r4 = ctx->major
        _insn(OP_LDXW, R5, R1, 8),            # r5 = ctx->minor
    ]
    for (dtype, major, minor), access in sorted(state.exceptions.items()):
        if dtype not in DEV_TYPES:
            raise CgroupError(f"linux.resources.devices: invalid device type {dtype!r} in a device filter rule")
        for what, number in (("major", major), ("minor", minor)):
            if number > 0xFFFFFFFF:
                raise CgroupError(f"linux.resources.devices: invalid {what} {number}")
        mask = access_mask(access)
        block: list[list[int]] = []  # the jumps' off (-1 here) is set once the block is complete
        block.append([OP_JNE_IMM, R2, 0, -1, DEV_TYPES[dtype]])
        if mask != ACC_ALL:
            block.append([OP_MOV32_REG, R1, R3, 0, 0])
            block.append([OP_AND32_IMM, R1, 0, 0, mask])
            if action:  # an allowance must cover every requested bit: (r3 & mask) == r3
                block.append([OP_JNE_REG, R1, R3, -1, 0])
            else:       # a denial applies as soon as it covers one of them: (r3 & mask) != 0
                block.append([OP_JEQ_IMM, R1, 0, -1, 0])
        if major >= 0:
            block.append([OP_JNE_IMM, R4, 0, -1, _imm32(major)])
        if minor >= 0:
            block.append([OP_JNE_IMM, R5, 0, -1, _imm32(minor)])
        block.append([OP_MOV32_IMM, R0, 0, 0, action])
        block.append([OP_EXIT, 0, 0, 0, 0])
        n = len(block)
        for i, ins in enumerate(block):
            if ins[0] in (OP_JNE_IMM, OP_JNE_REG, OP_JEQ_IMM):
                ins[3] = n - (i + 1)  # to the first instruction after this block
        insns.extend(tuple(ins) for ins in block)  # type: ignore[misc]
    insns.append(_insn(OP_MOV32_IMM, R0, imm=default))
    insns.append(_insn(OP_EXIT))
    return insns


def encode(insns: list[tuple[int, int, int, int, int]]) -> bytes:
    """struct bpf_insn[] in host byte order (dst_reg is the low nibble on little-endian)."""
    little = sys.byteorder == "little"
    fmt = "<BBhi" if little else ">BBhi"
    out = bytearray()
    for code, dst, src, off, imm in insns:
        regs = (src << 4) | dst if little else (dst << 4) | src
        out += struct.pack(fmt, code, regs, off, imm)
    return bytes(out)


def decode(code: bytes) -> list[tuple[int, int, int, int, int]]:
    """The inverse of ``encode`` (for tests and debugging)."""
    little = sys.byteorder == "little"
    fmt = "<BBhi" if little else ">BBhi"
    out = []
    for i in range(0, len(code), 8):
        op, regs, off, imm = struct.unpack_from(fmt, code, i)
        dst, src = (regs & 0xF, regs >> 4) if little else (regs >> 4, regs & 0xF)
        out.append((op, dst, src, off, imm))
    return out


# ---------------------------------------------------------------------------- bpf(2)

_BPF_SYSCALL = {
    "x86_64": 321, "aarch64": 280, "arm64": 280, "riscv64": 280, "loongarch64": 280,
    "i386": 357, "i686": 357, "armv7l": 386, "armv6l": 386, "armv8l": 386,
    "ppc64": 361, "ppc64le": 361, "s390x": 351, "mips64": 5315,
}
_ATTR_SIZE = 128  # zero tail past what a command reads: every kernel accepts it
_libc_syscall = None


def _syscall():  # type: ignore[no-untyped-def]
    global _libc_syscall
    if _libc_syscall is None:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).syscall
        fn.restype = ctypes.c_long
        _libc_syscall = fn
    return _libc_syscall


def _bpf(cmd: int, attr: "ctypes.Array[ctypes.c_char]") -> int:
    """bpf(cmd, attr, sizeof attr) -> its result; raises OSError.  ``attr``: a ctypes buffer."""
    import ctypes

    machine = os.uname().machine
    nr = _BPF_SYSCALL.get(machine)
    if nr is None:
        raise OSError(errno.ENOSYS, f"bpf(2): unknown system call number on {machine}")
    fn = _syscall()
    retries = 0
    while True:
        ret = fn(ctypes.c_long(nr), ctypes.c_long(cmd), ctypes.c_void_p(ctypes.addressof(attr)),
                 ctypes.c_long(ctypes.sizeof(attr)))
        if ret >= 0:
            return int(ret)
        err = ctypes.get_errno()
        if err == errno.EINTR or (err == errno.EAGAIN and cmd == BPF_PROG_LOAD and retries < 30):
            retries += 1  # the verifier can be interrupted by a signal (EAGAIN, Linux 4.20+)
            continue
        raise OSError(err, os.strerror(err))


def _bpf_fd(cmd: int, attr: "ctypes.Array[ctypes.c_char]") -> int:
    fd = _bpf(cmd, attr)
    if fd == 0:  # bpf(2) treats fd 0 as "none" in later calls: move it
        import fcntl

        try:
            fd = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 1)
        finally:
            os.close(0)
    return fd


def _attr():  # type: ignore[no-untyped-def]
    import ctypes

    return ctypes.create_string_buffer(_ATTR_SIZE)


def load(insns: list[tuple[int, int, int, int, int]]) -> int:
    """BPF_PROG_LOAD the program; returns its fd.  A failure carries the verifier log."""
    import ctypes

    code = ctypes.create_string_buffer(encode(insns))
    lic = ctypes.create_string_buffer(LICENSE)
    attr = _attr()
    # prog_type, insn_cnt, insns, license, log_level, log_size, log_buf, kern_version,
    # prog_flags, prog_name[16]
    struct.pack_into("=IIQQ", attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE, len(insns),
                     ctypes.addressof(code), ctypes.addressof(lic))
    struct.pack_into("=16s", attr, 48, PROG_NAME)
    try:
        return _with_memlock(lambda: _bpf_fd(BPF_PROG_LOAD, attr))
    except OSError as first:
        if first.errno in (errno.EPERM, errno.ENOSYS):
            raise
        failure = first
    # retry with the verifier log on (the first try skips it: it is the fast path)
    size = 64 * 1024
    while True:
        log = ctypes.create_string_buffer(size)
        struct.pack_into("=IIQ", attr, 24, 1, size, ctypes.addressof(log))
        try:
            return _bpf_fd(BPF_PROG_LOAD, attr)  # unexpected, but then it is loaded
        except OSError as e:
            if e.errno == errno.ENOSPC and size < (1 << 24) - 1:
                size = min(size * 8, (1 << 24) - 1)
                continue
            text = log.value.decode(errors="replace").strip()
            if text:
                raise OSError(e.errno, f"{e.strerror}; verifier log:\n{text}") from None
            raise OSError(failure.errno, failure.strerror) from None


def _with_memlock(call):  # type: ignore[no-untyped-def]
    """Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK: on EPERM retry with it
    raised, then restore it (the container's init is forked from us later)."""
    try:
        return call()
    except OSError as e:
        if e.errno != errno.EPERM:
            raise
        import resource

        old = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        if old[0] == resource.RLIM_INFINITY:
            raise
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        except (OSError, ValueError):
            raise e from None
        try:
            return call()
        finally:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, old)


def attach(cgroup_fd: int, prog_fd: int) -> None:
    attr = _attr()
    struct.pack_into("=IIII", attr, 0, cgroup_fd, prog_fd, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI)
    _bpf(BPF_PROG_ATTACH, attr)


def detach(cgroup_fd: int, prog_fd: int) -> None:
    attr = _attr()
    struct.pack_into("=III", attr, 0, cgroup_fd, prog_fd, BPF_CGROUP_DEVICE)
    _bpf(BPF_PROG_DETACH, attr)


def query(cgroup_fd: int) -> list[int]:
    """Ids of the BPF_CGROUP_DEVICE programs attached to this cgroup itself.

    The attr buffer is 128 bytes: kernels 6.17+ write query.revision (offset 56)
    whatever size we pass.
    """
    import ctypes

    count = 64
    for _ in range(10):
        ids = (ctypes.c_uint32 * count)()
        attr = _attr()
        # target_fd, attach_type, query_flags, attach_flags, prog_ids, prog_cnt
        struct.pack_into("=IIIIQI", attr, 0, cgroup_fd, BPF_CGROUP_DEVICE, 0, 0,
                         ctypes.addressof(ids), count)
        try:
            _bpf(BPF_PROG_QUERY, attr)
        except OSError as e:
            if e.errno == errno.ENOSPC:  # more than `count`: prog_cnt now says how many
                count = max(struct.unpack_from("=I", attr, 24)[0], count + 1)
                continue
            raise
        n = struct.unpack_from("=I", attr, 24)[0]
        return list(ids[:n])
    raise OSError(errno.EAGAIN, "the list of device programs keeps changing")


def prog_fd_by_id(prog_id: int) -> int:
    attr = _attr()
    struct.pack_into("=I", attr, 0, prog_id)
    return _bpf_fd(BPF_PROG_GET_FD_BY_ID, attr)


def prog_name(prog_fd: int) -> bytes:
    """bpf_prog_info.name (offset 64) of a loaded program."""
    import ctypes

    info = ctypes.create_string_buffer(80)
    attr = _attr()
    struct.pack_into("=IIQ", attr, 0, prog_fd, len(info), ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return info.raw[64:80].rstrip(b"\0")


def _our_programs(cgroup_fd: int) -> list[int]:
    """fds of the device programs we attached to this cgroup earlier (caller closes them)."""
    fds = []
    try:
        for prog_id in query(cgroup_fd):
            try:
                fd = prog_fd_by_id(prog_id)
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.EPERM, errno.EACCES):
                    continue  # gone meanwhile, or an LSM keeps it from us: not ours anyway
                raise
            try:
                name = prog_name(fd)
            except OSError:
                name = b""
            if name == PROG_NAME:
                fds.append(fd)
            else:
                os.close(fd)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def _in_user_namespace() -> bool:
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() != ["0", "0", "4294967295"]
    except OSError:
        return False


# ---------------------------------------------------------------------------- entry point


def set_device_filter(cgroup_dir: str, state: DeviceState) -> None:
    """Make ``state`` the device policy of the cgroup v2 directory ``cgroup_dir``.

    Allow-all needs no program: only our earlier ones are detached.  Otherwise the new
    program is attached before the old ones go.  Like runc, a bpf(2) refused for lack
    of privilege inside a user namespace (rootless) is ignored: device nodes cannot be
    created there anyway.
    """
    what = "linux.resources.devices"
    allow_all = state.is_allow_all()
    insns = None if allow_all else assemble(state)
    try:
        dir_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise CgroupError(f"{what}: cannot open cgroup {cgroup_dir}: {e.strerror}", e.errno) from None
    step = "BPF_PROG_QUERY"
    old: list[int] = []
    try:
        old = _our_programs(dir_fd)
        if insns is not None:
            step = "BPF_PROG_LOAD"
            prog = load(insns)
            try:
                step = "BPF_PROG_ATTACH"
                attach(dir_fd, prog)
            finally:
                os.close(prog)  # attached, the cgroup keeps the program alive
        step = "BPF_PROG_DETACH"
        for fd in old:
            try:
                detach(dir_fd, fd)
            except FileNotFoundError:
                pass  # someone else detached it meanwhile
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EACCES) and (allow_all or _in_user_namespace()):
            return
        hint = ""
        if step == "BPF_PROG_ATTACH" and e.errno == errno.EPERM:
            hint = " (a program attached without BPF_F_ALLOW_MULTI may hold the cgroup)"
        raise CgroupError(f"{what}: cannot set the device filter (eBPF) of cgroup {cgroup_dir}: "
                          f"{step}: {e.strerror}{hint}", e.errno) from None
    finally:
        for fd in old:
            os.close(fd)
        os.close(dir_fd)
