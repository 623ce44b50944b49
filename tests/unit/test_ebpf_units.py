"""pyrunc.cgroups.ebpf without root: the device filter's instructions, byte for byte and by meaning.

The listings below use bpftool's syntax with absolute jump targets ("goto 11").  Besides
the listings, a small interpreter written here (not shared with the assembler) runs each
program on every (type, major, minor, access) of interest and compares it with the v1
kernel's rule (an allowance must cover all requested access bits, a denial any of them).
"""

from __future__ import annotations

import itertools
import struct
import sys

import pytest

from pyrunc.cgroups import CgroupError
from pyrunc.cgroups import ebpf
from pyrunc.cgroups.resources import DeviceState, device_target
from pyrunc.cgroups.v2 import V2Manager
from pyrunc.config import DeviceRule, Linux, Memory, Resources, device_cgroup_rules

# ---------------------------------------------------------------------------- decoding (our own)

PROLOGUE = [
    "r2 = *(u32 *)(r1 + 0)",
    "w2 &= 65535",
    "r3 = *(u32 *)(r1 + 0)",
    "w3 >>= 16",
    "r4 = *(u32 *)(r1 + 4)",
    "r5 = *(u32 *)(r1 + 8)",
]


def raw(program: bytes) -> list[tuple[int, int, int, int, int]]:
    """struct bpf_insn[] -> (code, dst, src, off, imm), decoded here independently of ebpf.decode."""
    assert len(program) % 8 == 0
    out = []
    for i in range(0, len(program), 8):
        code, regs, off, imm = struct.unpack_from("=BBhi", program, i)
        if sys.byteorder == "little":
            dst, src = regs & 0xF, regs >> 4
        else:
            dst, src = regs >> 4, regs & 0xF
        out.append((code, dst, src, off, imm))
    return out


def listing(program: bytes) -> list[str]:
    lines = []
    for pc, (code, dst, src, off, imm) in enumerate(raw(program)):
        if code == 0x61:
            lines.append(f"r{dst} = *(u32 *)(r{src} + {off})")
        elif code == 0x54:
            lines.append(f"w{dst} &= {imm}")
        elif code == 0x74:
            lines.append(f"w{dst} >>= {imm}")
        elif code == 0xB4:
            lines.append(f"w{dst} = {imm}")
        elif code == 0xBC:
            lines.append(f"w{dst} = w{src}")
        elif code == 0x55:
            lines.append(f"if r{dst} != {imm} goto {pc + 1 + off}")
        elif code == 0x15:
            lines.append(f"if r{dst} == {imm} goto {pc + 1 + off}")
        elif code == 0x5D:
            lines.append(f"if r{dst} != r{src} goto {pc + 1 + off}")
        elif code == 0x95:
            lines.append("exit")
        else:
            raise AssertionError(f"unexpected opcode {code:#x} at {pc}")
    return lines


def run(program: bytes, dev_type: int, major: int, minor: int, access: int) -> int:
    """Interpret the program (the opcodes the device filter uses) on one bpf_cgroup_dev_ctx."""
    insns = raw(program)
    ctx = struct.pack("=III", (access << 16) | dev_type, major, minor)
    regs = [0] * 11
    mask64 = (1 << 64) - 1
    pc = 0
    for _ in range(10_000):
        code, dst, src, off, imm = insns[pc]
        pc += 1
        simm = imm & mask64  # sign-extended to 64 bits, as the jumps compare
        if code == 0x61:
            assert src == 1, "only the context is read"
            regs[dst] = struct.unpack_from("=I", ctx, off)[0]
        elif code == 0x54:
            regs[dst] = (regs[dst] & imm) & 0xFFFFFFFF
        elif code == 0x74:
            regs[dst] = (regs[dst] & 0xFFFFFFFF) >> imm
        elif code == 0xB4:
            regs[dst] = imm & 0xFFFFFFFF
        elif code == 0xBC:
            regs[dst] = regs[src] & 0xFFFFFFFF
        elif code == 0x55:
            pc += off if regs[dst] != simm else 0
        elif code == 0x15:
            pc += off if regs[dst] == simm else 0
        elif code == 0x5D:
            pc += off if regs[dst] != regs[src] else 0
        elif code == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
    raise AssertionError("no exit")


def check_verifiable(program: bytes) -> None:
    """What the verifier insists on: forward jumps inside the program, every instruction
    reachable, every path ending in exit with r0 set to 0 or 1."""
    insns = raw(program)
    n = len(insns)
    assert insns[-1][0] == 0x95
    reached = set()
    todo = [(0, False)]
    while todo:
        pc, r0_set = todo.pop()
        if (pc, r0_set) in reached:
            continue
        reached.add((pc, r0_set))
        assert 0 <= pc < n
        code, dst, _src, off, imm = insns[pc]
        if code == 0x95:
            assert r0_set, f"exit at {pc} with r0 unset"
            continue
        if code == 0xB4 and dst == 0:
            assert imm in (0, 1)
            r0_set = True
        elif dst == 0:
            raise AssertionError(f"r0 written by something else at {pc}")
        if code in (0x55, 0x15, 0x5D):
            assert off > 0, "forward jumps only"
            todo.append((pc + 1 + off, r0_set))
        todo.append((pc + 1, r0_set))
    assert {pc for pc, _ in reached} == set(range(n)), "unreachable instructions"


def program_for(rules: list[DeviceRule]) -> bytes:
    return ebpf.encode(ebpf.assemble(device_target(rules)))


# ---------------------------------------------------------------------------- reference model


def v1_allows(state: DeviceState, dev_type: str, major: int, minor: int, access: int) -> bool:
    def matches(key: tuple[str, int, int]) -> bool:
        t, ma, mi = key
        return t == dev_type and ma in (-1, major) and mi in (-1, minor)

    def bits(s: str) -> int:
        return sum({"m": 1, "r": 2, "w": 4}[c] for c in s)

    if state.default_allow:
        return not any(matches(k) and bits(a) & access for k, a in state.exceptions.items())
    return any(matches(k) and access & ~bits(a) == 0 for k, a in state.exceptions.items())


RULE_SETS = {
    "deny-all": [DeviceRule(False)],
    "allow-all": [DeviceRule(True)],
    "nothing": [],
    "engine-default": device_cgroup_rules(Linux(resources=Resources(devices=[DeviceRule(False)]))),
    "deny-null-allow-zero": [DeviceRule(False), DeviceRule(True, "c", 1, 5, "rwm")],
    "read-only-null": [DeviceRule(False), DeviceRule(True, "c", 1, 3, "r")],
    "allow-all-but-write-null": [DeviceRule(True), DeviceRule(False, "c", 1, 3, "w")],
    "blacklist-wildcards": [DeviceRule(True, "a"), DeviceRule(False, "b", 8, None, "rw"),
                            DeviceRule(False, "c", None, 5, "m")],
    "split-access": [DeviceRule(False), DeviceRule(True, "c", 1, 3, "r"), DeviceRule(True, "c", 1, 3, "w"),
                     DeviceRule(False, "c", 1, 3, "r"), DeviceRule(True, "b", None, None, "m")],
    "reset-in-the-middle": [DeviceRule(True, "c", 1, 3), DeviceRule(False, "a"), DeviceRule(True, "c", 1, 9, "rw")],
    "big-numbers": [DeviceRule(False), DeviceRule(True, "c", 4095, 1048575, "rwm"),
                    DeviceRule(True, "b", 259, 0x7FFFFFFF, "r")],
}


# ---------------------------------------------------------------------------- tests


def test_deny_all_is_prologue_then_return_0_byte_for_byte():
    program = program_for([DeviceRule(False)])
    if sys.byteorder == "little":
        assert program == bytes.fromhex(
            "6112000000000000"  # r2 = *(u32 *)(r1 + 0)
            "54020000ffff0000"  # w2 &= 0xffff
            "6113000000000000"  # r3 = *(u32 *)(r1 + 0)
            "7403000010000000"  # w3 >>= 16
            "6114040000000000"  # r4 = *(u32 *)(r1 + 4)
            "6115080000000000"  # r5 = *(u32 *)(r1 + 8)
            "b400000000000000"  # w0 = 0
            "9500000000000000")  # exit
    assert listing(program) == PROLOGUE + ["w0 = 0", "exit"]
    assert ebpf.decode(program) == raw(program)


def test_allow_all_returns_1():
    assert listing(program_for([DeviceRule(True)])) == PROLOGUE + ["w0 = 1", "exit"]
    assert listing(program_for([])) == PROLOGUE + ["w0 = 1", "exit"]  # pyrunc starts allow-all


def test_allowances_need_every_requested_bit():
    program = program_for([DeviceRule(False), DeviceRule(True, "c", 1, 3, "r"), DeviceRule(True, "c", 1, 5, "rwm")])
    assert listing(program) == PROLOGUE + [
        "if r2 != 2 goto 14",     # 6: c 1:3 r
        "w1 = w3",
        "w1 &= 2",
        "if r1 != r3 goto 14",    # requested access not within "r": not this rule
        "if r4 != 1 goto 14",
        "if r5 != 3 goto 14",
        "w0 = 1",
        "exit",
        "if r2 != 2 goto 19",     # 14: c 1:5 rwm, no access test
        "if r4 != 1 goto 19",
        "if r5 != 5 goto 19",
        "w0 = 1",
        "exit",
        "w0 = 0",                 # 19: default deny
        "exit",
    ]


def test_denials_apply_on_any_requested_bit_and_wildcards_skip_the_test():
    program = program_for([DeviceRule(True), DeviceRule(False, "c", 1, 3, "w"), DeviceRule(False, "b", None, None, "m")])
    assert listing(program) == PROLOGUE + [
        "if r2 != 1 goto 12",     # 6: b *:* m
        "w1 = w3",
        "w1 &= 1",
        "if r1 == 0 goto 12",     # no mknod requested: not this rule
        "w0 = 0",
        "exit",
        "if r2 != 2 goto 20",     # 12: c 1:3 w
        "w1 = w3",
        "w1 &= 4",
        "if r1 == 0 goto 20",
        "if r4 != 1 goto 20",
        "if r5 != 3 goto 20",
        "w0 = 0",
        "exit",
        "w0 = 1",                 # 20: default allow
        "exit",
    ]


def test_engine_default_rules():
    """deny all, then runc's allowed devices (what pyrunc's container layer sends)."""
    program = program_for(RULE_SETS["engine-default"])
    text = listing(program)
    assert text[-2:] == ["w0 = 0", "exit"]
    assert text.count("exit") == 1 + 10  # b *:* m, c *:* m, 6 defaults, c 5:2, c 136:*
    blocks = "\n".join(text[len(PROLOGUE):]).split("exit\n")
    # c 136:* rwm: type and major only
    assert any(b.startswith("if r2 != 2") and "if r4 != 136" in b and "r5" not in b for b in blocks)
    assert any(b.startswith("if r2 != 2") and "w1 &= 1" in b and "r4" not in b for b in blocks)  # c *:* m
    assert any(b.startswith("if r2 != 1") and "w1 &= 1" in b and "r4" not in b for b in blocks)  # b *:* m
    check_verifiable(program)
    for dev_type, major, minor, access, want in [
        (2, 1, 3, 6, 1), (2, 1, 3, 1, 1), (2, 5, 2, 6, 1), (2, 136, 7, 6, 1),
        (2, 1, 4, 2, 0), (2, 1, 4, 1, 1), (1, 8, 0, 2, 0), (1, 8, 0, 1, 1), (1, 8, 0, 3, 0),
        (2, 10, 200, 6, 0),
    ]:
        assert run(program, dev_type, major, minor, access) == want, (dev_type, major, minor, access)


@pytest.mark.parametrize("name", sorted(RULE_SETS))
def test_programs_agree_with_the_v1_model(name):
    rules = RULE_SETS[name]
    state = device_target(rules)
    program = ebpf.encode(ebpf.assemble(state))
    check_verifiable(program)
    majors = {0, 1, 4, 5, 8, 136, 259, 4095}
    minors = {0, 1, 3, 5, 9, 1048575, 0x7FFFFFFF}
    for rule in rules:
        majors.add(rule.major or 0)
        minors.add(rule.minor or 0)
    for (t_name, t), major, minor, access in itertools.product(
            (("b", 1), ("c", 2)), sorted(majors), sorted(minors), range(1, 8)):
        want = v1_allows(state, t_name, major, minor, access)
        got = run(program, t, major, minor, access)
        assert got == int(want), (name, t_name, major, minor, access)


def test_big_numbers_and_errors():
    state = DeviceState(False, {("c", 0x80000000, -1): "rwm"})
    insns = ebpf.assemble(state)
    assert (ebpf.OP_JNE_IMM, 4, 0, 2, -(1 << 31)) in insns  # imm is an s32
    with pytest.raises(CgroupError, match="invalid major"):
        ebpf.assemble(DeviceState(False, {("c", 1 << 32, -1): "rwm"}))
    with pytest.raises(CgroupError, match="invalid device type 'a'"):
        ebpf.assemble(DeviceState(False, {("a", -1, -1): "rwm"}))
    with pytest.raises(CgroupError, match="unknown device access 'x'"):
        ebpf.assemble(DeviceState(False, {("c", 1, 1): "rx"}))


def test_encoding_layout():
    one = ebpf.encode([(0x5D, 1, 3, 7, 0), (0xB4, 0, 0, 0, -1)])
    assert len(one) == 16
    if sys.byteorder == "little":
        assert one == bytes.fromhex("5d31070000000000" "b4000000ffffffff")
    assert ebpf.decode(one) == [(0x5D, 1, 3, 7, 0), (0xB4, 0, 0, 0, -1)]


# ---------------------------------------------------------------------------- V2Manager wiring


class Recorder(V2Manager):
    def __init__(self, skip_devices: bool = False) -> None:
        super().__init__("/sys/fs/cgroup/nowhere/ct", "/sys/fs/cgroup", skip_devices)
        self.device_states: list[DeviceState] = []

    def _apply_devices(self, state: DeviceState) -> None:
        self.device_states.append(state)


def test_v2_apply_hands_the_rules_to_the_device_filter():
    mgr = Recorder()
    mgr.apply(Resources(devices=[DeviceRule(False), DeviceRule(True, "c", 1, 3, "rwm")]))
    assert mgr.device_states == [DeviceState(False, {("c", 1, 3): "rwm"})]
    mgr.apply(Resources(devices=[DeviceRule(True)]))  # allow-all too: it detaches our old filter
    assert mgr.device_states[-1] == DeviceState(True, {})
    mgr.apply(Resources(devices=[]))  # no rules: the filter stays as it is
    mgr.apply(Resources())
    assert len(mgr.device_states) == 2


def test_v2_apply_skip_devices_leaves_the_filter_alone():
    mgr = Recorder(skip_devices=True)
    mgr.apply(Resources(devices=[DeviceRule(False)]))
    mgr.apply(Resources(devices=[DeviceRule(False, "x")]))  # not even checked (runc's SkipDevices)
    assert mgr.device_states == []


def test_v2_apply_lists_every_problem_before_touching_anything():
    mgr = Recorder()
    with pytest.raises(CgroupError) as info:
        mgr.apply(Resources(devices=[DeviceRule(False), DeviceRule(True, "x", 1, 3)],
                            memory=Memory(swappiness=10)))
    lines = str(info.value).splitlines()
    assert lines[0].startswith("linux.resources.memory.swappiness: cgroup v2 has no per-cgroup swappiness")
    assert lines[1] == "linux.resources.devices[1].type: 'x' is not a cgroup device type (a, b or c)"
    with pytest.raises(CgroupError, match=r"devices\[0\]\.access: 'rwx' must be"):
        mgr.apply(Resources(devices=[DeviceRule(False, "c", 1, 3, "rwx")]))
    assert mgr.device_states == []


def test_importing_the_v2_backend_does_not_import_ctypes():
    import subprocess

    code = ("import sys; import pyrunc.cgroups.v2, pyrunc.cgroups.ebpf; "
            "print('ctypes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
