"""Tests for spec/*.json (our OCI runtime-spec v1.3.0 schemas) and pyrunc.schema.

Every document is checked twice: with pyrunc.schema (the fast interpreter the
runtime uses) and with jsonschema.Draft4Validator (the reference), and the two
must agree on validity and on where the errors are.
"""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from referencing import Registry
from referencing.jsonschema import DRAFT4

from pyrunc import schema as S

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "spec"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "schema"
SCHEMA_FILES = sorted(SPEC.glob("*.json"))

GOOD_CONFIGS = sorted((FIXTURES / "good").glob("config-*.json"))
GOOD_STATES = sorted((FIXTURES / "good").glob("state-*.json"))

NAMESPACE_ENUM = ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"]


def _read(path: Path):
    return json.loads(path.read_text())


# --------------------------------------------------------------------------
# reference validator and helpers


def _registry() -> Registry:
    return Registry().with_resources(
        (p.name, DRAFT4.create_resource(_read(p))) for p in SCHEMA_FILES
    )


_REGISTRY = None
_VALIDATORS: dict[str, jsonschema.Draft4Validator] = {}


def reference(name: str) -> jsonschema.Draft4Validator:
    global _REGISTRY
    if name not in _VALIDATORS:
        if _REGISTRY is None:
            _REGISTRY = _registry()
        _VALIDATORS[name] = jsonschema.Draft4Validator(
            _read(SPEC / name), registry=_REGISTRY
        )
    return _VALIDATORS[name]


def jpath(parts) -> str:
    """Format a jsonschema absolute_path the way pyrunc.schema promises to."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif p.isidentifier():
            out += f".{p}" if out else p
        else:
            out += "[" + json.dumps(p, ensure_ascii=False) + "]"
    return out


def both(kind: str, doc):
    """Run ours and the reference; return (our errors, reference error paths)."""
    if kind == "config":
        ours = S.validate_config(doc)
        ref = reference("config-schema.json")
    else:
        ours = S.validate_state(doc)
        ref = reference("state-schema.json")
    theirs = sorted(jpath(e.absolute_path) for e in ref.iter_errors(doc))
    return ours, theirs


def assert_agree(kind: str, doc):
    ours, theirs = both(kind, doc)
    assert sorted(e.path for e in ours) == theirs, (
        f"pyrunc.schema and jsonschema disagree:\n ours:   {[str(e) for e in ours]}\n"
        f" theirs: {theirs}"
    )
    return ours


DELETE = object()


def mutate(doc, changes):
    doc = copy.deepcopy(doc)
    for path, value in changes:
        if path == ():
            doc = value
            continue
        node = doc
        for key in path[:-1]:
            node = node[key]
        if value is DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return doc


def _maximal():
    return _read(FIXTURES / "good" / "config-maximal.json")


def _default():
    return _read(FIXTURES / "good" / "config-runc-default.json")


# --------------------------------------------------------------------------
# the schema files themselves


def test_schema_dir_is_repo_spec():
    assert Path(S.SCHEMA_DIR) == SPEC
    names = {p.name for p in SCHEMA_FILES}
    assert {"config-schema.json", "state-schema.json", "defs.json",
            "defs-linux.json", "config-linux.json"} <= names


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_schema_file_is_valid_draft4(path):
    doc = _read(path)
    jsonschema.Draft4Validator.check_schema(doc)
    assert doc.get("$schema") == "http://json-schema.org/draft-04/schema#"
    assert "id" not in doc, "schemas are registered by bare file name, no id"


def _schema_nodes(node, where):
    """Yield (where, schema-node) for every subschema in a schema document."""
    if not isinstance(node, dict):
        return
    yield where, node
    for key in ("properties", "patternProperties", "definitions"):
        for name, sub in node.get(key, {}).items():
            yield from _schema_nodes(sub, f"{where}/{key}/{name}")
    for key in ("additionalProperties", "additionalItems", "not", "items"):
        if isinstance(node.get(key), dict):
            yield from _schema_nodes(node[key], f"{where}/{key}")
    for key in ("allOf", "anyOf", "oneOf", "items"):
        if isinstance(node.get(key), list):
            for i, sub in enumerate(node[key]):
                yield from _schema_nodes(sub, f"{where}/{key}/{i}")
    for name, dep in node.get("dependencies", {}).items():
        yield from _schema_nodes(dep, f"{where}/dependencies/{name}")


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_schema_uses_only_keywords_our_interpreter_knows(path):
    known = set(S._KEYWORDS) | S._NON_VALIDATING | {"$ref"}
    for where, node in _schema_nodes(_read(path), path.name):
        unknown = set(node) - known
        assert not unknown, f"{where} uses {sorted(unknown)}"


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_every_ref_resolves(path):
    resolver = _registry().resolver()
    for where, node in _schema_nodes(_read(path), path.name):
        ref = node.get("$ref")
        if ref is None:
            continue
        target_file = ref.partition("#")[0] or path.name
        assert (SPEC / target_file).is_file(), f"{where}: {ref}"
        # ours
        base, target = S._resolve(path.name, ref)
        assert isinstance(target, dict) and base == target_file
        # the reference implementation sees the same node
        absolute = ref if ref.partition("#")[0] else path.name + ref
        assert resolver.lookup(absolute).contents == target, f"{where}: {ref}"


def test_enumerations_the_spec_lists():
    linux = _read(SPEC / "defs-linux.json")["definitions"]
    assert linux["NamespaceType"]["enum"] == NAMESPACE_ENUM
    assert len(linux["RlimitType"]["enum"]) == 16
    assert all(v.startswith("RLIMIT_") for v in linux["RlimitType"]["enum"])
    assert len(linux["SeccompArch"]["enum"]) == 23
    assert len(linux["SeccompAction"]["enum"]) == 9
    assert len(linux["SeccompOperator"]["enum"]) == 7
    assert set(linux["RootfsPropagation"]["enum"]) == {"shared", "slave", "private", "unbindable"}
    assert set(linux["Device"]["properties"]["type"]["enum"]) == {"c", "b", "u", "p"}
    assert len(linux["MemoryPolicy"]["properties"]["mode"]["enum"]) == 7
    state = _read(SPEC / "state-schema.json")
    assert state["properties"]["status"]["enum"] == [
        "creating", "created", "running", "stopped", "paused"]
    config = _read(SPEC / "config-schema.json")
    assert config["required"] == ["ociVersion"]


# --------------------------------------------------------------------------
# good documents


@pytest.mark.parametrize("path", GOOD_CONFIGS, ids=lambda p: p.name)
def test_good_config(path):
    doc = _read(path)
    before = copy.deepcopy(doc)
    assert S.validate_config(doc) == []
    assert list(reference("config-schema.json").iter_errors(doc)) == []
    assert doc == before, "validation must not modify the document"


@pytest.mark.parametrize("path", GOOD_STATES, ids=lambda p: p.name)
def test_good_state(path):
    doc = _read(path)
    assert S.validate_state(doc) == []
    assert list(reference("state-schema.json").iter_errors(doc)) == []


def test_good_fixtures_exist():
    names = {p.name for p in GOOD_CONFIGS}
    assert {"config-runc-default.json", "config-rootless.json", "config-maximal.json"} <= names
    assert len(GOOD_STATES) >= 3


def test_maximal_config_exercises_every_schema_property():
    """Every property declared anywhere in the config schemas is used by config-maximal.json."""
    declared = set()
    for name in ("config-schema.json", "config-linux.json", "defs.json", "defs-linux.json"):
        for _, node in _schema_nodes(_read(SPEC / name), name):
            declared |= set(node.get("properties", {}))
    used = set()

    def walk(x):
        if isinstance(x, dict):
            used.update(x)
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(_maximal())
    platforms = {"freebsd", "solaris", "vm", "windows", "zos"}
    missing = declared - used - platforms
    assert not missing, f"config-maximal.json does not exercise {sorted(missing)}"


def test_unknown_properties_are_ignored_everywhere():
    doc = mutate(_default(), [
        (("x-top",), {"anything": [1, 2]}),
        (("process", "x-proc"), 1),
        (("process", "user", "username"), "windows-only-field"),
        (("process", "commandLine"), "windows-only field"),
        (("root", "x-root"), None),
        (("mounts", 0, "x-mount"), True),
        (("linux", "x-linux"), "?"),
        (("linux", "namespaces", 0, "x-ns"), []),
        (("linux", "resources", "x-res"), {}),
        (("windows",), {"layerFolders": []}),
    ])
    assert assert_agree("config", doc) == []


# --------------------------------------------------------------------------
# bad documents: (id, base, changes, expected path, enum?)

BAD_CONFIGS = [
    ("not-an-object", [((), [])], "", False),
    ("missing-ociVersion", [(("ociVersion",), DELETE)], "", False),
    ("ociVersion-not-semver", [(("ociVersion",), "1.0")], "ociVersion", False),
    ("ociVersion-number", [(("ociVersion",), 1.3)], "ociVersion", False),
    ("root-missing-path", [(("root",), {"readonly": True})], "root", False),
    ("root-readonly-string", [(("root", "readonly"), "yes")], "root.readonly", False),
    ("hostname-number", [(("hostname",), 5)], "hostname", False),
    ("domainname-null", [(("domainname",), None)], "domainname", False),
    ("mounts-not-array", [(("mounts",), {})], "mounts", False),
    ("mount-without-destination", [(("mounts", 0, "destination"), DELETE)], "mounts[0]", False),
    ("mount-options-string", [(("mounts", 1, "options"), "rbind")], "mounts[1].options", False),
    ("mount-uidMappings-without-gidMappings", [(("mounts", 1, "gidMappings"), DELETE)], "mounts[1]", False),
    ("mount-idmapping-negative", [(("mounts", 1, "uidMappings", 0, "hostID"), -1)], "mounts[1].uidMappings[0].hostID", False),
    ("process-not-object", [(("process",), "sh")], "process", False),
    ("process-missing-cwd", [(("process", "cwd"), DELETE)], "process", False),
    ("process-relative-cwd", [(("process", "cwd"), "srv/app")], "process.cwd", False),
    ("process-missing-args", [(("process", "args"), DELETE)], "process", False),
    ("process-empty-args", [(("process", "args"), [])], "process.args", False),
    ("process-arg-number", [(("process", "args", 1), 8080)], "process.args[1]", False),
    ("process-terminal-string", [(("process", "terminal"), "true")], "process.terminal", False),
    ("consoleSize-missing-width", [(("process", "consoleSize"), {"height": 10})], "process.consoleSize", False),
    ("consoleSize-negative", [(("process", "consoleSize", "height"), -1)], "process.consoleSize.height", False),
    ("env-not-array", [(("process", "env"), "PATH=/bin")], "process.env", False),
    ("env-item-number", [(("process", "env", 0), 1)], "process.env[0]", False),
    ("negative-uid", [(("process", "user", "uid"), -1)], "process.user.uid", False),
    ("uid-over-uint32", [(("process", "user", "uid"), 2**32)], "process.user.uid", False),
    ("uid-boolean", [(("process", "user", "uid"), True)], "process.user.uid", False),
    ("uid-float", [(("process", "user", "uid"), 1.0)], "process.user.uid", False),
    ("gid-string", [(("process", "user", "gid"), "0")], "process.user.gid", False),
    ("user-missing-gid", [(("process", "user", "gid"), DELETE)], "process.user", False),
    ("additionalGids-negative", [(("process", "user", "additionalGids", 1), -27)], "process.user.additionalGids[1]", False),
    ("umask-negative", [(("process", "user", "umask"), -1)], "process.user.umask", False),
    ("capability-number", [(("process", "capabilities", "bounding", 1), 7)], "process.capabilities.bounding[1]", False),
    ("capabilities-set-string", [(("process", "capabilities", "ambient"), "CAP_KILL")], "process.capabilities.ambient", False),
    ("bad-rlimit-type", [(("process", "rlimits", 9, "type"), "RLIMIT_FILES")], "process.rlimits[9].type", True),
    ("rlimit-missing-soft", [(("process", "rlimits", 0, "soft"), DELETE)], "process.rlimits[0]", False),
    ("rlimit-negative-hard", [(("process", "rlimits", 0, "hard"), -1)], "process.rlimits[0].hard", False),
    ("rlimit-over-uint64", [(("process", "rlimits", 0, "hard"), 2**64)], "process.rlimits[0].hard", False),
    ("noNewPrivileges-int", [(("process", "noNewPrivileges"), 1)], "process.noNewPrivileges", False),
    ("oomScoreAdj-string", [(("process", "oomScoreAdj"), "-500")], "process.oomScoreAdj", False),
    ("ioPriority-class", [(("process", "ioPriority", "class"), "IOPRIO_CLASS_NONE")], "process.ioPriority.class", True),
    ("ioPriority-priority-8", [(("process", "ioPriority", "priority"), 8)], "process.ioPriority.priority", False),
    ("ioPriority-missing-priority", [(("process", "ioPriority", "priority"), DELETE)], "process.ioPriority", False),
    ("scheduler-policy", [(("process", "scheduler", "policy"), "SCHED_NORMAL")], "process.scheduler.policy", True),
    ("scheduler-flag", [(("process", "scheduler", "flags", 0), "SCHED_FLAG_X")], "process.scheduler.flags[0]", True),
    ("scheduler-nice-over-int32", [(("process", "scheduler", "nice"), 2**31)], "process.scheduler.nice", False),
    ("scheduler-missing-policy", [(("process", "scheduler", "policy"), DELETE)], "process.scheduler", False),
    ("execCPUAffinity-list", [(("process", "execCPUAffinity", "final"), [0, 1])], "process.execCPUAffinity.final", False),
    ("hooks-not-object", [(("hooks",), [])], "hooks", False),
    ("hook-relative-path", [(("hooks", "prestart", 0, "path"), "usr/bin/old-style")], "hooks.prestart[0].path", False),
    ("hook-missing-path", [(("hooks", "poststop", 0, "path"), DELETE)], "hooks.poststop[0]", False),
    ("hook-timeout-zero", [(("hooks", "poststart", 0, "timeout"), 0)], "hooks.poststart[0].timeout", False),
    ("hook-args-string", [(("hooks", "createRuntime", 0, "args"), "net-setup")], "hooks.createRuntime[0].args", False),
    ("hook-list-object", [(("hooks", "startContainer"), {"path": "/x"})], "hooks.startContainer", False),
    ("annotation-value-number", [(("annotations", "com.example.n"), 2)], 'annotations["com.example.n"]', False),
    ("annotation-empty-key", [(("annotations", ""), "x")], "annotations", False),
    ("linux-not-object", [(("linux",), [])], "linux", False),
    ("wrong-namespace-type", [(("linux", "namespaces", 2, "type"), "foo")], "linux.namespaces[2].type", True),
    ("namespace-missing-type", [(("linux", "namespaces", 0), {"path": "/proc/1/ns/cgroup"})], "linux.namespaces[0]", False),
    ("namespace-relative-path", [(("linux", "namespaces", 3, "path"), "run/netns/max")], "linux.namespaces[3].path", False),
    ("uidMapping-missing-size", [(("linux", "uidMappings", 0, "size"), DELETE)], "linux.uidMappings[0]", False),
    ("gidMapping-over-uint32", [(("linux", "gidMappings", 0, "hostID"), 2**32)], "linux.gidMappings[0].hostID", False),
    ("timeOffset-negative-nanosecs", [(("linux", "timeOffsets", "monotonic", "nanosecs"), -1)], "linux.timeOffsets.monotonic.nanosecs", False),
    ("timeOffset-secs-string", [(("linux", "timeOffsets", "boottime", "secs"), "1")], "linux.timeOffsets.boottime.secs", False),
    ("device-type", [(("linux", "devices", 0, "type"), "x")], "linux.devices[0].type", True),
    ("device-missing-major", [(("linux", "devices", 1, "major"), DELETE)], "linux.devices[1]", False),
    ("device-missing-path", [(("linux", "devices", 3, "path"), DELETE)], "linux.devices[3]", False),
    ("device-negative-uid", [(("linux", "devices", 0, "uid"), -1)], "linux.devices[0].uid", False),
    ("netDevice-name-number", [(("linux", "netDevices", "eth1", "name"), 5)], "linux.netDevices.eth1.name", False),
    ("netDevice-not-object", [(("linux", "netDevices", "dummy0"), "ctr0")], "linux.netDevices.dummy0", False),
    ("cgroupsPath-number", [(("linux", "cgroupsPath"), 1)], "linux.cgroupsPath", False),
    ("rootfsPropagation-rshared", [(("linux", "rootfsPropagation"), "rshared")], "linux.rootfsPropagation", True),
    ("cgroup-device-missing-allow", [(("linux", "resources", "devices", 0, "allow"), DELETE)], "linux.resources.devices[0]", False),
    ("cgroup-device-access", [(("linux", "resources", "devices", 1, "access"), "rwx")], "linux.resources.devices[1].access", False),
    ("cgroup-device-type-u", [(("linux", "resources", "devices", 2, "type"), "u")], "linux.resources.devices[2].type", True),
    ("memory-limit-string", [(("linux", "resources", "memory", "limit"), "512M")], "linux.resources.memory.limit", False),
    ("memory-limit-over-int64", [(("linux", "resources", "memory", "limit"), 2**63)], "linux.resources.memory.limit", False),
    ("memory-swappiness-101", [(("linux", "resources", "memory", "swappiness"), 101)], "linux.resources.memory.swappiness", False),
    ("cpu-shares-negative", [(("linux", "resources", "cpu", "shares"), -1)], "linux.resources.cpu.shares", False),
    ("cpu-cpus-number", [(("linux", "resources", "cpu", "cpus"), 3)], "linux.resources.cpu.cpus", False),
    ("blkio-weight-over-uint16", [(("linux", "resources", "blockIO", "weight"), 65536)], "linux.resources.blockIO.weight", False),
    ("blkio-weightDevice-no-weight", [(("linux", "resources", "blockIO", "weightDevice", 1, "leafWeight"), DELETE)], "linux.resources.blockIO.weightDevice[1]", False),
    ("blkio-throttle-missing-rate", [(("linux", "resources", "blockIO", "throttleReadBpsDevice", 0, "rate"), DELETE)], "linux.resources.blockIO.throttleReadBpsDevice[0]", False),
    ("hugepage-pageSize", [(("linux", "resources", "hugepageLimits", 0, "pageSize"), "2M")], "linux.resources.hugepageLimits[0].pageSize", False),
    ("hugepage-missing-limit", [(("linux", "resources", "hugepageLimits", 1, "limit"), DELETE)], "linux.resources.hugepageLimits[1]", False),
    ("network-classID-negative", [(("linux", "resources", "network", "classID"), -1)], "linux.resources.network.classID", False),
    ("network-priority-missing-name", [(("linux", "resources", "network", "priorities", 0, "name"), DELETE)], "linux.resources.network.priorities[0]", False),
    ("pids-limit-float", [(("linux", "resources", "pids", "limit"), 1.5)], "linux.resources.pids.limit", False),
    ("rdma-empty-entry", [(("linux", "resources", "rdma", "rxe3"), {})], "linux.resources.rdma.rxe3", False),
    ("unified-value-number", [(("linux", "resources", "unified", "memory.high"), 5)], 'linux.resources.unified["memory.high"]', False),
    ("intelRdt-memBwSchema-prefix", [(("linux", "intelRdt", "memBwSchema"), "L3:0=7f0")], "linux.intelRdt.memBwSchema", False),
    ("intelRdt-memBwSchema-newline", [(("linux", "intelRdt", "memBwSchema"), "MB:0=20\nMB:1=70")], "linux.intelRdt.memBwSchema", False),
    ("intelRdt-schemata-newline", [(("linux", "intelRdt", "schemata", 0), "L2:0=f\nL3:0=1")], "linux.intelRdt.schemata[0]", False),
    ("intelRdt-enableMonitoring-string", [(("linux", "intelRdt", "enableMonitoring"), "true")], "linux.intelRdt.enableMonitoring", False),
    ("sysctl-value-number", [(("linux", "sysctl", "net.ipv4.ip_forward"), 1)], 'linux.sysctl["net.ipv4.ip_forward"]', False),
    ("bad-seccomp-defaultAction", [(("linux", "seccomp", "defaultAction"), "SCMP_ACT_DENY")], "linux.seccomp.defaultAction", True),
    ("seccomp-missing-defaultAction", [(("linux", "seccomp", "defaultAction"), DELETE)], "linux.seccomp", False),
    ("bad-seccomp-syscall-action", [(("linux", "seccomp", "syscalls", 4, "action"), "SCMP_ACT_KILL_ALL")], "linux.seccomp.syscalls[4].action", True),
    ("seccomp-arch", [(("linux", "seccomp", "architectures", 1), "SCMP_ARCH_AMD64")], "linux.seccomp.architectures[1]", True),
    ("seccomp-flag", [(("linux", "seccomp", "flags", 0), "SECCOMP_FILTER_FLAG_NEW_LISTENER")], "linux.seccomp.flags[0]", True),
    ("seccomp-operator", [(("linux", "seccomp", "syscalls", 9, "args", 2, "op"), "SCMP_CMP_LESS")], "linux.seccomp.syscalls[9].args[2].op", True),
    ("seccomp-arg-missing-value", [(("linux", "seccomp", "syscalls", 9, "args", 1, "value"), DELETE)], "linux.seccomp.syscalls[9].args[1]", False),
    ("seccomp-empty-names", [(("linux", "seccomp", "syscalls", 0, "names"), [])], "linux.seccomp.syscalls[0].names", False),
    ("seccomp-missing-names", [(("linux", "seccomp", "syscalls", 0, "names"), DELETE)], "linux.seccomp.syscalls[0]", False),
    ("seccomp-errnoRet-negative", [(("linux", "seccomp", "syscalls", 5, "errnoRet"), -1)], "linux.seccomp.syscalls[5].errnoRet", False),
    ("seccomp-metadata-without-listener", [(("linux", "seccomp", "listenerPath"), DELETE)], "linux.seccomp", False),
    ("maskedPaths-relative", [(("linux", "maskedPaths", 0), "proc/kcore")], "linux.maskedPaths[0]", False),
    ("readonlyPaths-string", [(("linux", "readonlyPaths"), "/proc/sys")], "linux.readonlyPaths", False),
    ("mountLabel-number", [(("linux", "mountLabel"), 0)], "linux.mountLabel", False),
    ("personality-domain", [(("linux", "personality", "domain"), "LINUX64")], "linux.personality.domain", True),
    ("personality-missing-domain", [(("linux", "personality", "domain"), DELETE)], "linux.personality", False),
    ("memoryPolicy-mode", [(("linux", "memoryPolicy", "mode"), "MPOL_RANDOM")], "linux.memoryPolicy.mode", True),
    ("memoryPolicy-flag", [(("linux", "memoryPolicy", "flags", 0), "MPOL_F_NODE")], "linux.memoryPolicy.flags[0]", True),
    ("memoryPolicy-missing-mode", [(("linux", "memoryPolicy", "mode"), DELETE)], "linux.memoryPolicy", False),
]

BAD_STATES = [
    ("state-not-object", [((), "running")], "", False),
    ("state-missing-id", [(("id",), DELETE)], "", False),
    ("state-missing-ociVersion", [(("ociVersion",), DELETE)], "", False),
    ("state-missing-bundle", [(("bundle",), DELETE)], "", False),
    ("state-bad-status", [(("status",), "exploded")], "status", True),
    ("state-running-without-pid", [(("status",), "running"), (("pid",), DELETE)], "", False),
    ("state-paused-without-pid", [(("status",), "paused"), (("pid",), DELETE)], "", False),
    ("state-negative-pid", [(("pid",), -1)], "pid", False),
    ("state-pid-string", [(("pid",), "4422")], "pid", False),
    ("state-relative-bundle", [(("bundle",), "containers/redis")], "bundle", False),
    ("state-annotation-number", [(("annotations", "myKey"), 1)], "annotations.myKey", False),
    ("state-id-number", [(("id",), 7)], "id", False),
]


@pytest.mark.parametrize(
    "changes, expected, is_enum", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_config(changes, expected, is_enum):
    doc = mutate(_maximal(), changes)
    ours = assert_agree("config", doc)  # (a) same verdict, same error locations
    assert ours, "expected the document to be rejected"
    paths = [e.path for e in ours]
    assert expected in paths  # (b)
    for e in ours:
        assert str(e) == (f"{e.path}: {e.message}" if e.path else e.message)
    if is_enum:  # (c)
        _assert_enum_message(ours, expected, doc, "config-schema.json")


@pytest.mark.parametrize(
    "changes, expected, is_enum", [c[1:] for c in BAD_STATES], ids=[c[0] for c in BAD_STATES]
)
def test_bad_state(changes, expected, is_enum):
    doc = mutate(_read(FIXTURES / "good" / "state-created.json"), changes)
    ours = assert_agree("state", doc)
    assert ours, "expected the document to be rejected"
    assert expected in [e.path for e in ours]
    if is_enum:
        _assert_enum_message(ours, expected, doc, "state-schema.json")


def _assert_enum_message(ours, expected, doc, schema_name):
    # the reference tells us which enum the value broke
    ref_errors = [
        e for e in reference(schema_name).iter_errors(doc)
        if e.validator == "enum" and jpath(e.absolute_path) == expected
    ]
    assert len(ref_errors) == 1
    err = ref_errors[0]
    wanted = (f"{expected}: {json.dumps(err.instance)} is not one of "
              f"{json.dumps(err.validator_value)}")
    assert wanted in [str(e) for e in ours]


def test_enum_message_exact_form():
    doc = mutate(_default(), [(("linux", "namespaces", 2, "type"), "foo")])
    errors = S.validate_config(doc)
    assert [str(e) for e in errors] == [
        'linux.namespaces[2].type: "foo" is not one of '
        '["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"]'
    ]
    assert errors[0].path == "linux.namespaces[2].type"
    assert errors[0].message.startswith('"foo" is not one of [')


def test_messages_mirror_jsonschema_wording():
    doc = mutate(_default(), [
        (("ociVersion",), DELETE),
        (("process", "user", "uid"), -1),
        (("process", "user", "gid"), "0"),
        (("process", "args"), []),
        (("process", "cwd"), "tmp"),
        (("mounts", 0, "uidMappings"), []),
    ])
    got = {str(e) for e in S.validate_config(doc)}
    assert got == {
        '"ociVersion" is a required property',
        "process.user.uid: -1 is less than the minimum of 0",
        'process.user.gid: "0" is not of type "integer"',
        "process.args: [] should be non-empty",
        'process.cwd: "tmp" does not match "^/"',
        'mounts[0]: "gidMappings" is a dependency of "uidMappings"',
    }


def test_combinator_messages_carry_the_rule():
    doc = mutate(_maximal(), [(("linux", "devices", 1, "major"), DELETE)])
    (err,) = S.validate_config(doc)
    assert err.path == "linux.devices[1]"
    assert err.message.endswith(
        'is not valid under any of the given schemas (major and minor are REQUIRED unless type is "p")')
    state = {"ociVersion": "1.3.0", "id": "x", "status": "running", "bundle": "/b"}
    (err,) = S.validate_state(state)
    assert err.path == "" and "pid is REQUIRED" in err.message


def test_all_errors_are_reported():
    doc = mutate(_maximal(), [
        (("ociVersion",), 2),
        (("process", "user", "uid"), -1),
        (("mounts", 0, "destination"), DELETE),
        (("linux", "namespaces", 0, "type"), "net"),
        (("linux", "namespaces", 1, "type"), "network "),
        (("linux", "seccomp", "defaultAction"), "ALLOW"),
        (("linux", "resources", "pids", "limit"), "max"),
    ])
    ours = assert_agree("config", doc)
    assert sorted(e.path for e in ours) == sorted([
        "ociVersion",
        "process.user.uid",
        "mounts[0]",
        "linux.namespaces[0].type",
        "linux.namespaces[1].type",
        "linux.seccomp.defaultAction",
        "linux.resources.pids.limit",
    ])


def test_long_values_are_shortened_in_messages():
    doc = mutate(_default(), [(("hostname",), ["x" * 500])])
    (err,) = S.validate_config(doc)
    assert err.path == "hostname"
    assert len(err.message) < 200 and err.message.endswith('is not of type "string"')


def test_path_format_for_odd_keys():
    doc = mutate(_default(), [(("annotations",), {"a b": 1, "ok_key": 2, "é": 3, "1x": 4})])
    paths = sorted(e.path for e in S.validate_config(doc))
    assert paths == sorted(['annotations["a b"]', "annotations.ok_key", "annotations.é", 'annotations["1x"]'])


# --------------------------------------------------------------------------
# randomised agreement with jsonschema

_POOL = [
    None, True, False, 0, 1, -1, 7, 1.0, 1.5, -0.5, 2**16, 2**31, 2**32, 2**63, 2**64,
    "", "x", "/abs", "rel/path", "\n", "MB:1", "2MB", "rwm", "1.3.0", "pid", "c", "p",
    "SCMP_ACT_ALLOW", "RLIMIT_NOFILE", [], ["x"], [1], [{}], {}, {"a": "b"}, {"type": "pid"},
    {"path": "/x"}, {"names": ["x"], "action": "SCMP_ACT_LOG"},
]


def _all_paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _all_paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _all_paths(v, prefix + (i,))


def _random_mutation(rng, doc):
    paths = list(_all_paths(doc))
    path = rng.choice(paths)
    op = rng.random()
    if path and op < 0.25:
        parent = path[:-1]
        node = doc
        for k in parent:
            node = node[k]
        if isinstance(node, dict):
            return mutate(doc, [(path, DELETE)])
    if op < 0.35:
        node = doc
        for k in path:
            node = node[k]
        if isinstance(node, list):
            return mutate(doc, [(path, node + [copy.deepcopy(rng.choice(_POOL))])])
    return mutate(doc, [(path, copy.deepcopy(rng.choice(_POOL)))])


@pytest.mark.parametrize("seed", range(4))
def test_random_mutations_agree_with_jsonschema(seed):
    rng = random.Random(1000 + seed)
    bases = [_maximal(), _default(), _read(FIXTURES / "good" / "config-rootless.json")]
    invalid = 0
    for _ in range(150):
        doc = rng.choice(bases)
        for _ in range(rng.randint(1, 3)):
            doc = _random_mutation(rng, doc)
        ours = assert_agree("config", doc)
        invalid += bool(ours)
    assert invalid > 50  # the mutations really do produce bad documents


@pytest.mark.parametrize("seed", range(2))
def test_random_state_mutations_agree_with_jsonschema(seed):
    rng = random.Random(2000 + seed)
    bases = [_read(p) for p in GOOD_STATES]
    for _ in range(150):
        doc = rng.choice(bases)
        for _ in range(rng.randint(1, 2)):
            doc = _random_mutation(rng, doc)
        assert_agree("state", doc)


# --------------------------------------------------------------------------
# the SchemaError class and the module's footprint


def test_schema_error_is_a_plain_slotted_class():
    e = S.SchemaError("linux.namespaces[2].type", "boom")
    assert str(e) == "linux.namespaces[2].type: boom"
    assert str(S.SchemaError("", "boom")) == "boom"
    assert not hasattr(e, "__dict__")
    assert S.SchemaError.__slots__ == ("path", "message")
    assert not hasattr(S.SchemaError, "__dataclass_fields__")
    assert e == S.SchemaError("linux.namespaces[2].type", "boom")
    assert e != S.SchemaError("linux", "boom")


def test_validators_return_lists():
    assert S.validate_config({"ociVersion": "1.3.0"}) == []
    errs = S.validate_state({})
    assert isinstance(errs, list) and all(isinstance(e, S.SchemaError) for e in errs)
    assert sorted(e.message for e in errs) == sorted(
        f'"{k}" is a required property' for k in ("ociVersion", "id", "status", "bundle"))


_FOOTPRINT = r"""
import sys, time, json
sys.path.insert(0, sys.argv[1])
t0 = time.perf_counter()
import pyrunc.schema as s
loaded_at_import = sorted(s._files)
doc = json.load(open(sys.argv[2]))
errors = s.validate_config(doc)
elapsed = time.perf_counter() - t0
heavy = sorted(m for m in ("jsonschema", "referencing", "dataclasses", "typing", "pathlib")
               if m in sys.modules)
print(json.dumps({"errors": len(errors), "heavy": heavy, "loaded_at_import": loaded_at_import,
                  "loaded": sorted(s._files), "ms": elapsed * 1e3}))
"""


def test_import_is_light_and_lazy():
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _FOOTPRINT, str(REPO),
         str(FIXTURES / "good" / "config-runc-default.json")],
        check=True, capture_output=True, text=True,
    ).stdout
    result = json.loads(out)
    assert result["errors"] == 0
    assert result["heavy"] == []
    assert result["loaded_at_import"] == []  # nothing is read before the first validation
    assert "config-schema.json" in result["loaded"]
    assert "state-schema.json" not in result["loaded"]
    # The real figure is ~2 ms; this bound only catches gross regressions such
    # as importing jsonschema (~130 ms) without being flaky on a slow machine.
    assert result["ms"] < 60, result


# --------------------------------------------------------------------------
# keywords the interpreter supports but spec/*.json does not (yet) use: keep
# them honest against jsonschema on inline schemas.

_INLINE_CASES = [
    ({"type": ["string", "null"]}, ["a", None, 1, True, [], {}]),
    ({"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 10,
      "exclusiveMaximum": True}, [0, 0.1, 10, 9.99, -1, True, "5"]),
    ({"multipleOf": 3}, [9, 10, 0, 3.0, 4.5, "x"]),
    ({"multipleOf": 0.5}, [1.5, 1.25, 2, True]),
    ({"enum": [1, True, "a", [1, 2], {"k": False}, None]},
     [1, 1.0, True, False, 0, "a", "b", [1, 2], [1.0, 2.0], [True, 2], {"k": False}, {"k": 0}, None]),
    ({"uniqueItems": True}, [[1, 2], [1, 1], [1, True], [1, 1.0], [{"a": 1}, {"a": 1}],
                             [[1], [True]], [], "xx"]),
    ({"minItems": 2, "maxItems": 3}, [[1], [1, 2], [1, 2, 3, 4], {}]),
    ({"maxItems": 0}, [[], [1]]),
    ({"minLength": 2, "maxLength": 3}, ["a", "ab", "abcd", 5]),
    ({"minLength": 1}, ["", "a"]),
    ({"minProperties": 1, "maxProperties": 2}, [{}, {"a": 1}, {"a": 1, "b": 2, "c": 3}, []]),
    ({"properties": {"a": {"type": "integer"}}, "additionalProperties": False},
     [{"a": 1}, {"a": 1, "b": 2, "c": 3}, {"b": 1}, []]),
    ({"patternProperties": {"^x-": {"type": "string"}, "[0-9]$": {"type": "integer"}},
      "additionalProperties": {"type": "boolean"}},
     [{"x-a": "s", "b1": 1, "c": True}, {"x-1": "s"}, {"x-a": 1, "c": "no"}]),
    ({"items": [{"type": "string"}, {"type": "integer"}], "additionalItems": False},
     [["a", 1], ["a", 1, 2], [1, "a"], ["a"]]),
    ({"items": [{"type": "string"}], "additionalItems": {"type": "integer"}},
     [["a", 1, 2], ["a", "b"]]),
    ({"dependencies": {"a": {"required": ["b"]}, "c": ["d", "e"]}},
     [{"a": 1}, {"a": 1, "b": 2}, {"c": 1}, {"c": 1, "d": 1, "e": 1}, 5]),
    ({"oneOf": [{"type": "integer"}, {"minimum": 2}]}, [1, 3, 1.5, "x"]),
    ({"allOf": [{"type": "integer"}, {"minimum": 2}]}, [1, 3, "x"]),
    ({"anyOf": [{"type": "integer"}, {"type": "string", "pattern": "^[a-z]+$"}]},
     [1, "abc", "ABC", None]),
    ({"not": {"type": "string"}}, ["a", 1]),
    ({"pattern": "a.c"}, ["xabcx", "ac", 1]),
    ({"pattern": "^lit"}, ["literal", "xlit"]),
    ({"pattern": "lit"}, ["a lit b", "li t"]),
]


@pytest.mark.parametrize("schema, instances", _INLINE_CASES,
                         ids=[json.dumps(c[0])[:40] for c in _INLINE_CASES])
def test_interpreter_keywords_against_jsonschema(schema, instances):
    ref = jsonschema.Draft4Validator(schema)
    for inst in instances:
        ours: list = []
        S._validate(inst, schema, "<inline>", None, ours)
        theirs = sorted(jpath(e.absolute_path) for e in ref.iter_errors(inst))
        assert sorted(e.path for e in ours) == theirs, (schema, inst, [str(e) for e in ours])
