"""pyrunc.config: the semantic rules (``check_semantics``), ``validate`` / ``parse`` /
``load_bundle`` around them, and the records ``Config.from_dict`` builds.  No root needed."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest

from pyrunc import config as C
from pyrunc.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("mkbundle", REPO / "hack" / "mkbundle.py")
assert _spec is not None and _spec.loader is not None
mkbundle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mkbundle)


def good() -> dict:
    return copy.deepcopy(mkbundle.default_config(["sh"]))


def problems(edit) -> list[str]:  # type: ignore[no-untyped-def]
    doc = good()
    edit(doc)
    return C.check_semantics(doc)


def drop_ns(doc: dict, *types: str) -> None:
    doc["linux"]["namespaces"] = [n for n in doc["linux"]["namespaces"] if n["type"] not in types]


def ns(doc: dict, t: str) -> dict:
    return next(n for n in doc["linux"]["namespaces"] if n["type"] == t)


# ---------------------------------------------------------------------------- good configs


def test_default_configs_are_valid() -> None:
    assert C.validate(good()) == []
    assert C.validate(mkbundle.default_config(["sh"], userns=True)) == []
    from pyrunc.spec_default import default_spec, rootless_spec
    assert C.validate(default_spec()) == []
    assert C.validate(rootless_spec()) == []


# ---------------------------------------------------------------------------- namespaces


def test_duplicate_namespace() -> None:
    assert problems(lambda d: d["linux"]["namespaces"].append({"type": "ipc", "path": "/proc/1/ns/ipc"})) == [
        'linux.namespaces[6].type: namespace "ipc" is listed more than once']


def test_namespace_path_must_be_absolute() -> None:
    assert problems(lambda d: ns(d, "network").update(path="proc/1/ns/net")) == [
        "linux.namespaces[1].path: must be an absolute path"]


def test_new_user_namespace_needs_both_mappings() -> None:
    assert problems(lambda d: d["linux"]["namespaces"].append({"type": "user"})) == [
        "linux.uidMappings: required when a new user namespace is created",
        "linux.gidMappings: required when a new user namespace is created"]


def test_joined_user_namespace_needs_no_mappings() -> None:
    assert problems(lambda d: d["linux"]["namespaces"].append({"type": "user", "path": "/proc/1/ns/user"})) == []


def test_mappings_without_user_namespace() -> None:
    def edit(d: dict) -> None:
        d["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1}]
    assert problems(edit) == ["linux.uidMappings: mappings are set but linux.namespaces has no user namespace"]


@pytest.mark.parametrize("time_ns,ok", [(None, False), ({"type": "time"}, True),
                                         ({"type": "time", "path": "/proc/1/ns/time"}, False)])
def test_time_offsets_need_a_new_time_namespace(time_ns: dict | None, ok: bool) -> None:
    def edit(d: dict) -> None:
        d["linux"]["timeOffsets"] = {"boottime": {"secs": 5}}
        if time_ns:
            d["linux"]["namespaces"].append(time_ns)
    assert problems(edit) == ([] if ok else ["linux.timeOffsets: needs a new time namespace in linux.namespaces"])


def test_time_offset_clocks_and_nanosecs() -> None:
    def edit(d: dict) -> None:
        d["linux"]["namespaces"].append({"type": "time"})
        d["linux"]["timeOffsets"] = {"realtime": {"secs": 1}, "boottime": {"nanosecs": 1_000_000_000},
                                     "monotonic": {"secs": -5, "nanosecs": 999_999_999}}
    assert problems(edit) == [
        "linux.timeOffsets.realtime: the kernel can only offset monotonic and boottime",
        "linux.timeOffsets.boottime.nanosecs: must be below 1000000000"]


@pytest.mark.parametrize("field", ["hostname", "domainname"])
def test_hostname_and_domainname_need_uts(field: str) -> None:
    assert problems(lambda d: (drop_ns(d, "uts"), d.pop("hostname"), d.update({field: "x"}))) == [
        f"{field}: cannot be set without a private UTS namespace"]
    # a joined UTS namespace is private enough (runc agrees)
    assert problems(lambda d: (ns(d, "uts").update(path="/proc/1/ns/uts"), d.update({field: "x"}))) == []


# ---------------------------------------------------------------------------- sysctl


@pytest.mark.parametrize("key,needs", [
    ("net.ipv4.ip_forward", "network"), ("net/ipv4/ip_forward", "network"), ("net.core.somaxconn", "network"),
    ("kernel.shmmax", "ipc"), ("kernel.msgmnb", "ipc"), ("kernel.sem", "ipc"), ("kernel.shm_rmid_forced", "ipc"),
    ("fs.mqueue.queues_max", "ipc"), ("kernel.hostname", "uts"), ("kernel.domainname", "uts"),
])
def test_namespaced_sysctls(key: str, needs: str) -> None:
    assert problems(lambda d: d["linux"].update(sysctl={key: "1"})) == []
    label = {"network": "network", "ipc": "IPC", "uts": "UTS"}[needs]
    got = problems(lambda d: (drop_ns(d, needs), d.pop("hostname") if needs == "uts" else None,
                              d["linux"].update(sysctl={key: "1"})))
    assert got == [f"linux.sysctl.{key}: needs a private {label} namespace"]
    # joining a namespace of that type is private as well
    assert problems(lambda d: (ns(d, needs).update(path="/proc/1/ns/x"), d["linux"].update(sysctl={key: "1"}))) == []


def test_namespaced_settings_refused_in_the_runtimes_own_namespaces() -> None:
    def edit(d: dict) -> None:
        for t, name in (("network", "net"), ("ipc", "ipc"), ("uts", "uts")):
            ns(d, t).update(path=f"/proc/self/ns/{name}")  # what pyrunc itself runs in: the host's
        d["linux"]["sysctl"] = {"net.core.somaxconn": "1", "kernel.shmmax": "1", "kernel.domainname": "x"}
    assert problems(edit) == [
        "hostname: cannot be set in the host's UTS namespace (the one linux.namespaces joins)",
        "linux.sysctl.net.core.somaxconn: not allowed in the host's network namespace (the one linux.namespaces joins)",
        "linux.sysctl.kernel.shmmax: not allowed in the host's IPC namespace (the one linux.namespaces joins)",
        "linux.sysctl.kernel.domainname: not allowed in the host's UTS namespace (the one linux.namespaces joins)"]


@pytest.mark.parametrize("key", ["vm.swappiness", "kernel.pid_max", "fs.file-max", "kernel.shmmaxx"])
def test_non_namespaced_sysctls(key: str) -> None:
    assert problems(lambda d: d["linux"].update(sysctl={key: "1"})) == [
        f"linux.sysctl.{key}: is not namespaced: setting it would change the host"]


# ---------------------------------------------------------------------------- mounts, devices, paths


def test_mount_rules() -> None:
    def edit(d: dict) -> None:
        d["mounts"] += [
            # a relative destination is relative to "/" (config.md): "dev" is /dev
            {"destination": "dev", "type": "bind", "source": "/dev", "options": ["rbind"]},
            {"destination": "/dev", "type": "bind", "source": "/dev/", "options": ["rbind"]},
            {"destination": "/dev", "source": "/dev", "options": ["bind"]},
            {"destination": "/data", "type": "bind", "source": "/srv",
             "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]},
            {"destination": "/ok", "type": "bind", "source": "/srv", "options": ["ridmap"],
             "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]},
        ]
    got = problems(edit)
    assert got[0].startswith("mounts[7]: bind-mounting the host's /dev")
    assert got[1].startswith("mounts[8]: bind-mounting the host's /dev")
    assert got[2].startswith("mounts[9]: bind-mounting the host's /dev")
    assert got[3] == "mounts[10]: uidMappings/gidMappings need the idmap or ridmap option"
    assert len(got) == 4


def test_device_rules() -> None:
    def edit(d: dict) -> None:
        d["linux"]["devices"] = [
            {"type": "c", "path": "/dev/fuse", "major": 10, "minor": 229},
            {"type": "c", "path": "/dev/../etc/x", "major": 1, "minor": 3},
            {"type": "b", "path": "/dev/sda"},
            {"type": "p", "path": "/dev/fifo"},
        ]
    assert problems(edit) == [
        "linux.devices[1].path: must be under /dev, got '/dev/../etc/x'",
        "linux.devices[2]: major and minor are required for type 'b'"]


def test_masked_and_readonly_paths_must_be_absolute() -> None:
    assert problems(lambda d: (d["linux"]["maskedPaths"].append("proc/kcore"),
                               d["linux"]["readonlyPaths"].insert(0, "sys"))) == [
        "linux.maskedPaths[11]: must be an absolute path, got 'proc/kcore'",
        "linux.readonlyPaths[0]: must be an absolute path, got 'sys'"]


# ---------------------------------------------------------------------------- process


def test_process_args_cwd_and_env() -> None:
    def edit(d: dict) -> None:
        d["process"]["args"] = ["sh", "a\0b"]
        d["process"]["cwd"] = "home"
        d["process"]["env"] += ["NOEQUALS", "=value", "OK=", "K=v\0"]
    assert problems(edit) == [
        "process.args[1]: must not contain a NUL byte",
        "process.cwd: must be an absolute path, got 'home'",
        'process.env[2]: invalid environment variable "NOEQUALS": no "="',
        "process.env[3]: environment variable name can't be empty: \"=value\"",
        "process.env[5]: must not contain a NUL byte"]
    assert problems(lambda d: d["process"].update(args=[])) == ["process.args: must not be empty"]


@pytest.mark.parametrize("value,ok", [(-1000, True), (1000, True), (0, True), (-1001, False), (1001, False)])
def test_oom_score_adj_range(value: int, ok: bool) -> None:
    got = problems(lambda d: d["process"].update(oomScoreAdj=value))
    assert got == ([] if ok else [f"process.oomScoreAdj: {value} is outside the kernel's range [-1000, 1000]"])


def test_capability_rules() -> None:
    def edit(d: dict) -> None:
        d["process"]["capabilities"] = {
            "bounding": ["CAP_KILL", "CAP_CHOWN", "CAP_BOGUS"],
            "permitted": ["CAP_KILL"],
            "effective": ["CAP_KILL", "CAP_CHOWN"],       # CHOWN not permitted
            "inheritable": ["CAP_KILL", "CAP_SYS_ADMIN"],  # SYS_ADMIN not in bounding
            "ambient": ["CAP_CHOWN"],                     # not inheritable: only a warning at run time
        }
    assert problems(edit) == [
        'process.capabilities.bounding[2]: unknown capability "CAP_BOGUS"',
        "process.capabilities.effective[1]: CAP_CHOWN is not in the permitted set",
        "process.capabilities.inheritable[1]: CAP_SYS_ADMIN is not in the bounding set"]


def test_capabilities_may_be_absent_or_empty() -> None:
    assert problems(lambda d: d["process"].pop("capabilities")) == []
    assert problems(lambda d: d["process"].update(capabilities={})) == []


def test_rlimit_rules() -> None:
    def edit(d: dict) -> None:
        d["process"]["rlimits"] = [
            {"type": "RLIMIT_NOFILE", "soft": 10, "hard": 10},
            {"type": "RLIMIT_CORE", "soft": 5, "hard": 4},
            {"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1},
        ]
    assert problems(edit) == [
        "process.rlimits[1]: soft limit 5 is above hard limit 4",
        "process.rlimits[2].type: RLIMIT_NOFILE is listed more than once"]


def test_no_process_is_fine_for_semantics() -> None:
    assert problems(lambda d: d.pop("process")) == []


def test_every_problem_is_reported_at_once() -> None:
    def edit(d: dict) -> None:
        d["linux"]["namespaces"].append({"type": "pid"})
        d["linux"]["sysctl"] = {"vm.swappiness": "1"}
        d["process"]["rlimits"].append({"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1})
        d["process"]["cwd"] = "x"
    assert len(problems(edit)) == 4


# ---------------------------------------------------------------------------- validate / parse / load_bundle


def test_validate_reports_schema_errors_and_skips_semantics_then() -> None:
    doc = good()
    doc["process"]["cwd"] = 5
    doc["linux"]["sysctl"] = {"vm.swappiness": "1"}  # semantic: not reported while the shape is wrong
    assert C.validate(doc) == ['process.cwd: 5 is not of type "string"']


def test_validate_runs_semantics_on_a_well_shaped_doc() -> None:
    doc = good()
    doc["linux"]["sysctl"] = {"vm.swappiness": "1"}
    assert C.validate(doc) == ["linux.sysctl.vm.swappiness: is not namespaced: setting it would change the host"]


@pytest.mark.parametrize("doc", [[], "config", 3, None])
def test_validate_of_a_non_object(doc: object) -> None:
    got = C.validate(doc)
    assert got and all("is not of type" in p for p in got)


def test_parse_raises_config_error_listing_everything() -> None:
    doc = good()
    doc["linux"]["namespaces"].append({"type": "foo"})
    doc["ociVersion"] = 1
    with pytest.raises(ConfigError) as e:
        C.parse(json.dumps(doc))
    assert sorted(e.value.problems) == sorted([
        "ociVersion: 1 is not of type \"string\"",
        'linux.namespaces[6].type: "foo" is not one of ["cgroup", "ipc", "mount", "network", "pid", "time", '
        '"user", "uts"]'])
    assert all(line.startswith("config.json: ") for line in str(e.value).splitlines())


@pytest.mark.parametrize("raw", [b"", b"{", b"[1,]", b"\xff\xfe"])
def test_parse_of_invalid_json(raw: bytes) -> None:
    with pytest.raises(ConfigError) as e:
        C.parse(raw)
    assert str(e.value).startswith("config.json: invalid JSON")


def test_load_bundle(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"no such file: {tmp_path}/config.json"):
        C.load_bundle(str(tmp_path))
    mkbundle.write_config(tmp_path, good())
    doc, cfg = C.load_bundle(str(tmp_path))
    assert doc == good() and isinstance(cfg, C.Config)


# ---------------------------------------------------------------------------- Config.from_dict


def test_from_dict_minimal_defaults() -> None:
    cfg = C.Config.from_dict({"ociVersion": "1.3.0", "process": {"args": ["sh"], "cwd": "/"}})
    assert cfg.root is None and cfg.mounts == [] and cfg.hostname == "" and cfg.annotations == {}
    p = cfg.process
    assert p.args == ["sh"] and p.cwd == "/" and p.env == [] and p.terminal is False
    assert p.user == C.User(0, 0, None, [])
    assert p.capabilities is None  # absent: the init leaves capabilities alone
    assert p.rlimits == [] and p.no_new_privileges is False and p.oom_score_adj is None
    assert cfg.hooks == C.Hooks()
    assert cfg.linux == C.Linux()
    assert not cfg.linux.is_private("pid") and cfg.linux.namespace("pid") is None


def test_from_dict_process() -> None:
    cfg = C.Config.from_dict({"ociVersion": "1.3.0", "process": {
        "args": ["a", "b"], "cwd": "/w", "env": ["A=1"], "terminal": True,
        "consoleSize": {"height": 24, "width": 80},
        "user": {"uid": 1000, "gid": 100, "umask": 18, "additionalGids": [5, 6]},
        "capabilities": {"bounding": ["CAP_KILL"], "ambient": ["CAP_KILL"]},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 20, "soft": 10}],
        "noNewPrivileges": True, "oomScoreAdj": -5}})
    p = cfg.process
    assert p.console_size == (24, 80)
    assert p.user == C.User(uid=1000, gid=100, umask=18, additional_gids=[5, 6])
    assert p.capabilities == C.Capabilities(bounding=["CAP_KILL"], ambient=["CAP_KILL"])
    assert p.rlimits == [C.Rlimit("RLIMIT_NOFILE", hard=20, soft=10)]
    assert p.no_new_privileges is True and p.oom_score_adj == -5
    empty = C.Config.from_dict({"ociVersion": "1.3.0", "process": {"args": ["a"], "capabilities": {}}})
    assert empty.process.capabilities == C.Capabilities()  # present but empty: drop everything


def test_from_dict_linux() -> None:
    cfg = C.Config.from_dict({"ociVersion": "1.3.0", "linux": {
        "namespaces": [{"type": "pid"}, {"type": "network", "path": "/proc/7/ns/net"}, {"type": "time"}],
        "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "timeOffsets": {"boottime": {"secs": 3}, "monotonic": {"nanosecs": 4}},
        "devices": [{"type": "c", "path": "/dev/fuse", "major": 10, "minor": 229, "fileMode": 0o666}],
        "sysctl": {"net.ipv4.ip_forward": "1"}, "cgroupsPath": "/x", "maskedPaths": ["/a"],
        "resources": {"memory": {"limit": 100}, "pids": {"limit": 5},
                      "devices": [{"allow": False, "access": "rwm"}]}}})
    lx = cfg.linux
    assert lx.creates("pid") and not lx.creates("network") and lx.is_private("network")
    assert not lx.is_private("user") and not lx.creates("user")
    assert lx.namespace("network") == C.Namespace("network", "/proc/7/ns/net")
    assert lx.uid_mappings == [C.IDMapping(0, 100000, 65536)] and lx.gid_mappings == []
    assert lx.time_offsets == {"boottime": (3, 0), "monotonic": (0, 4)}
    assert lx.devices == [C.Device("c", "/dev/fuse", 10, 229, 0o666, None, None)]
    assert lx.sysctl == {"net.ipv4.ip_forward": "1"} and lx.cgroups_path == "/x"
    assert lx.resources.memory.limit == 100 and lx.resources.pids.limit == 5
    assert lx.resources.devices == [C.DeviceRule(False, "a", None, None, "rwm")]


def test_from_dict_hooks_keep_env_absent_apart_from_empty() -> None:
    cfg = C.Config.from_dict({"ociVersion": "1.3.0", "hooks": {
        "prestart": [{"path": "/a"}],
        "poststop": [{"path": "/b", "args": ["b", "-x"], "env": [], "timeout": 3}],
        "createContainer": [{"path": "/c", "env": ["K=V"]}]}})
    assert cfg.hooks.prestart == [C.Hook("/a", [], None, None)]  # env absent: inherited
    assert cfg.hooks.poststop == [C.Hook("/b", ["b", "-x"], [], 3)]  # env empty: nothing at all
    assert cfg.hooks.create_container == [C.Hook("/c", [], ["K=V"], None)]
    assert cfg.hooks.create_runtime == [] and cfg.hooks.start_container == [] and cfg.hooks.poststart == []


def test_from_dict_mounts_root_and_annotations() -> None:
    cfg = C.Config.from_dict({"ociVersion": "1.3.0", "root": {"path": "rootfs"}, "hostname": "h",
                              "annotations": {"a": "b"},
                              "mounts": [{"destination": "/m", "type": "bind", "source": "/s",
                                          "options": ["rbind"], "gidMappings": [
                                              {"containerID": 0, "hostID": 5, "size": 1}]}]})
    assert cfg.root == C.Root("rootfs", False)
    assert cfg.mounts == [C.Mount("/m", "bind", "/s", ["rbind"], [], [C.IDMapping(0, 5, 1)])]
    assert cfg.hostname == "h" and cfg.annotations == {"a": "b"}


def test_device_cgroup_rules_always_allow_what_the_container_needs() -> None:
    lx = C.Config.from_dict({"ociVersion": "1.3.0", "linux": {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "devices": [{"type": "b", "path": "/dev/sdz", "major": 8, "minor": 0}]}}).linux
    rules = C.device_cgroup_rules(lx)
    assert rules[0] == C.DeviceRule(False, "a", None, None, "rwm")  # the config's own rules first
    assert C.DeviceRule(True, "c", 1, 3, "rwm") in rules  # /dev/null
    assert C.DeviceRule(True, "b", 8, 0, "rwm") in rules  # the listed device
