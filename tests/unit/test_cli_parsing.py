"""The command line as engines send it: argv shapes from go-runc (containerd), conmon (podman,
CRI-O) and people, replayed against ``pyrunc.cli.parse_flags`` and its tables.

No root and no containers: only parsing, and ``main`` for errors raised before anything runs.
"""

from __future__ import annotations

import pytest

from pyrunc import cli
from pyrunc.errors import UsageError


def parse(argv: list[str]) -> tuple[dict, str, dict, list[str]]:
    """What ``cli.main`` does before dispatching: global flags, command, command flags (moved in
    front of the positionals first, as urfave/cli v1 does for all but exec and ps), positionals."""
    gflags, rest = cli.parse_flags(argv, cli._GLOBAL, "")
    command, cargv = rest[0], rest[1:]
    if command not in cli._NO_REORDER:
        cargv = cli.reorder_args(cargv, cli._COMMANDS[command])
    flags, positional = cli.parse_flags(cargv, cli._COMMANDS[command], command)
    return gflags, command, flags, positional


# ---------------------------------------------------------------------------- engines' argv


def test_go_runc_create() -> None:
    # go-runc: r.args() then "create", "--bundle", B, opts.args()..., id
    g, cmd, f, pos = parse(["--root", "/run/containerd/runc/k8s.io", "--log", "/run/x/log.json",
                            "--log-format", "json", "create", "--bundle", "/b", "--pid-file", "/b/init.pid",
                            "--console-socket", "/tmp/pty.sock", "--no-pivot", "--no-new-keyring",
                            "--preserve-fds", "2", "ctr1"])
    assert g == {"root": "/run/containerd/runc/k8s.io", "log": "/run/x/log.json", "log_format": "json"}
    assert cmd == "create"
    assert f == {"bundle": "/b", "pid_file": "/b/init.pid", "console_socket": "/tmp/pty.sock",
                 "no_pivot": True, "no_new_keyring": True, "preserve_fds": "2"}
    assert pos == ["ctr1"]


def test_go_runc_rootless_and_systemd_globals() -> None:
    g, _, _, pos = parse(["--root", "/r", "--debug", "--systemd-cgroup", "--rootless=true", "--criu", "/usr/sbin/criu",
                          "state", "c"])
    assert g == {"root": "/r", "debug": True, "systemd_cgroup": True, "rootless": "true", "criu": "/usr/sbin/criu"}
    assert pos == ["c"]
    g2, _, _, _ = parse(["--rootless=false", "list"])
    assert g2 == {"rootless": "false"}


def test_conmon_create() -> None:
    # conmon: runtime [runtime args] create --bundle B --pid-file P [--no-pivot] [--console-socket S] ID
    g, cmd, f, pos = parse(["--systemd-cgroup", "--log-format=json", "--log", "/var/lib/c/ctr.log",
                            "--root=/run/runc", "create", "--bundle", "/var/lib/c/userdata",
                            "--pid-file", "/run/c/pidfile", "--no-pivot", "--console-socket", "/run/c/sock", "ctrid"])
    assert g == {"systemd_cgroup": True, "log_format": "json", "log": "/var/lib/c/ctr.log", "root": "/run/runc"}
    assert (cmd, pos) == ("create", ["ctrid"])
    assert f == {"bundle": "/var/lib/c/userdata", "pid_file": "/run/c/pidfile", "no_pivot": True,
                 "console_socket": "/run/c/sock"}


@pytest.mark.parametrize("argv,flags,positional", [
    (["kill", "--all", "c1", "9"], {"all": True}, ["c1", "9"]),
    (["kill", "-a", "c1", "KILL"], {"all": True}, ["c1", "KILL"]),
    (["kill", "c1"], {}, ["c1"]),
    (["delete", "--force", "c1"], {"force": True}, ["c1"]),
    (["delete", "-f", "c1"], {"force": True}, ["c1"]),
    (["delete", "--force=false", "c1"], {"force": False}, ["c1"]),
    (["start", "c1"], {}, ["c1"]),
    (["state", "c1"], {}, ["c1"]),
    (["list", "--format", "json"], {"format": "json"}, []),
    (["list", "-f=json", "-q"], {"format": "json", "quiet": True}, []),
    (["run", "-d", "--pid-file", "p", "-b", "b", "c1"], {"detach": True, "pid_file": "p", "bundle": "b"}, ["c1"]),
    (["run", "--detach", "--keep", "--no-subreaper", "c1"], {"detach": True, "keep": True, "no_subreaper": True}, ["c1"]),
    (["spec", "--rootless", "--bundle", "/b"], {"rootless": True, "bundle": "/b"}, []),
    (["validate", "-b", "/b"], {"bundle": "/b"}, []),
])
def test_command_flags(argv: list[str], flags: dict, positional: list[str]) -> None:
    _, cmd, f, pos = parse(argv)
    assert cmd == argv[0]
    assert f == flags
    assert pos == positional


# ---------------------------------------------------------------------------- Go flag rules


@pytest.mark.parametrize("argv", [
    ["--root", "/x", "list"], ["-root", "/x", "list"], ["--root=/x", "list"], ["-root=/x", "list"],
])
def test_one_and_two_dashes_with_space_or_equals(argv: list[str]) -> None:
    g, rest = cli.parse_flags(argv, cli._GLOBAL, "")
    assert g == {"root": "/x"} and rest == ["list"]


def test_a_value_flag_takes_the_next_argument_whatever_it_looks_like() -> None:
    g, rest = cli.parse_flags(["--root", "--log", "list"], cli._GLOBAL, "")
    assert g == {"root": "--log"} and rest == ["list"]
    g2, rest2 = cli.parse_flags(["--log=", "list"], cli._GLOBAL, "")
    assert g2 == {"log": ""} and rest2 == ["list"]  # -flag= sets the empty string


def test_a_bool_flag_never_takes_the_next_argument() -> None:
    f, rest = cli.parse_flags(["--force", "true"], cli._COMMANDS["delete"], "delete")
    assert f == {"force": True} and rest == ["true"]


@pytest.mark.parametrize("value,want", [("true", True), ("1", True), ("t", True), ("TRUE", True),
                                        ("false", False), ("0", False), ("f", False), ("False", False)])
def test_bool_values(value: str, want: bool) -> None:
    f, _ = cli.parse_flags([f"--detach={value}"], cli._COMMANDS["run"], "run")
    assert f == {"detach": want}


def test_flags_stop_at_the_first_positional() -> None:
    f, rest = cli.parse_flags(["-b", "B", "ID", "--pid-file", "P"], cli._CREATE, "create")
    assert f == {"bundle": "B"}
    assert rest == ["ID", "--pid-file", "P"]


def test_double_dash_ends_the_flags_and_is_dropped() -> None:
    f, rest = cli.parse_flags(["-b", "B", "--", "-odd-id"], cli._CREATE, "create")
    assert f == {"bundle": "B"} and rest == ["-odd-id"]
    f2, rest2 = cli.parse_flags(["--", "--", "x"], cli._CREATE, "create")
    assert f2 == {} and rest2 == ["--", "x"]


def test_a_lone_dash_is_a_positional() -> None:
    f, rest = cli.parse_flags(["-", "--force"], cli._COMMANDS["delete"], "delete")
    assert f == {} and rest == ["-", "--force"]


def test_last_occurrence_wins() -> None:
    g, _ = cli.parse_flags(["--root", "/a", "--root=/b", "list"], cli._GLOBAL, "")
    assert g == {"root": "/b"}


@pytest.mark.parametrize("argv,table,message", [
    (["--bogus"], "create", "flag provided but not defined: -bogus"),
    (["-x", "ID"], "delete", "flag provided but not defined: -x"),
    (["--pid-file"], "create", "flag needs an argument: -pid-file"),
    (["-b"], "create", "flag needs an argument: -b"),
    (["--force=maybe", "c"], "delete", 'invalid boolean value "maybe" for -force'),
    (["--root"], "", "flag needs an argument: -root"),
    (["--systemd-cgroup=yes", "list"], "", 'invalid boolean value "yes" for -systemd-cgroup'),
])
def test_flag_errors(argv: list[str], table: str, message: str) -> None:
    with pytest.raises(UsageError) as e:
        cli.parse_flags(argv, cli._COMMANDS[table] if table else cli._GLOBAL, table)
    assert message in str(e.value)


def test_global_flags_are_not_command_flags() -> None:
    with pytest.raises(UsageError, match="flag provided but not defined: -root"):
        parse(["create", "--root", "/x", "c"])


def test_every_command_table_has_consistent_aliases() -> None:
    for name, table in cli._COMMANDS.items():
        keys: dict[str, bool] = {}
        for flag, (key, takes_value) in table.items():
            assert flag == flag.strip("-") and flag, (name, flag)
            assert keys.setdefault(key, takes_value) == takes_value, (name, flag)


@pytest.mark.parametrize("argv,flags,positional", [
    # runc 1.3 (urfave/cli v1 reorderArgs): a command's own flags may follow the container id
    (["delete", "c1", "--force"], {"force": True}, ["c1"]),
    (["kill", "c1", "KILL", "--all"], {"all": True}, ["c1", "KILL"]),
    (["create", "c1", "--bundle", "/b", "--pid-file=/p"], {"bundle": "/b", "pid_file": "/p"}, ["c1"]),
    (["run", "c1", "-d", "-b", "/b"], {"detach": True, "bundle": "/b"}, ["c1"]),
    # a bool flag takes the next non-flag along when moving it, and still does not consume it
    (["delete", "--force", "c1"], {"force": True}, ["c1"]),
    # unknown flags stay where they are (and so become positionals), as do arguments after --
    (["start", "c1", "--bogus"], {}, ["c1", "--bogus"]),
    (["kill", "--", "c1", "-9"], {}, ["c1", "-9"]),
])
def test_runc_reorders_command_flags_after_the_id(argv: list[str], flags: dict, positional: list[str]) -> None:
    _, _, f, pos = parse(argv)
    assert f == flags and pos == positional


def test_double_dash_after_the_id_is_dropped_as_runc_does() -> None:
    _, _, f, pos = parse(["kill", "c1", "--", "-9"])
    assert f == {} and pos == ["c1", "-9"]


def test_exec_and_ps_are_not_reordered() -> None:
    assert set(cli._NO_REORDER) == {"exec", "ps"}
    assert cli.reorder_args(["c1", "--force"], cli._COMMANDS["delete"]) == ["--force", "c1"]


def test_ps_flags_stop_at_the_id_and_the_rest_goes_to_ps() -> None:
    _, _, f, pos = parse(["ps", "--format", "json", "c1"])
    assert f == {"format": "json"} and pos == ["c1"]
    _, _, f, pos = parse(["ps", "-f", "table", "c1", "-eo", "pid,comm", "--format", "x", "-f"])
    assert f == {"format": "table"} and pos == ["c1", "-eo", "pid,comm", "--format", "x", "-f"]


def test_main_accepts_flags_after_the_id(capfd, tmp_path) -> None:
    # runc delete ID --force: an id that is not there is not an error with --force
    assert cli.main(["--root", str(tmp_path), "delete", "no-such-container", "--force"]) == 0
    assert cli.main(["--root", str(tmp_path), "delete", "no-such-container"]) == 1
    assert "container does not exist" in capfd.readouterr().err


# ---------------------------------------------------------------------------- main()'s early errors


@pytest.mark.parametrize("argv,message", [
    (["frobnicate"], "No help topic for 'frobnicate'"),
    (["create"], '"create" requires exactly 1 argument(s)'),
    (["start", "a", "b"], '"start" requires exactly 1 argument(s)'),
    (["kill"], '"kill" requires a minimum of 1 and a maximum of 2 argument(s)'),
    (["kill", "a", "9", "x"], '"kill" requires a minimum of 1 and a maximum of 2 argument(s)'),
    (["list", "extra"], '"list" requires exactly 0 argument(s)'),
    (["--rootless", "perhaps", "list"], 'invalid --rootless value "perhaps"'),
    (["--log-format", "xml", "list"], "invalid log-format: xml"),
    (["create", "--preserve-fds", "-1", "c"], 'invalid value "-1" for flag -preserve-fds'),
    (["checkpoint", "c"], '"checkpoint" is not implemented by pyrunc yet'),
    (["pause"], '"pause" requires exactly 1 argument(s)'),
    (["resume", "a", "b"], '"resume" requires exactly 1 argument(s)'),
    (["ps"], '"ps" requires a minimum of 1 argument(s)'),
    (["--bogus", "list"], "flag provided but not defined: -bogus"),
])
def test_main_reports_usage_errors_with_exit_status_1(capfd, tmp_path, argv: list[str], message: str) -> None:
    rc = cli.main(["--root", str(tmp_path / "state"), *argv])
    out, err = capfd.readouterr()
    assert rc == 1
    assert message in err.replace('\\"', '"')
    assert out == ""
    assert not (tmp_path / "state").exists()


def test_main_version_and_help(capfd) -> None:
    assert cli.main(["--version"]) == 0
    out = capfd.readouterr().out.splitlines()
    assert out[0] == f"pyrunc version {cli.VERSION}" and "spec: 1.3.0" in out
    for argv in (["--help"], ["-h"], ["help"], []):
        assert cli.main(argv) == 0
        assert "usage: pyrunc" in capfd.readouterr().out


def test_create_options_convert_types() -> None:
    args = cli.Args({"bundle": "/b", "preserve_fds": "3", "no_pivot": True, "pidfd_socket": "/s"}, ["c"])
    opts = cli._create_options(args)
    assert opts == {"bundle": "/b", "pid_file": None, "console_socket": None, "no_pivot": True,
                    "no_new_keyring": False, "preserve_fds": 3, "pidfd_socket": "/s"}
    assert cli._create_options(cli.Args({}, ["c"]))["bundle"] == "."


def test_go_runc_and_conmon_exec() -> None:
    # go-runc: "exec", "--process", P, "--detach", "--pid-file", F, id; conmon puts the pid file first
    _, cmd, f, pos = parse(["--root", "/r", "exec", "--process", "/tmp/p.json", "--detach", "--pid-file", "/p.pid",
                            "ctr1"])
    assert (cmd, f, pos) == ("exec", {"process": "/tmp/p.json", "detach": True, "pid_file": "/p.pid"}, ["ctr1"])
    _, _, f, pos = parse(["exec", "-e", "A=1", "--env=B=2", "-u", "1:2", "-g", "5", "--additional-gids", "6",
                          "--cap", "CAP_KILL", "-c", "CAP_CHOWN", "--cwd", "/tmp", "c1", "sh", "-c", "-e"])
    assert f == {"env": ["A=1", "B=2"], "user": "1:2", "additional_gids": ["5", "6"],
                 "cap": ["CAP_KILL", "CAP_CHOWN"], "cwd": "/tmp"}
    assert pos == ["c1", "sh", "-c", "-e"]
