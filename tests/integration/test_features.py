"""`pyrunc features`: the runtime-spec Features structure, valid and honest.

Valid: it passes pyrunc's own features schema and jsonschema's reading of it.  Honest: what
it lists is what pyrunc accepts (every mount option parses, every namespace can be made,
every capability name is taken, every seccomp action compiles), and what it marks disabled
is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from referencing import Registry
from referencing.jsonschema import DRAFT4

from conftest import REPO, edit_config, needs_root, new_id
from pyrunc.config import Config
from pyrunc.init.rootfs import MountOptions
from pyrunc.schema import validate_features

pytestmark = needs_root


@pytest.fixture(scope="module")
def feats() -> dict:
    import subprocess
    from conftest import PYRUNC
    out = subprocess.run([PYRUNC, "features"], capture_output=True, text=True, check=True).stdout
    assert out.startswith('{\n    "ociVersionMin": "1.0.0",\n')  # runc's indentation: four spaces
    return json.loads(out)  # type: ignore[no-any-return]


def test_valid_against_the_features_schema(feats: dict) -> None:
    assert validate_features(feats) == []
    store = {p.name: json.loads(p.read_text()) for p in (REPO / "spec").glob("*.json")}
    registry = Registry().with_resources((name, DRAFT4.create_resource(doc)) for name, doc in store.items())
    jsonschema.Draft4Validator(store["features-schema.json"], registry=registry).validate(feats)
    assert feats["ociVersionMax"] == "1.3.0"


def test_broken_features_are_caught_by_the_schema(feats: dict) -> None:
    bad = json.loads(json.dumps(feats))
    bad["linux"]["namespaces"].append("bogus")
    del bad["ociVersionMin"]
    paths = {e.path for e in validate_features(bad)}
    assert "linux.namespaces[8]" in paths and "" in paths, paths


def test_every_mount_option_is_understood(feats: dict) -> None:
    for option in feats["mountOptions"]:
        assert MountOptions([option]).data == "", f"{option} would go to the file system as data"
    assert {"rro", "idmap", "ridmap", "rbind", "tmpcopyup"} <= set(feats["mountOptions"])


def test_every_listed_namespace_and_capability_is_accepted(pyrunc, make_bundle, feats: dict) -> None:
    lx = feats["linux"]
    assert lx["mountExtensions"]["idmap"]["enabled"] is True and "user" in lx["namespaces"]  # CRI's userns test
    bundle = make_bundle(["sh", "-c", "ls /proc/self/ns | tr '\\n' ' '"], userns=True)

    def everything(c: dict) -> None:
        c["linux"]["namespaces"] = [{"type": t} for t in lx["namespaces"]]
        c["process"]["capabilities"] = {k: list(lx["capabilities"]) for k in ("bounding", "permitted", "effective")}
    edit_config(bundle, everything)
    Config.from_dict(json.loads((bundle / "config.json").read_text()))
    p = pyrunc("run", "-b", str(bundle), new_id())
    for ns in ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"):
        assert ns in p.stdout.split(), p.stdout


def test_seccomp_tables_are_the_compilers(feats: dict) -> None:
    from pyrunc import seccomp
    sc = feats["linux"]["seccomp"]
    assert sc["enabled"] is True
    for action in sc["actions"]:
        rule: dict = {"names": ["getcwd"], "action": action}
        if action in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
            rule["errnoRet"] = 1
        profile = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule], "listenerPath": "/run/agent.sock"}
        assert seccomp.check(profile) == [], action
    assert set(sc["supportedFlags"]) <= set(sc["knownFlags"])
    assert "SECCOMP_FILTER_FLAG_LOG" in sc["supportedFlags"]  # kernel 4.14+


def test_what_is_marked_disabled_is_refused(pyrunc, make_bundle, feats: dict) -> None:
    lx = feats["linux"]
    assert lx["intelRdt"]["enabled"] is False and lx["netDevices"]["enabled"] is True  # test_network.py
    assert lx["cgroup"]["systemd"] is False
    for field, value in (("intelRdt", {"closID": "x"}),):
        bundle = make_bundle(["true"])
        edit_config(bundle, lambda c, f=field, v=value: c["linux"].update({f: v}))
        p = pyrunc("run", "-b", str(bundle), new_id(), check=False)
        assert p.returncode != 0 and f"linux.{field}" in p.stderr, p.stderr
    p = pyrunc("--systemd-cgroup", "run", "-b", str(make_bundle(["true"])), new_id(), check=False)
    assert p.returncode != 0 and "systemd" in p.stderr


def test_features_takes_no_arguments(pyrunc) -> None:
    p = pyrunc("features", "extra", check=False)
    assert p.returncode != 0 and 'requires exactly 0 argument(s)' in p.stderr


def test_hooks_listed_are_the_configs(feats: dict) -> None:
    schema = json.loads((Path(REPO) / "spec" / "defs.json").read_text())
    hooks = schema["definitions"]["Hooks"]["properties"]
    assert sorted(feats["hooks"]) == sorted(hooks)
