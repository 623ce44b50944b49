"""python -m conformance --runtime CMD [--runtime CMD2 ...]: run every check on every runtime,
print TAP, a table (one column per runtime) and one closing line per runtime."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import IO

from . import checks  # noqa: F401 - registers the checks
from .harness import REGISTRY, Check, Ctx, Fail, Options, Runtime, Session, Skip, sweep_cgroups

PASS, FAIL, SKIP = "pass", "FAIL", "skip"


def slugify(row: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", row.lower()).strip("-")[:24]


def run_one(rt: Runtime, session: Session, chk: Check) -> tuple[str, str]:
    ctx = Ctx(rt, session, slugify(chk.row))
    status, note = PASS, ""
    try:
        note = chk.fn(ctx) or ""
    except Skip as e:
        status, note = SKIP, str(e)
    except Fail as e:
        status, note = FAIL, str(e)
    except Exception as e:  # noqa: BLE001 - a crash in a check is its failure, with the trace
        status, note = FAIL, f"check crashed: {e!r} {traceback.format_exc(limit=3)[-400:]}"
    finally:
        problems = ctx.cleanup()
    if problems and status != FAIL:
        status, note = FAIL, "cleanup: " + "; ".join(problems)
    return status, " ".join(note.split())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m conformance",
                                description="OCI runtime-spec v1.3.0 (Linux) conformance checks, runtime-agnostic.")
    p.add_argument("--runtime", action="append", required=True, metavar="CMD",
                   help="runtime command line with its global flags, e.g. 'runc --root /tmp/r' (repeatable)")
    p.add_argument("--name", action="append", default=[], help="column name for the runtime of the same rank")
    p.add_argument("--tap", metavar="FILE", help="write TAP to FILE instead of stdout")
    p.add_argument("--oci-version", default=Options.oci_version,
                   help="ociVersion written in bundles (default %(default)s; Debian's crun 1.8 wants 1.0.2)")
    p.add_argument("--id-prefix", default=Options.id_prefix, help="container ids start with this")
    p.add_argument("-j", "--jobs", type=int, default=8, help="checks run at once per runtime (default 8)")
    p.add_argument("-k", "--filter", default="", help="only checks whose row matches this regex")
    p.add_argument("--list", action="store_true", help="list the checks and exit")
    ns = p.parse_args(argv)

    checks_ = [c for c in REGISTRY if re.search(ns.filter, c.row)]
    if ns.list:
        for c in checks_:
            print(f"{c.row}\t{c.ref}")
        return 0
    if os.geteuid() != 0:
        print("conformance: run as root (real containers)", file=sys.stderr)
        return 2
    runtimes = [Runtime(cmd, ns.name[i] if i < len(ns.name) else None) for i, cmd in enumerate(ns.runtime)]
    opts = Options(oci_version=ns.oci_version, id_prefix=ns.id_prefix)
    tap: IO[str] = open(ns.tap, "w") if ns.tap else sys.stdout  # noqa: SIM115
    results: dict[str, dict[str, tuple[str, str]]] = {}
    session = Session(opts)
    n = 0
    print("TAP version 13", file=tap)
    print(f"1..{len(checks_) * len(runtimes)}", file=tap, flush=True)
    try:
        for rt in runtimes:
            t0 = time.monotonic()
            with ThreadPoolExecutor(max_workers=max(1, ns.jobs)) as pool:
                futs = [(c, pool.submit(run_one, rt, session, c)) for c in checks_]
                res: dict[str, tuple[str, str]] = {}
                for c, f in futs:
                    status, note = f.result()
                    res[c.row] = (status, note)
                    n += 1
                    ok = "not ok" if status == FAIL else "ok"
                    line = f"{ok} {n} - {rt.name}: {c.row}"
                    if status == SKIP:
                        line += f" # SKIP {note}"
                    elif status == PASS and note:
                        line += f" # {note}"
                    print(line, file=tap)
                    if status == FAIL:
                        print(f"  ---\n  message: {note!r}\n  spec: {c.ref}\n  ...", file=tap)
                    tap.flush()
            results[rt.name] = res
            print(f"# {rt.name}: {time.monotonic() - t0:.1f}s", file=tap, flush=True)
            left = sweep_cgroups(opts.id_prefix)
            if left:
                print(f"# {rt.name}: removed cgroups the runtime left behind: {left}", file=tap, flush=True)
    finally:
        session.close()
        if ns.tap:
            tap.close()

    # the table
    names = [rt.name for rt in runtimes]
    w = max(len(c.row) for c in checks_) + 2
    cw = max(6, *(len(x) + 2 for x in names))
    print()
    print("field or rule".ljust(w) + "".join(x.ljust(cw) for x in names))
    print("-" * (w + cw * len(names)))
    for c in checks_:
        print(c.row.ljust(w) + "".join(results[x][c.row][0].ljust(cw) for x in names))
    print()
    for x in names:
        counts = [sum(1 for s, _ in results[x].values() if s == k) for k in (PASS, FAIL, SKIP)]
        print(f"{x}: {counts[0]} passed, {counts[1]} failed, {counts[2]} skipped")
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.flush()
    first = results[names[0]]
    return 1 if any(s == FAIL for s, _ in first.values()) else 0
