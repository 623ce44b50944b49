"""argv -> API calls, with runc's command line: commands, flags, outputs and exit codes.

The parser is hand-written to copy urfave/cli v1, which runc uses and engines are
written against: global flags come before the command, ``--flag=value``,
``--flag value`` and ``-flag value`` are all accepted, and flag parsing stops at
the first positional argument (``exec [flags] ID cmd -x`` keeps ``-x``).
(``argparse`` would also cost ~8 ms of imports on every call.)
"""

from __future__ import annotations

import os
import sys

from . import jsonio, log
from .errors import ConfigError, PyruncError, UsageError

VERSION = "0.1.0"
SPEC_VERSION = "1.3.0"

# flag name -> (key, takes_value); aliases share a key.  "*" marks a repeatable flag.
_GLOBAL = {
    "root": ("root", True), "log": ("log", True), "log-format": ("log_format", True),
    "debug": ("debug", False), "systemd-cgroup": ("systemd_cgroup", False),
    "rootless": ("rootless", True), "criu": ("criu", True),
    "help": ("help", False), "h": ("help", False), "version": ("version", False), "v": ("version", False),
}
_CREATE = {
    "bundle": ("bundle", True), "b": ("bundle", True), "console-socket": ("console_socket", True),
    "pid-file": ("pid_file", True), "no-pivot": ("no_pivot", False),
    "no-new-keyring": ("no_new_keyring", False), "preserve-fds": ("preserve_fds", True),
    "pidfd-socket": ("pidfd_socket", True),
}
_COMMANDS: dict[str, dict[str, tuple[str, bool]]] = {
    "create": _CREATE,
    "run": {**_CREATE, "detach": ("detach", False), "d": ("detach", False), "keep": ("keep", False),
            "no-subreaper": ("no_subreaper", False)},
    "start": {},
    "state": {},
    "list": {"format": ("format", True), "f": ("format", True), "quiet": ("quiet", False), "q": ("quiet", False)},
    "kill": {"all": ("all", False), "a": ("all", False)},
    "delete": {"force": ("force", False), "f": ("force", False)},
    "features": {},
    "spec": {"bundle": ("bundle", True), "b": ("bundle", True), "rootless": ("rootless", False)},
    "validate": {"bundle": ("bundle", True), "b": ("bundle", True)},
    "pause": {},
    "resume": {},
    "ps": {"format": ("format", True), "f": ("format", True)},
    "update": {"r": ("resources", True), **{name: (name, True) for name in (
        "resources", "blkio-weight", "cpu-period", "cpu-quota", "cpu-burst", "cpu-share", "cpu-rt-period",
        "cpu-rt-runtime", "cpuset-cpus", "cpuset-mems", "kernel-memory", "kernel-memory-tcp", "memory",
        "cpu-idle", "memory-reservation", "memory-swap", "pids-limit", "l3-cache-schema", "mem-bw-schema")}},
    "events": {"stats": ("stats", False), "interval": ("interval", True)},
    "exec": {
        "process": ("process", True), "p": ("process", True), "detach": ("detach", False), "d": ("detach", False),
        "pid-file": ("pid_file", True), "cwd": ("cwd", True), "env": ("env*", True), "e": ("env*", True),
        "user": ("user", True), "u": ("user", True), "additional-gids": ("additional_gids*", True),
        "g": ("additional_gids*", True), "cap": ("cap*", True), "c": ("cap*", True),
        "no-new-privs": ("no_new_privs", False), "preserve-fds": ("preserve_fds", True),
        "ignore-paused": ("ignore_paused", False), "tty": ("tty", False), "t": ("tty", False),
        "console-socket": ("console_socket", True), "apparmor": ("apparmor", True),
        "process-label": ("process_label", True), "cgroup": ("cgroup*", True), "pidfd-socket": ("pidfd_socket", True),
    },
}
# Commands whose arguments after the id belong to the container's process (runc's SkipArgReorder).
_NO_REORDER = ("exec", "ps")
# runc commands that belong to later work: a clear message instead of a silent no-op.
_NOT_YET = ("checkpoint", "restore")

_USAGE = f"""pyrunc {VERSION}: an OCI runtime (runtime-spec {SPEC_VERSION}) with runc's command line

usage: pyrunc [global options] command [command options] [arguments...]

commands:
   create    create a container (it waits at the start gate)
   start     run the user process of a created container
   run       create and start a container
   state     print the state of a container as JSON
   list      list the containers in --root
   kill      send a signal to a container's init (default SIGTERM)
   delete    delete a container and everything it holds on the host
   pause     freeze every process of a container
   resume    thaw a paused container
   exec      run a new process in a running container (ID COMMAND [ARGS...] or --process FILE)
   ps        show the processes of a container (ID [ps options], default -ef)
   update    change a container's cgroup limits (--resources FILE|- or runc's flags)
   events    container statistics and OOM notifications as JSON lines (--stats, --interval)
   spec      write a default config.json
   features  the features this runtime implements, as runtime-spec JSON
   validate  check a bundle's config.json without running it

global options:
   --root DIR           state directory (default /run/pyrunc; rootless: $XDG_RUNTIME_DIR/pyrunc)
   --log FILE           log file (default stderr)
   --log-format FORMAT  text or json (default text)
   --debug              debug logging
   --systemd-cgroup     use the systemd cgroup driver (not supported yet)
   --rootless VALUE     true, false or auto (default auto)
   --version, -v        print the version
"""


class Args:
    """Parsed flags (by key) and positional arguments of one command."""

    def __init__(self, flags: dict[str, object], positional: list[str]) -> None:
        self.flags = flags
        self.positional = positional

    def get(self, key: str, default: object = None) -> object:
        return self.flags.get(key, default)


def reorder_args(argv: list[str], table: dict[str, tuple[str, bool]]) -> list[str]:
    """urfave/cli v1's reorderArgs: the command's known flags (with their values) move in front
    of the positional arguments, up to ``--``; so ``delete ID --force`` works as in runc."""
    flags: list[str] = []
    rest: list[str] = []
    value_may_follow = False
    for i, arg in enumerate(argv):
        known = arg.startswith("-") and arg.lstrip("-").partition("=")[0] in table
        if value_may_follow and not known:
            value_may_follow = False
            flags.append(arg)
        elif arg == "--":
            rest = ["--"] + rest + argv[i + 1:]  # urfave moves the delimiter to the front
            break
        elif known:
            name, eq, _ = arg.lstrip("-").partition("=")
            value_may_follow = table[name][1] and not eq
            flags.append(arg)
        else:
            rest.append(arg)
    return flags + rest


def parse_flags(argv: list[str], table: dict[str, tuple[str, bool]], where: str) -> tuple[dict, list[str]]:
    """Parse leading flags of ``argv`` by ``table``; return (flags, the rest from the first positional)."""
    flags: dict[str, object] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return flags, argv[i + 1:]
        if not arg.startswith("-") or arg == "-":
            break
        name, eq, value = arg.lstrip("-").partition("=")
        if name not in table:
            raise UsageError(f"flag provided but not defined: -{name}" + (f" (for {where})" if where else ""))
        key, takes_value = table[name]
        if takes_value:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: -{name}")
                value = argv[i]
            if key.endswith("*"):  # repeatable: every value, in order
                values = flags.setdefault(key[:-1], [])
                assert isinstance(values, list)
                values.append(value)
            else:
                flags[key] = value
        else:
            flags[key] = _parse_bool(name, value) if eq else True
        i += 1
    return flags, argv[i:]


def _parse_bool(name: str, value: str) -> bool:
    """Go's strconv.ParseBool."""
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise UsageError(f'invalid boolean value "{value}" for -{name}')


def _need(args: Args, command: str, count: int, at_least: bool = False) -> None:
    n = len(args.positional)
    if n < count or (n > count and not at_least):
        kind = "a minimum of" if at_least else "exactly"
        raise UsageError(f'"{command}" requires {kind} {count} argument(s)')


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logger = log.Logger()
    try:
        gflags, rest = parse_flags(argv, _GLOBAL, "")
        logger.configure(gflags.get("log"), str(gflags.get("log_format", "text")), bool(gflags.get("debug")))
        if gflags.get("version"):
            print(f"pyrunc version {VERSION}\nspec: {SPEC_VERSION}\npython: {sys.version.split()[0]}")
            return 0
        if gflags.get("help") or not rest or rest[0] in ("help", "h"):
            print(_USAGE, end="")
            return 0
        command, cargv = rest[0], rest[1:]
        if command in _NOT_YET:
            raise UsageError(f'"{command}" is not implemented by pyrunc yet')
        if command not in _COMMANDS:
            raise UsageError(f"No help topic for '{command}'")
        rootless = str(gflags.get("rootless", "auto"))
        if rootless not in ("true", "false", "auto"):
            raise UsageError(f'invalid --rootless value "{rootless}": use true, false or auto')
        if command not in _NO_REORDER:
            cargv = reorder_args(cargv, _COMMANDS[command])
        flags, positional = parse_flags(cargv, _COMMANDS[command], command)
        args = Args(flags, positional)
        return _dispatch(command, args, gflags, logger)
    except PyruncError as e:
        logger.fatal(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        return 130


def run() -> None:
    """Entry point of the launcher: main(), then exit without the interpreter's teardown
    (nothing of ours needs it once stdout and stderr are flushed; it costs 1-2 ms)."""
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # e.g. the reader of our stdout went away
        code = code or 1
    os._exit(code)


def _runtime(gflags: dict, logger: log.Logger):  # type: ignore[no-untyped-def]
    from .container import Runtime
    return Runtime(root=state_root(gflags), warn=logger.warn, debug=bool(gflags.get("debug")),
                   rootless=str(gflags.get("rootless", "auto")))


def state_root(gflags: dict) -> str:
    """--root, made absolute (runc's reviseRootDir), or the default: /run/pyrunc, or
    $XDG_RUNTIME_DIR/pyrunc for a rootless user (made 0700 + sticky, as runc does; see rootless.py)."""
    root = gflags.get("root")
    if root is None:
        from .rootless import default_root, make_xdg_root
        path, xdg = default_root()
        if xdg:
            make_xdg_root(path)
        return path
    path = os.path.abspath(str(root))
    if path == "/":
        raise UsageError("Option --root argument should not be set to /")
    return path


def _dispatch(command: str, args: Args, gflags: dict, logger: log.Logger) -> int:
    if command == "spec":
        return _cmd_spec(args)
    if command == "features":
        _need(args, command, 0)
        from .features import features
        print(jsonio.dumps_pretty(features(VERSION, SPEC_VERSION), "    "))  # runc: MarshalIndent, 4 spaces
        return 0
    if command == "validate":
        return _cmd_validate(args)
    rt = _runtime(gflags, logger)
    if command in ("create", "run"):
        _need(args, command, 1)
        if gflags.get("systemd_cgroup"):
            raise UsageError("--systemd-cgroup: the systemd cgroup driver is not supported by pyrunc yet")
        options = _create_options(args)
        if command == "create":
            rt.create(args.positional[0], **options)
            return 0
        return rt.run(args.positional[0], detach=bool(args.get("detach")), keep=bool(args.get("keep")),  # type: ignore[no-any-return]
                      no_subreaper=bool(args.get("no_subreaper")), **options)
    if command == "list":
        _need(args, command, 0)
        return _cmd_list(rt, args)
    if command == "kill":
        if not 1 <= len(args.positional) <= 2:
            raise UsageError('"kill" requires a minimum of 1 and a maximum of 2 argument(s)')
        from .signals import parse_signal
        signum = parse_signal(args.positional[1] if len(args.positional) > 1 else "SIGTERM")
        rt.get(args.positional[0]).kill(signum, all_processes=bool(args.get("all")))
        return 0
    if command == "ps":
        _need(args, command, 1, at_least=True)
        return _cmd_ps(rt, args)
    if command == "exec":
        _need(args, command, 1, at_least=True)
        return _cmd_exec(rt, args)
    _need(args, command, 1)
    cid = args.positional[0]
    if command == "start":
        rt.get(cid).start()
    elif command == "state":
        sys.stdout.write(jsonio.dumps_pretty(rt.get(cid).state()))
    elif command == "delete":
        _cmd_delete(rt, cid, bool(args.get("force")))
    elif command == "pause":
        rt.get(cid).pause()
    elif command == "resume":
        rt.get(cid).resume()
    elif command == "update":
        _cmd_update(rt, cid, args, logger)
    elif command == "events":
        from . import events
        interval = events.parse_duration(str(args.get("interval", "5s")))
        return events.run(rt.get(cid), interval, bool(args.get("stats")))
    return 0


def _cmd_update(rt, cid: str, args: Args, logger: log.Logger) -> None:  # type: ignore[no-untyped-def]
    """runc update: ``--resources FILE|-`` (then the other flags are ignored) or the flags."""
    from . import update
    container = rt.get(cid)
    source = str(args.get("resources") or "")
    update.check_intel_rdt(args.flags)
    if source:
        try:
            if source == "-":
                data = sys.stdin.buffer.read()
            else:
                with open(source, "rb") as f:
                    data = f.read()
        except OSError as e:
            raise PyruncError(f"open {source}: {e.strerror}") from None
        resources = update.load_resources(source, data)
    else:
        resources = update.resources_from_flags(args.flags, logger.warn)
    container.update(resources)


def _create_options(args: Args) -> dict:
    preserve = str(args.get("preserve_fds", "0"))
    if not preserve.isdigit():
        raise UsageError(f'invalid value "{preserve}" for flag -preserve-fds')
    return {
        "bundle": str(args.get("bundle") or "."), "pid_file": args.get("pid_file"),
        "console_socket": args.get("console_socket"), "no_pivot": bool(args.get("no_pivot")),
        "no_new_keyring": bool(args.get("no_new_keyring")), "preserve_fds": int(preserve),
        "pidfd_socket": args.get("pidfd_socket"),
    }


def _cmd_exec(rt, args: Args) -> int:  # type: ignore[no-untyped-def]
    """runc exec: the process from --process FILE, or the container's own overridden by the flags
    and COMMAND ARGS.  The process's exit status is ours; a failure to run it exits 255 (runc)."""
    from . import execproc

    preserve = str(args.get("preserve_fds", "0"))
    if not preserve.isdigit():
        raise UsageError(f'invalid value "{preserve}" for flag -preserve-fds')
    cid, command = args.positional[0], args.positional[1:]
    try:
        sub_cgroup = None
        if args.get("cgroup"):
            from .cgroups.base import parse_sub_cgroups
            sub_cgroup = parse_sub_cgroups([str(v) for v in args.get("cgroup", [])])  # type: ignore[attr-defined]
        container = rt.get(cid)
        path = str(args.get("process") or "")
        if path:
            process = execproc.from_file(path)
        else:
            if not command:
                raise PyruncError("process args cannot be empty")
            def strings(key: str) -> list[str]:
                return [str(v) for v in args.get(key, [])]  # type: ignore[attr-defined]

            process = execproc.from_flags(
                container.entry.read_config().get("process") or {}, command, cwd=str(args.get("cwd") or ""),
                env=strings("env"), user=str(args.get("user") or ""), additional_gids=strings("additional_gids"),
                caps=strings("cap"), no_new_privs=bool(args.get("no_new_privs")), tty=bool(args.get("tty")),
                apparmor=str(args.get("apparmor") or ""), process_label=str(args.get("process_label") or ""))
        pid_file = str(args.get("pid_file") or "") or None
        return container.exec(process, detach=bool(args.get("detach")), pid_file=pid_file,  # type: ignore[no-any-return]
                              preserve_fds=int(preserve), ignore_paused=bool(args.get("ignore_paused")),
                              console_socket=str(args.get("console_socket") or "") or None,
                              pidfd_socket=str(args.get("pidfd_socket") or "") or None, sub_cgroup=sub_cgroup)
    except PyruncError as e:
        e.exit_code = 255  # runc: fatalWithCode(fmt.Errorf("exec failed: %w", err), 255)
        raise


def _cmd_delete(rt, cid: str, force: bool) -> None:  # type: ignore[no-untyped-def]
    from .errors import ContainerNotExistError
    try:
        rt.get(cid).delete(force=force)
    except ContainerNotExistError:
        if not force:
            raise  # runc: with --force, a container that is already gone is not an error
        rt.store.remove_orphan(cid)


def _cmd_ps(rt, args: Args) -> int:  # type: ignore[no-untyped-def]
    """runc's ps: the container's host pids as JSON, or the host's ``ps`` (default ``-ef``)
    output cut down to the header and the lines whose PID column is one of them."""
    pids = rt.get(args.positional[0]).processes()
    fmt = str(args.get("format", "table"))
    if fmt == "json":
        print(jsonio.dumps(pids or None))  # Go encodes runc's empty (nil) slice as null
        return 0
    if fmt != "table":
        raise PyruncError("invalid format option")
    import subprocess

    ps_args = args.positional[1:] or ["-ef"]
    try:
        p = subprocess.run(["ps", *ps_args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, check=False)
    except OSError as e:
        raise PyruncError(f'exec: "ps": {e.strerror}') from None
    output = p.stdout.decode(errors="replace")
    if p.returncode != 0:
        raise PyruncError(f"exit status {p.returncode}: {output}")
    lines = output.split("\n")
    titles = lines[0].split()
    if "PID" not in titles:
        raise PyruncError("couldn't find PID field in ps output")
    index = titles.index("PID")
    wanted = set(pids)
    out = [lines[0]]
    for line in lines[1:]:
        if not line:
            continue
        fields = line.split()
        try:
            pid = int(fields[index])
        except (IndexError, ValueError):
            raise PyruncError(f"unable to parse pid: {line!r}") from None
        if pid in wanted:
            out.append(line)
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def _cmd_list(rt, args: Args) -> int:  # type: ignore[no-untyped-def]
    containers = rt.list()
    if args.get("quiet"):
        for c in containers:
            print(c.id)
        return 0
    fmt = str(args.get("format", "table"))
    if fmt == "json":
        rows = []
        for c in containers:
            row = c.state()
            row["owner"] = c.owner_name()
            rows.append(row)
        print(jsonio.dumps(rows or None))
        return 0
    if fmt != "table":
        raise UsageError(f"invalid format option: {fmt}")
    table = [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]]
    for c in containers:
        st = c.state()
        table.append([c.id, str(st["pid"]), st["status"], st["bundle"], st["created"], c.owner_name()])
    sys.stdout.write(tabwrite(table))
    return 0


def tabwrite(rows: list[list[str]], minwidth: int = 12, padding: int = 3) -> str:
    """Go's text/tabwriter as runc configures it (minwidth 12, padding 3, last column free)."""
    widths = [max(minwidth, max(len(r[i]) for r in rows) + padding) for i in range(len(rows[0]) - 1)]
    return "".join("".join(cell.ljust(w) for cell, w in zip(r, widths)) + r[-1] + "\n" for r in rows)


def _cmd_spec(args: Args) -> int:
    from .spec_default import default_spec, rootless_spec
    _need(args, "spec", 0)
    bundle = str(args.get("bundle") or ".")
    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise PyruncError("File config.json exists. Remove it first.")
    doc = rootless_spec() if args.get("rootless") else default_spec()
    with open(path, "w") as f:
        f.write(jsonio.dumps_pretty(doc, "\t"))
    return 0


def _cmd_validate(args: Args) -> int:
    from .config import load_bundle
    _need(args, "validate", 0)
    bundle = str(args.get("bundle") or ".")
    try:
        load_bundle(bundle)
    except ConfigError as e:
        for line in str(e).splitlines():
            print(line, file=sys.stderr)
        return 1
    print(f"{os.path.join(bundle, 'config.json')}: valid (runtime-spec {SPEC_VERSION})")
    return 0
