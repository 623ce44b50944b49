"""Test helpers for linux.seccomp (tests only, never runtime code).

- ``run_bpf``: a small classic-BPF interpreter for seccomp programs, to check what a compiled
  filter returns for a syscall without loading it;
- ``podman_profile``: podman's default seccomp profile (containers-common's
  /usr/share/containers/seccomp.json, in the engines' own format) resolved into an OCI
  ``linux.seccomp`` the way podman does for a default container on this machine;
- ``syscall_helper``: a static ``sys NR [ARG...]`` binary that makes one raw syscall and prints
  ``ret=R errno=E``, so that a test can aim at exactly the syscall and arguments a rule names.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import struct
import subprocess
from pathlib import Path

# ---------------------------------------------------------------------------- cBPF

AUDIT_ARCH = {"x86_64": 0xC000003E, "x86": 0x40000003, "x32": 0xC000003E}
X32_BIT = 0x40000000


def run_bpf(program: bytes, nr: int, arch: int = AUDIT_ARCH["x86_64"], args: tuple[int, ...] = (),
            ip: int = 0) -> int:
    """What a seccomp filter returns for ``struct seccomp_data {nr, arch, ip, args[6]}``."""
    a6 = (list(args) + [0] * 6)[:6]
    data = struct.pack("=iIQ6Q", nr, arch, ip, *a6)
    insns = [struct.unpack_from("=HBBI", program, off) for off in range(0, len(program), 8)]
    acc = x = 0
    mem = [0] * 16
    pc = 0
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        cls = code & 0x07
        if cls == 0x00:  # BPF_LD
            if code == 0x20:  # ld [k] (word, absolute)
                acc = struct.unpack_from("=I", data, k)[0]
            elif code == 0x00:  # ld #k
                acc = k
            elif code == 0x60:  # ld M[k]
                acc = mem[k]
            else:
                raise ValueError(f"unsupported ld {code:#x}")
        elif cls == 0x01:  # BPF_LDX
            if code == 0x01:
                x = k
            elif code == 0x61:
                x = mem[k]
            else:
                raise ValueError(f"unsupported ldx {code:#x}")
        elif cls == 0x02:  # st
            mem[k] = acc
        elif cls == 0x03:  # stx
            mem[k] = x
        elif cls == 0x04:  # BPF_ALU
            acc = _alu(code & 0xF0, acc, x if code & 0x08 else k)
        elif cls == 0x05:  # BPF_JMP
            op, src = code & 0xF0, (x if code & 0x08 else k)
            if op == 0x00:
                pc += k
                continue
            cond = {0x10: acc == src, 0x20: acc > src, 0x30: acc >= src, 0x40: bool(acc & src)}[op]
            pc += jt if cond else jf
        elif cls == 0x06:  # BPF_RET
            return k if (code & 0x18) == 0 else acc
        elif cls == 0x07:  # BPF_MISC
            if code == 0x07:
                x = acc
            else:
                acc = x
        else:
            raise ValueError(f"unsupported opcode {code:#x}")


def _alu(op: int, acc: int, src: int) -> int:
    if op == 0x00:
        out = acc + src
    elif op == 0x10:
        out = acc - src
    elif op == 0x20:
        out = acc * src
    elif op == 0x40:
        out = acc | src
    elif op == 0x50:
        out = acc & src
    elif op == 0x60:
        out = acc << src
    elif op == 0x70:
        out = acc >> src
    elif op == 0x80:
        out = -acc
    else:
        raise ValueError(f"unsupported alu op {op:#x}")
    return out & 0xFFFFFFFF


# ---------------------------------------------------------------------------- podman's default profile

CONTAINERS_SECCOMP = Path("/usr/share/containers/seccomp.json")
CONTAINERS_CONF = Path("/usr/share/containers/containers.conf")
# containers.conf's default_capabilities (podman 4.x), used when the file is not there
PODMAN_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_NET_BIND_SERVICE",
               "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT"]
GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}
SECCOMP_ARCH = {"amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64", "ppc64le": "SCMP_ARCH_PPC64LE",
                "s390x": "SCMP_ARCH_S390X", "riscv64": "SCMP_ARCH_RISCV64"}


def podman_caps() -> list[str]:
    """The capabilities of a default podman container (containers.conf's default_capabilities)."""
    try:
        text = CONTAINERS_CONF.read_text()
    except OSError:
        return list(PODMAN_CAPS)
    m = re.search(r"^default_capabilities\s*=\s*\[(.*?)\]", text, re.S | re.M)
    if not m:
        return list(PODMAN_CAPS)
    return ["CAP_" + c.upper() for c in re.findall(r'"([A-Za-z_]+)"', m.group(1))]


def _kernel_version() -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", platform.release())[:2])


def podman_profile(profile: dict, caps: list[str]) -> dict:
    """containers/common's pkg/seccomp setupSeccomp for this machine: the native arch and its
    sub-architectures, then every rule whose includes/excludes (arches, caps, minKernel) hold for
    a container whose bounding set is ``caps``."""
    goarch = GOARCH[platform.machine()]
    native = SECCOMP_ARCH[goarch]
    out: dict = {"defaultAction": profile["defaultAction"]}
    if profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    arches = []
    for entry in profile.get("archMap") or ():
        if entry["architecture"] == native:
            arches += [entry["architecture"], *(entry.get("subArchitectures") or ())]
    if arches:
        out["architectures"] = arches
    kernel = _kernel_version()

    def min_kernel(v: str | None) -> tuple[int, ...] | None:
        return None if not v else tuple(int(p) for p in v.split(".")[:2])

    syscalls = []
    for call in profile.get("syscalls") or ():
        inc, exc = call.get("includes") or {}, call.get("excludes") or {}
        if goarch in (exc.get("arches") or ()):
            continue
        if any(c in caps for c in exc.get("caps") or ()):
            continue
        mk = min_kernel(exc.get("minKernel"))
        if mk is not None and kernel >= mk:
            continue
        if inc.get("arches") and goarch not in inc["arches"]:
            continue
        if any(c not in caps for c in inc.get("caps") or ()):
            continue
        mk = min_kernel(inc.get("minKernel"))
        if mk is not None and kernel < mk:
            continue
        rule: dict = {"names": list(call.get("names") or ([call["name"]] if call.get("name") else [])),
                      "action": call["action"]}
        if call.get("args"):
            rule["args"] = [{"index": a["index"], "value": a["value"], "valueTwo": a.get("valueTwo", 0),
                             "op": a["op"]} for a in call["args"]]
        if call.get("errnoRet") is not None:
            rule["errnoRet"] = call["errnoRet"]
        syscalls.append(rule)
    out["syscalls"] = syscalls
    return out


# ---------------------------------------------------------------------------- the syscall helper

SYS_C = r"""
/* sys NR [ARG...]: make syscall NR with up to six integer arguments (strtoull, base 0), print
   "ret=R errno=E" (E is 0 on success).  pyrunc's seccomp tests aim it at one rule. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    unsigned long a[6] = {0};
    if (argc < 2 || argc > 8) { fprintf(stderr, "usage: sys NR [ARG...]\n"); return 2; }
    long nr = strtol(argv[1], NULL, 0);
    for (int i = 2; i < argc; i++) a[i - 2] = strtoull(argv[i], NULL, 0);
    errno = 0;
    long r = syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    printf("ret=%ld errno=%d\n", r, r == -1 ? errno : 0);
    return 0;
}
"""


def build_syscall_helper(directory: Path) -> Path | None:
    """``directory/sys``, a static binary (gcc -static), or None when there is no compiler."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    src = directory / "sys.c"
    src.write_text(SYS_C)
    out = directory / "sys"
    r = subprocess.run([gcc, "-static", "-O2", "-o", str(out), str(src)], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    os.chmod(out, 0o755)
    return out


def parse_sys(output: str) -> tuple[int, int]:
    """``ret=R errno=E`` -> (R, E)."""
    m = re.search(r"ret=(-?\d+) errno=(\d+)", output)
    assert m, f"no result from the syscall helper in {output!r}"
    return int(m.group(1)), int(m.group(2))
