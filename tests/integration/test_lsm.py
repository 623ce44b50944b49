"""AppArmor and SELinux: applied where the host has them, refused clearly where it has not.

This machine's kernel runs neither (CONFIG_LSM lists apparmor, but it is not built in, and
SELinux is not enabled), so here the refusals are what runs; on a host with AppArmor the
first test checks that the profile really is the process's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import edit_config, needs_root, new_id
from pyrunc.lsm import apparmor_enabled, selinux_enabled, with_mount_label

pytestmark = needs_root


def test_apparmor_profile(pyrunc, make_bundle) -> None:
    bundle = make_bundle(["cat", "/proc/self/attr/current"])
    edit_config(bundle, lambda c: c["process"].update(apparmorProfile="unconfined"))
    p = pyrunc("run", "-b", str(bundle), new_id(), check=False)
    if apparmor_enabled():
        assert p.returncode == 0 and p.stdout.strip() == "unconfined", p.stderr
    else:
        assert p.returncode == 1
        assert "process.apparmorProfile: apparmor: config provided but apparmor not supported" in p.stderr
        assert pyrunc.ids() == []


@pytest.mark.parametrize("field,edit", [
    ("process.selinuxLabel", lambda c: c["process"].update(selinuxLabel="system_u:system_r:container_t:s0")),
    ("linux.mountLabel", lambda c: c["linux"].update(mountLabel="system_u:object_r:container_file_t:s0")),
])
def test_selinux_labels_without_selinux(pyrunc, make_bundle, field: str, edit) -> None:  # type: ignore[no-untyped-def]
    if selinux_enabled():
        pytest.skip("SELinux is enabled here: labels are applied, not refused")
    bundle = make_bundle(["true"])
    edit_config(bundle, edit)
    p = pyrunc("run", "-b", str(bundle), new_id(), check=False)
    assert p.returncode == 1
    assert f"{field}: selinux label is specified in config, but selinux is disabled or not supported" in p.stderr
    assert pyrunc.ids() == []


def test_exec_label_flags_without_the_lsm(pyrunc, make_bundle, tmp_path: Path) -> None:
    if apparmor_enabled() or selinux_enabled():
        pytest.skip("this host has an LSM")
    bundle = make_bundle(["sleep", "300"])
    cid = new_id()
    pyrunc("run", "-d", "-b", str(bundle), cid)
    pid = pyrunc.state(cid)["pid"]
    for flags, words in ((["--apparmor", "unconfined"], "apparmor: config provided but apparmor not supported"),
                         (["--process-label", "system_u:system_r:container_t:s0"],
                          "selinux label is specified in config, but selinux is disabled")):
        p = pyrunc("exec", *flags, cid, "true", check=False)
        assert p.returncode == 255 and words in p.stderr, p.stderr
    proc = tmp_path / "p.json"
    proc.write_text('{"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "apparmorProfile": "x"}')
    p = pyrunc("exec", "--process", str(proc), cid, check=False)
    assert p.returncode == 255 and "process.apparmorProfile" in p.stderr
    assert Path(f"/proc/{pid}/task/{pid}/children").read_text().split() == []


def test_mount_label_option() -> None:
    assert with_mount_label("", "") == ""
    assert with_mount_label("mode=755", "") == "mode=755"
    assert with_mount_label("mode=755", "system_u:object_r:c_t:s0") == 'mode=755,context="system_u:object_r:c_t:s0"'
    assert with_mount_label("", "l") == 'context="l"'
