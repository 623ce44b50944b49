#!/usr/bin/env python3
"""Benchmark OCI runtimes' command latency, interleaved, against the same bundle.

    .venv/bin/python hack/bench.py [--runtime NAME=CMD ...] [--skip NAME] [-n 20] [--json FILE]

Runtimes: pyrunc=<repo>/.venv/bin/pyrunc and runc=runc by default; --runtime adds one
or replaces one of the same name (CMD is split with shlex and may carry global
flags, e.g. --runtime 'pyrunc-dbg=.venv/bin/pyrunc --debug'); --skip drops one.
Each runtime gets its own temporary --root. A runtime that is missing or fails a
smoke test (`run` of /bin/true) is skipped with a note.

Per iteration and runtime (the runtimes take turns, A B / B A / ..., so drift hits
all alike):
  run        wall time of `run` of a container whose process is /bin/true
  create, start, state, kill (KILL), delete
             the split lifecycle of a container running `sleep 100`
             (after kill, the wait until it is stopped is not timed)
  lifecycle  the sum of those five
Reports median and p90 (ms) per runtime and operation, and the ratio of medians
to runc. Every container made is deleted (--force) at the end, also on errors
and Ctrl-C, and the temporary directories are removed.

Stdlib only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import threading
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OPS_LIFECYCLE = ["create", "start", "state", "kill", "delete"]
OPS = ["run"] + OPS_LIFECYCLE + ["lifecycle"]
OP_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


def load_mkbundle():
    path = Path(__file__).resolve().parent / "mkbundle.py"
    spec = importlib.util.spec_from_file_location("pyrunc_hack_mkbundle", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run_blocking(argv: list[str], out, err, timeout: float):
    """Run and wait with a blocking waitpid. subprocess's own timeout polls with sleeps
    that grow to 50 ms, which would round every measurement up to its steps; a timer
    thread enforces the timeout instead."""
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        p.kill()

    timer = threading.Timer(timeout, expire)
    timer.start()
    try:
        rc = p.wait()
    finally:
        timer.cancel()
    return "timeout" if expired.is_set() else rc


class OpFailed(Exception):
    def __init__(self, runtime, op, argv, rc, out, err):
        self.runtime, self.op, self.argv, self.rc, self.out, self.err = runtime, op, argv, rc, out, err
        tail = (err or out or "").strip().splitlines()[-5:]
        super().__init__(f"{runtime}: {op} failed (rc={rc}): {shlex.join(argv)}"
                         + ("\n    " + "\n    ".join(tail) if tail else ""))


class Runtime:
    def __init__(self, name: str, cmd: list[str], workdir: Path):
        self.name = name
        self.cmd = cmd
        self.safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        self.root = workdir / f"root-{self.safe}"
        self.out_path = workdir / f"out-{self.safe}"
        self.err_path = workdir / f"err-{self.safe}"
        self.pending: set[str] = set()  # container ids that may exist
        self.samples: dict[str, list[float]] = {op: [] for op in OPS}
        self.note = ""      # why it was skipped / stopped
        self.active = True
        self.version = ""

    def argv(self, *args: str) -> list[str]:
        return self.cmd + ["--root", str(self.root), *args]

    def call(self, op: str, *args: str, timeout: float = OP_TIMEOUT, check: bool = True):
        """Run one runtime command; returns (seconds, stdout). Stdio goes to files, not
        pipes: a detached container inherits them and would hold a pipe open."""
        argv = self.argv(*args)
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            t0 = time.perf_counter()
            try:
                rc = _run_blocking(argv, out, err, timeout)
            except OSError as e:
                rc = f"{type(e).__name__}: {e}"
            dt = time.perf_counter() - t0
        so = self.out_path.read_text(errors="replace")
        se = self.err_path.read_text(errors="replace")
        if check and rc != 0:
            raise OpFailed(self.name, op, argv, rc, so, se)
        return dt, so, rc

    def status(self, cid: str) -> str | None:
        _, out, rc = self.call("state", "state", cid, check=False)
        if rc != 0:
            return None
        try:
            return json.loads(out).get("status")
        except ValueError:
            return None

    def cleanup(self) -> list[str]:
        """delete --force everything this runtime may still have; returns leftovers."""
        ids = set(self.pending)
        if self.root.is_dir():
            ids.update(p.name for p in self.root.iterdir() if p.is_dir())
            _, out, rc = self.call("list", "list", "-q", timeout=30, check=False)
            if rc == 0:
                ids.update(line.strip() for line in out.splitlines() if line.strip())
        left = []
        for cid in sorted(ids):
            if not re.fullmatch(r"[A-Za-z0-9_.+-]+", cid):
                continue
            self.call("delete", "delete", "--force", cid, timeout=30, check=False)
            if self.status(cid) is not None:
                left.append(cid)
        self.pending.clear()
        return left


def wait_stopped(rt: Runtime, cid: str) -> None:
    deadline = time.monotonic() + STOP_TIMEOUT
    delay = 0.002
    while True:
        st = rt.status(cid)
        if st == "stopped":
            return
        if time.monotonic() > deadline:
            raise OpFailed(rt.name, "kill", rt.argv("state", cid), f"still {st!r} after {STOP_TIMEOUT}s",
                           "", "")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def one_iteration(rt: Runtime, tag: str, bundles: dict[str, Path], record: bool) -> None:
    # (a) run /bin/true
    cid = f"bench-{os.getpid()}-{rt.safe}-{tag}-run"
    rt.pending.add(cid)
    dt, _, _ = rt.call("run", "run", "--bundle", str(bundles["true"]), cid)
    if record:
        rt.samples["run"].append(dt)
    if rt.status(cid) is None:  # `run` removes its container when it ends
        rt.pending.discard(cid)

    # (b) create / start / state / kill / delete of `sleep 100`
    cid = f"bench-{os.getpid()}-{rt.safe}-{tag}-life"
    t = {}
    rt.pending.add(cid)
    t["create"], _, _ = rt.call("create", "create", "--bundle", str(bundles["sleep"]), cid)
    t["start"], _, _ = rt.call("start", "start", cid)
    t["state"], out, _ = rt.call("state", "state", cid)
    try:
        status = json.loads(out).get("status")
    except ValueError:
        status = f"unparsable state output {out[:200]!r}"
    if status != "running":
        raise OpFailed(rt.name, "state", rt.argv("state", cid), f"status {status!r}, not 'running'", out, "")
    t["kill"], _, _ = rt.call("kill", "kill", cid, "KILL")
    wait_stopped(rt, cid)
    t["delete"], _, _ = rt.call("delete", "delete", cid)
    rt.pending.discard(cid)
    if record:
        for op, v in t.items():
            rt.samples[op].append(v)
        rt.samples["lifecycle"].append(sum(t.values()))


def smoke(rt: Runtime, bundles: dict[str, Path]) -> str:
    """'' if the runtime can run /bin/true, else why not."""
    exe = shutil.which(rt.cmd[0])
    if not exe:
        return f"{rt.cmd[0]!r} not found"
    _, out, rc = rt.call("version", "--version", check=False, timeout=30)
    rt.version = (out.strip().splitlines() or [""])[0]
    cid = f"bench-{os.getpid()}-{rt.safe}-smoke"
    rt.pending.add(cid)
    try:
        rt.call("run", "run", "--bundle", str(bundles["true"]), cid)
    except OpFailed as e:
        return str(e)
    return ""


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def summarize(runtimes: list[Runtime], baseline: str) -> dict:
    base = next((r for r in runtimes if r.name == baseline and r.samples["run"]), None)
    res = {}
    for rt in runtimes:
        ops = {}
        for op in OPS:
            v = rt.samples[op]
            if not v:
                continue
            med = statistics.median(v) * 1000
            d = {"n": len(v), "median_ms": round(med, 3), "p90_ms": round(pct(v, 90) * 1000, 3),
                 "min_ms": round(min(v) * 1000, 3), "samples_ms": [round(x * 1000, 3) for x in v]}
            if base is not None and base.samples[op]:
                d[f"ratio_to_{baseline}"] = round(med / (statistics.median(base.samples[op]) * 1000), 3)
            ops[op] = d
        res[rt.name] = {"cmd": rt.cmd, "version": rt.version, "ops": ops,
                        "measured": bool(ops), "note": rt.note or None}
    return res


def print_table(summary: dict, baseline: str, n: int, out=sys.stdout) -> None:
    names = [n_ for n_, d in summary.items() if d["ops"]]
    print(f"\n{n} iterations, interleaved; times in ms (wall time of each runtime command)", file=out)
    hdr = f"{'operation':<10} {'runtime':<12} {'median':>9} {'p90':>9} {'x' + baseline:>9}"
    print(hdr, file=out)
    print("-" * len(hdr), file=out)
    for op in OPS:
        for name in names:
            d = summary[name]["ops"].get(op)
            if not d:
                continue
            r = d.get(f"ratio_to_{baseline}")
            rs = f"{r:.2f}" if r is not None else "-"
            print(f"{op:<10} {name:<12} {d['median_ms']:>9.2f} {d['p90_ms']:>9.2f} {rs:>9}", file=out)
        if len(names) > 1:
            print(file=out)
    for name, d in summary.items():
        if d["note"]:
            print(f"note: {name}: {d['note']}", file=out)


def parse_runtimes(specs: list[str], skip: list[str]) -> dict[str, list[str]]:
    rts: dict[str, list[str]] = {"pyrunc": [str(REPO / ".venv/bin/pyrunc")], "runc": ["runc"]}
    for s in specs:
        name, eq, cmd = s.partition("=")
        if not eq or not name or not cmd.strip():
            raise SystemExit(f"bench.py: --runtime wants NAME=CMD, got {s!r}")
        rts[name] = shlex.split(cmd)
    for name in skip:
        rts.pop(name, None)
    return rts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:-1]))
    ap.add_argument("--runtime", action="append", default=[], metavar="NAME=CMD",
                    help="add (or replace) a runtime; repeatable")
    ap.add_argument("--skip", action="append", default=[], metavar="NAME", help="drop a default runtime")
    ap.add_argument("-n", type=int, default=20, help="iterations (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed iterations first (default %(default)s)")
    ap.add_argument("--baseline", default="runc", help="ratios are to this runtime (default %(default)s)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--oci-version", metavar="V",
                    help="ociVersion of the bench bundle (default: mkbundle's; crun 1.8 wants 1.0.x/1.1.x)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    a = ap.parse_args(argv)
    if a.n < 1:
        ap.error("-n must be >= 1")
    if os.geteuid() != 0:
        print("bench.py: needs root (the runtimes do)", file=sys.stderr)
        return 1

    def on_term(signum, frame):
        raise KeyboardInterrupt
    # Explicitly: a background job inherits SIGINT ignored, and Ctrl-C/kill -INT must clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    def progress(msg):
        if not a.quiet:
            print(msg, file=sys.stderr, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="pyrunc-bench."))
    runtimes: list[Runtime] = []
    rc = 0
    try:
        mk = load_mkbundle()
        bundles = {"true": workdir / "bundle"}
        extra = {"oci_version": a.oci_version} if a.oci_version else {}
        cfg = mk.make_bundle(bundles["true"], args=["/bin/true"], hostname="bench", **extra)
        # Same rootfs, second config: the long-running process for the lifecycle.
        bundles["sleep"] = workdir / "bundle-sleep"
        bundles["sleep"].mkdir()
        cfg = json.loads(json.dumps(cfg))
        cfg["process"]["args"] = ["sleep", "100"]
        cfg["root"]["path"] = str(bundles["true"] / "rootfs")
        mk.write_config(bundles["sleep"], cfg)

        for name, cmd in parse_runtimes(a.runtime, a.skip).items():
            rt = Runtime(name, cmd, workdir)
            runtimes.append(rt)
            rt.root.mkdir()
            why = smoke(rt, bundles)
            if why:
                rt.active = False
                rt.note = "skipped: " + why.replace("\n", "\n  ")
                progress(f"bench.py: {name}: {rt.note}")
        active = [r for r in runtimes if r.active]
        if not active:
            print("bench.py: no runtime passed the smoke test", file=sys.stderr)
            rc = 1
        total = a.warmup + a.n
        for i in range(total):
            record = i >= a.warmup
            k = i % max(1, len(active))
            for rt in active[k:] + active[:k]:
                if not rt.active:
                    continue
                try:
                    one_iteration(rt, str(i), bundles, record)
                except OpFailed as e:
                    rt.active = False
                    rt.note = f"stopped at iteration {i}: {e}"
                    progress(f"bench.py: {rt.note}")
                    rc = 1
            if not a.quiet and (i + 1) % 5 == 0:
                progress(f"bench.py: {i + 1}/{total} iterations")
            active = [r for r in active if r.active]

        summary = summarize(runtimes, a.baseline)
        print_table(summary, a.baseline, a.n)
        if a.json:
            doc = {"iterations": a.n, "warmup": a.warmup, "baseline": a.baseline,
                   "host": {"kernel": platform.release(), "cpus": os.cpu_count(),
                            "python": platform.python_version()},
                   "runtimes": summary}
            Path(a.json).write_text(json.dumps(doc, indent=2) + "\n")
    except KeyboardInterrupt:
        print("\nbench.py: interrupted, cleaning up", file=sys.stderr)
        rc = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for rt in runtimes:
            try:
                left = rt.cleanup()
            except Exception as e:  # keep cleaning the others
                left = [f"({e})"]
            if left:
                print(f"bench.py: WARNING: {rt.name}: could not delete {' '.join(left)} "
                      f"(root {rt.root} kept)", file=sys.stderr)
                rc = rc or 1
                workdir = None  # keep the state dirs for a manual clean-up
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
