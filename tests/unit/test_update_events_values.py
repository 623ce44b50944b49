"""``update``'s and ``events``' pure parts: runc's value parsing, merge rules and JSON shape."""

from __future__ import annotations

import pytest

from pyrunc.cgroups.stats import empty_stats, hugepage_sizes, parse_list, parse_psi
from pyrunc.cli import main
from pyrunc.errors import UsageError
from pyrunc.events import parse_duration, shape_stats
from pyrunc.update import check_merged, load_resources, merge, ram_in_bytes, resources_from_flags

MiB = 1 << 20


@pytest.mark.parametrize(("text", "value"), [
    ("512m", 512 * MiB), ("512M", 512 * MiB), ("1.5g", 3 * 512 * MiB), ("64MiB", 64 * MiB), ("10KB", 10240),
    ("1024 kb", MiB), ("100", 100), ("7b", 7), ("1e3", 1000), ("1k", 1024), ("1p", 1 << 50),
])
def test_ram_in_bytes_like_go_units(text: str, value: int) -> None:
    assert ram_in_bytes(text) == value


@pytest.mark.parametrize(("text", "message"), [
    ("12x", "invalid suffix: 'x'"), ("abc", "invalid size: 'abc'"), ("-5", "invalid size: '-5'"),
    ("1mbb", "invalid suffix: 'mbb'"), ("1bk", "invalid suffix: 'bk'"), ("1kx", "invalid suffix: 'kx'"),
])
def test_ram_in_bytes_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ram_in_bytes(text)


@pytest.mark.parametrize(("text", "seconds"), [
    ("5s", 5.0), ("500ms", 0.5), ("1m30s", 90.0), ("1.5h", 5400.0), ("0", 0.0), ("-2s", -2.0),
    ("100us", 1e-4), ("10\u00b5s", 1e-5), ("3ns", 3e-9),
])
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5", "", "s", "1x", "1.2.3s", "--1s", ".s"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(UsageError, match="for flag -interval: parse error"):
        parse_duration(text)


def test_flags_build_linux_resources() -> None:
    got = resources_from_flags({
        "memory": "64m", "memory-swap": "-1", "memory-reservation": "1g", "cpu-share": "512", "cpu-quota": "-1",
        "cpu-period": "100000", "cpu-burst": "0", "cpu-idle": "1", "cpuset-cpus": "0-1", "cpuset-mems": "0",
        "pids-limit": "20", "blkio-weight": "0",
    })
    assert got == {
        "cpu": {"cpus": "0-1", "mems": "0", "idle": 1, "burst": 0, "period": 100000, "shares": 512, "quota": -1},
        "memory": {"limit": 64 * MiB, "swap": -1, "reservation": 1 << 30},
        "pids": {"limit": 20},
    }
    assert resources_from_flags({}) == {}


@pytest.mark.parametrize(("flags", "message"), [
    ({"cpu-share": "-1"}, 'invalid value for cpu-share: strconv.ParseUint: parsing "-1": invalid syntax'),
    ({"cpu-quota": "1.5"}, "invalid value for cpu-quota"),
    ({"cpu-period": "99999999999999999999"}, "value out of range"),
    ({"memory": "lots"}, "invalid value for memory: invalid size"),
    ({"pids-limit": "ten"}, 'invalid value "ten" for flag -pids-limit'),
    ({"cpu-idle": "x"}, "invalid value for cpu-idle"),
])
def test_bad_flag_values_name_the_flag(flags: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        resources_from_flags(flags)


def test_kernel_memory_flags_only_warn() -> None:
    warnings: list[str] = []
    assert resources_from_flags({"kernel-memory": "1m"}, warnings.append) == {}
    assert warnings == ["Setting --kernel-memory is ignored and will be removed"]


def test_merge_follows_runc() -> None:
    old = {"devices": [{"allow": False, "access": "rwm"}], "memory": {"limit": 64 * MiB, "swap": 128 * MiB},
           "cpu": {"shares": 512, "cpus": "0"}, "pids": {"limit": 30}}
    # zeros and empty strings leave things alone (what engines send)
    same = merge(old, {"memory": {"limit": 0, "swap": 0, "reservation": 0}, "blockIO": {"weight": 0},
                       "cpu": {"shares": 0, "quota": 0, "period": 0, "cpus": "", "mems": ""}, "pids": {"limit": 0},
                       "devices": [{"allow": True, "access": "rwm"}], "hugepageLimits": []})
    assert same == old and same is not old
    got = merge(old, {"memory": {"limit": -1}, "cpu": {"quota": 5000, "burst": 0, "idle": 0}, "pids": {"limit": -1}})
    assert got["memory"] == {"limit": -1, "swap": -1}  # unlimited memory without a word on swap
    assert got["cpu"] == {"shares": 512, "cpus": "0", "quota": 5000, "burst": 0, "idle": 0}
    assert got["pids"] == {"limit": -1}
    assert old["memory"] == {"limit": 64 * MiB, "swap": 128 * MiB}  # not modified in place
    assert merge(None, {"blockIO": {"weight": 300}}) == {"blockIO": {"weight": 300}}


def test_merged_resources_checks() -> None:
    with pytest.raises(UsageError, match="memory.swap"):
        check_merged({"memory": {"limit": 64 * MiB, "swap": 32 * MiB}})
    with pytest.raises(UsageError, match="cpu.burst"):
        check_merged({"cpu": {"quota": 1000, "burst": 2000}})
    check_merged({"memory": {"limit": 64 * MiB, "swap": -1}, "cpu": {"quota": -1, "burst": 5}})


def test_resources_documents_are_checked_with_json_paths() -> None:
    assert load_resources("-", b'{"memory": {"limit": 5}}') == {"memory": {"limit": 5}}
    with pytest.raises(UsageError, match=r'--resources \(stdin\): memory.limit: "big" is not of type "integer"'):
        load_resources("-", b'{"memory": {"limit": "big"}}')
    with pytest.raises(UsageError, match=r"--resources r.json: invalid JSON"):
        load_resources("r.json", b"{")
    with pytest.raises(UsageError, match="cpu.shares"):
        load_resources("-", b'{"cpu": {"shares": -1}}')


def test_cpuset_lists_psi_and_page_sizes() -> None:
    assert parse_list("0-3,5,7-8\n") == [0, 1, 2, 3, 5, 7, 8]
    assert parse_list("") == []
    psi = parse_psi("some avg10=1.50 avg60=0.00 avg300=0.00 total=12\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=3\n")
    assert psi == {"some": {"avg10": 1.5, "avg60": 0.0, "avg300": 0.0, "total": 12},
                   "full": {"avg10": 0.0, "avg60": 0.0, "avg300": 0.0, "total": 3}}
    assert parse_psi(None) is None
    assert all(s.endswith("B") for s in hugepage_sizes())


def test_stats_shape_omits_what_go_omits() -> None:
    s = empty_stats()
    s["memory"]["usage"] = {"limit": 5, "usage": 0, "max": 0, "failcnt": 0}
    s["pids"] = {"current": 2, "limit": 0}
    s["blkio"]["ioServicedRecursive"] = [{"major": 8, "minor": 0, "op": "Read", "value": 0}]
    s["hugetlb"] = {"2MB": {"usage": 0, "max": 0, "failcnt": 0}}
    s["cpu"]["psi"] = {"some": {"avg10": 0.0, "avg60": 2.5, "avg300": 0.0, "total": 1}}
    d = shape_stats(s)
    assert d["cpu"] == {"usage": {"kernel": 0, "user": 0}, "throttling": {},
                        "psi": {"some": {"avg10": 0, "avg60": 2.5, "avg300": 0, "total": 1}}}
    assert d["memory"] == {"usage": {"limit": 5, "failcnt": 0}, "swap": {"limit": 0, "failcnt": 0},
                           "kernel": {"limit": 0, "failcnt": 0}, "kernelTCP": {"limit": 0, "failcnt": 0}}
    assert d["pids"] == {"current": 2}
    assert d["blkio"] == {"ioServicedRecursive": [{"major": 8, "op": "Read"}]}
    assert d["hugetlb"] == {"2MB": {"failcnt": 0}}
    assert d["cpuset"]["cpu_exclusive"] == 0 and "cpus" not in d["cpuset"]
    assert d["intel_rdt"] == {} and d["network_interfaces"] is None


def test_update_and_events_need_one_id(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", "/nonexistent", "update"]) != 0
    assert main(["--root", "/nonexistent", "events", "a", "b"]) != 0
    assert main(["--root", "/nonexistent", "update", "--memory", "1m", "nope"]) != 0
    err = capfd.readouterr().err
    assert 'update\\" requires exactly 1 argument(s)' in err and "container does not exist" in err
    assert 'events\\" requires exactly 1 argument(s)' in err


def test_rollback_restores_defaults_for_limits_the_old_config_lacked() -> None:
    from pyrunc.update import rollback
    old = {"memory": {"limit": 64 * MiB}, "cpu": {"cpus": "0"}}
    merged = {"memory": {"limit": 32 * MiB, "swap": 64 * MiB}, "cpu": {"cpus": "1", "shares": 256, "quota": 1000},
              "pids": {"limit": 5}}
    assert rollback(old, merged) == {"memory": {"limit": 64 * MiB, "swap": -1},
                                     "cpu": {"cpus": "0", "quota": -1, "shares": 1024}, "pids": {"limit": -1}}
    assert old == {"memory": {"limit": 64 * MiB}, "cpu": {"cpus": "0"}}
