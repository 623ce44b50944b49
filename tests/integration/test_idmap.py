"""Idmapped bind mounts (``idmap``/``ridmap``), made by the runtime and moved in by the init."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import build_userns_rootfs, edit_config, needs_root, new_id

pytestmark = needs_root


@pytest.fixture
def userns_rootfs(workdir: Path) -> Path:
    """A rootfs owned by the mapped range 100000.. so that root in the user namespace owns it."""
    path = workdir / f"userns-rootfs-{os.getpid()}"
    if not path.exists():
        build_userns_rootfs(path)
    return path


@pytest.fixture
def host_dir(workdir: Path) -> Path:
    d = workdir / f"idmap-src-{new_id()}"
    d.mkdir()
    d.chmod(0o755)
    (d / "file").write_text("owned by host root\n")
    (d / "sub").mkdir()
    yield d
    shutil.rmtree(d)


def userns_bundle(make_bundle, rootfs: Path, script: str, mounts: list[dict]) -> Path:  # type: ignore[no-untyped-def]
    bundle = make_bundle(["sh", "-c", script])

    def edit(c: dict) -> None:
        c["root"]["path"] = str(rootfs)
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["mounts"] += mounts
    edit_config(bundle, edit)
    return bundle


def test_idmap_uses_the_containers_user_namespace(pyrunc, make_bundle, userns_rootfs, host_dir) -> None:
    bundle = userns_bundle(make_bundle, userns_rootfs, "stat -c %u:%g /plain/file /mapped/file", [
        {"destination": "/plain", "type": "bind", "source": str(host_dir), "options": ["bind"]},
        {"destination": "/mapped", "type": "bind", "source": str(host_dir), "options": ["bind", "idmap"]},
    ])
    out = pyrunc("run", "-b", str(bundle), new_id()).stdout.split()
    # without idmap, host root's file is unmapped in the container (nobody); with it, it is root's
    assert out == ["65534:65534", "0:0"]


def test_mount_with_its_own_mappings_and_ridmap(pyrunc, make_bundle, userns_rootfs, host_dir) -> None:
    maps = [{"containerID": 0, "hostID": 100000 + 1000, "size": 1}]
    bundle = userns_bundle(make_bundle, userns_rootfs, "stat -c %u /m/file; echo x > /m/new 2>&1; echo rc=$?", [
        {"destination": "/m", "type": "bind", "source": str(host_dir), "options": ["rbind", "ridmap", "ro"],
         "uidMappings": maps, "gidMappings": maps},
    ])
    out = pyrunc("run", "-b", str(bundle), new_id()).stdout
    # on-disk uid 0 shows as host uid 101000, which is uid 1000 in the container; ro still applies
    assert out.splitlines()[0] == "1000"
    assert "rc=1" in out
    assert not (host_dir / "new").exists()


def test_idmap_without_user_namespace_or_mappings_is_refused(pyrunc, make_bundle, host_dir) -> None:
    bundle = make_bundle(["true"])
    edit_config(bundle, lambda c: c["mounts"].append(
        {"destination": "/m", "type": "bind", "source": str(host_dir), "options": ["bind", "idmap"]}))
    p = pyrunc("run", "-b", str(bundle), new_id(), check=False)
    assert p.returncode == 1
    assert "mounts[7]: an idmap mount needs its own uidMappings/gidMappings" in p.stderr
