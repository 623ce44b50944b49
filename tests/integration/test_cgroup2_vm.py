"""On a host that is not pure cgroup v2, run every test marked ``cgroup2`` inside cgroup2-vm.

cgroup2-vm (``<repo>/../shared/tools/cgroup2-vm``) boots a throwaway QEMU guest whose
/sys/fs/cgroup is a pure cgroup v2 hierarchy, with the host's files visible and the
repository shared read-write.  One boot serves every marked test (cgroups package,
device filter, containers with limits), because a boot costs 5 to 25 seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from pyrunc.cgroups import detect_layout

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.normpath(os.path.join(REPO, "..", "shared", "tools", "cgroup2-vm"))


def test_cgroup2_suite_in_vm() -> None:
    layout = detect_layout()
    if layout == "v2":
        pytest.skip("this host is pure cgroup v2: the cgroup2 tests run directly")
    if os.environ.get("PYRUNC_IN_CGROUP2_VM"):
        pytest.skip("already inside cgroup2-vm")
    if os.geteuid() != 0:
        pytest.skip("cgroup2-vm needs root")
    if not os.access(TOOL, os.X_OK):
        pytest.skip(f"not a cgroup v2 host ({layout}) and no cgroup2-vm tool at {TOOL}: cgroup v2 untested")
    env = dict(os.environ, PYRUNC_IN_CGROUP2_VM="1", CGROUP2_VM_TIMEOUT="840")
    cmd = [TOOL, sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-m", "cgroup2", "tests"]
    started = time.monotonic()
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    took = time.monotonic() - started
    out = r.stdout + r.stderr
    print(f"cgroup2-vm run took {took:.1f} s\n{out}")
    assert r.returncode == 0, f"cgroup2 tests failed in cgroup2-vm (rc {r.returncode}, {took:.0f} s):\n{out}"
    summary = [line for line in out.strip().splitlines() if re.search(r"\b\d+ passed\b", line)]
    assert summary, out
    assert " failed" not in summary[-1] and " error" not in summary[-1], summary[-1]
