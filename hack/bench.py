#!/usr/bin/env python3
"""Benchmark OCI runtimes side by side, interleaved, against the same bundle.

    hack/bench [--runtime NAME=CMD ...] [--skip NAME] [-n 20] [--batch 50] [--no-memory]
               [--no-min-limit] [--json FILE]

Runtimes: pyrunc=<repo>/.venv/bin/pyrunc, runc=runc and crun by default; --runtime adds
one or replaces one of the same name (CMD is split with shlex and may carry global
flags, e.g. --runtime 'pyrunc-dbg=.venv/bin/pyrunc --debug'); --skip drops one.
crun 1.8 refuses hybrid cgroup hosts, so on one it runs through conformance/hide-cgroup2
(a private mount namespace with the cgroup2 mount hidden; its cost is measured and printed).
Each runtime gets its own temporary --root. A runtime that is missing or fails a
smoke test (`run` of /bin/true) is skipped with a note. The bundle's ociVersion is
1.0.2, which every runtime here accepts (crun 1.8 refuses 1.3.0).

Per iteration and runtime (the runtimes take turns, A B C / B C A / ..., so drift
hits all alike):
  run        wall time of `run` of a container whose process is /bin/true
  create, start, state, exec (`exec ID true`), kill (KILL), delete
             the split lifecycle of a container running `sleep 100`
             (after kill, the wait until it is stopped is not timed)
  lifecycle  the sum of those six
Once per runtime, after the latency rounds:
  batch      --batch containers created and started in a row (total and per container)
  memory     RSS and PSS of every process the container has on the host, created but
             not started, and running `sleep`
  min-limit  the smallest linux.resources.memory.limit under which `run true` still
             succeeds (bisected down from 64 MiB to 64 KiB steps)
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
OPS_LIFECYCLE = ["create", "start", "state", "exec", "kill", "delete"]
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
    t["exec"], _, _ = rt.call("exec", "exec", cid, "true")
    t["kill"], _, _ = rt.call("kill", "kill", cid, "KILL")
    wait_stopped(rt, cid)
    t["delete"], _, _ = rt.call("delete", "delete", cid)
    rt.pending.discard(cid)
    if record:
        for op, v in t.items():
            rt.samples[op].append(v)
        rt.samples["lifecycle"].append(sum(t.values()))


# ---------------------------------------------------------------------------- once per runtime


def batch(rt: Runtime, bundles: dict[str, Path], count: int) -> dict:
    """``count`` containers created and started in a row (wall time), then deleted (untimed)."""
    ids = [f"bench-{os.getpid()}-{rt.safe}-batch{i}" for i in range(count)]
    t0 = time.perf_counter()
    for cid in ids:
        rt.pending.add(cid)
        rt.call("create", "create", "--bundle", str(bundles["sleep"]), cid)
        rt.call("start", "start", cid)
    total = time.perf_counter() - t0
    for cid in ids:
        rt.call("delete", "delete", "--force", cid)
        rt.pending.discard(cid)
    return {"count": count, "total_ms": round(total * 1000, 1), "per_container_ms": round(total * 1000 / count, 2)}


def _pid_namespace_members(pid: int) -> list[int]:
    """Every host process in the PID namespace of ``pid`` (the container's processes)."""
    want = os.stat(f"/proc/{pid}/ns/pid").st_ino
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}/ns/pid").st_ino == want:
                    out.append(int(name))
            except OSError:
                continue
    return out


def _rss_pss_kib(pids: list[int]) -> tuple[int, int]:
    rss = pss = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            if key == "Rss":
                rss += int(rest.split()[0])
            elif key == "Pss":
                pss += int(rest.split()[0])
    return rss, pss


def memory(rt: Runtime, bundles: dict[str, Path]) -> dict:
    """RSS/PSS (KiB) of what a container leaves on the host: created (the runtime's process
    waiting at the start gate), and running `sleep` (the same for every runtime, a check)."""
    cid = f"bench-{os.getpid()}-{rt.safe}-mem"
    rt.pending.add(cid)
    rt.call("create", "create", "--bundle", str(bundles["sleep"]), cid)
    out = {}
    try:
        pid = json.loads(rt.call("state", "state", cid)[1])["pid"]
        pids = _pid_namespace_members(pid)
        out["created_rss_kib"], out["created_pss_kib"] = _rss_pss_kib(pids)
        out["created_processes"] = len(pids)
        rt.call("start", "start", cid)
        time.sleep(0.2)
        pids = _pid_namespace_members(pid)
        out["running_rss_kib"], out["running_pss_kib"] = _rss_pss_kib(pids)
    finally:
        rt.call("delete", "delete", "--force", cid, check=False)
        rt.pending.discard(cid)
    return out


def min_memory_limit(rt: Runtime, workdir: Path, base_cfg: dict, rootfs: Path) -> dict:
    """The smallest linux.resources.memory.limit (64 KiB steps) under which `run true` succeeds."""
    step = 64 << 10
    bundle = workdir / f"bundle-limit-{rt.safe}"
    bundle.mkdir(exist_ok=True)
    tries = []

    def ok(limit: int) -> bool:
        cfg = json.loads(json.dumps(base_cfg))
        cfg["root"]["path"] = str(rootfs)
        cfg["linux"].setdefault("resources", {})["memory"] = {"limit": limit}
        (bundle / "config.json").write_text(json.dumps(cfg))
        cid = f"bench-{os.getpid()}-{rt.safe}-lim{limit}"
        rt.pending.add(cid)
        _, _, rc = rt.call("run", "run", "--bundle", str(bundle), cid, timeout=30, check=False)
        rt.call("delete", "delete", "--force", cid, timeout=30, check=False)
        rt.pending.discard(cid)
        tries.append((limit, rc == 0))
        return rc == 0

    hi, lo = 64 << 20, step
    if not ok(hi):
        return {"min_limit_kib": None, "note": "run true fails even under 64 MiB", "tries": len(tries)}
    if ok(lo):
        return {"min_limit_kib": lo >> 10, "tries": len(tries)}
    while hi - lo > step:  # lo fails, hi succeeds
        mid = (lo + hi) // 2 // step * step
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return {"min_limit_kib": hi >> 10, "tries": len(tries)}


def wrapper_cost(cmd: list[str], n: int = 20) -> float | None:
    """Median ms of the hide-cgroup2 wrapper around /bin/true instead of the runtime (what it adds)."""
    if not cmd or not cmd[0].endswith("hide-cgroup2"):
        return None
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([cmd[0], "true"], check=False)
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 2)


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


def _hybrid_cgroups() -> bool:
    with open("/proc/self/mountinfo") as f:
        fstypes = {line.split(" - ")[1].split()[0] for line in f if " - " in line}
    return "cgroup" in fstypes and "cgroup2" in fstypes


def print_once(summary: dict, baseline: str, out=sys.stdout) -> None:
    rows = [(name, d.get("once") or {}) for name, d in summary.items() if d.get("once")]
    if not rows:
        return
    base = (summary.get(baseline) or {}).get("once") or {}
    print(f"\n{'once per runtime':<34} " + " ".join(f"{name:>12}" for name, _ in rows), file=out)

    def line(label: str, get) -> None:  # type: ignore[no-untyped-def]
        cells = []
        for _name, once in rows:
            try:
                v = get(once)
            except (KeyError, TypeError):
                v = None
            cells.append(f"{v:>12}" if v is not None else f"{'-':>12}")
        print(f"{label:<34} " + " ".join(cells), file=out)
    line("batch: total ms", lambda o: o["batch"]["total_ms"])
    line("batch: ms per container", lambda o: o["batch"]["per_container_ms"])
    line("created: RSS KiB", lambda o: o["memory"]["created_rss_kib"])
    line("created: PSS KiB", lambda o: o["memory"]["created_pss_kib"])
    line("created: processes on the host", lambda o: o["memory"]["created_processes"])
    line("running sleep: RSS KiB", lambda o: o["memory"]["running_rss_kib"])
    line("smallest memory limit for run true KiB", lambda o: o["min_limit"]["min_limit_kib"])
    wrapped = [(n, o["wrapper_ms"]) for n, o in rows if "wrapper_ms" in o]
    for name, ms in wrapped:
        print(f"note: {name} runs through conformance/hide-cgroup2 (hybrid host); the wrapper alone costs {ms} ms "
              "per command, included in its times above", file=out)
    if base.get("batch"):
        for name, once in rows:
            if once.get("batch") and name != baseline:
                r = once["batch"]["total_ms"] / base["batch"]["total_ms"]
                print(f"batch ratio {name}/{baseline}: {r:.2f}", file=out)


def parse_runtimes(specs: list[str], skip: list[str]) -> dict[str, list[str]]:
    rts: dict[str, list[str]] = {"pyrunc": [str(REPO / ".venv/bin/pyrunc")], "runc": ["runc"]}
    if shutil.which("crun"):
        rts["crun"] = [str(REPO / "conformance" / "hide-cgroup2"), "crun"] if _hybrid_cgroups() else ["crun"]
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
    ap.add_argument("--oci-version", metavar="V", default="1.0.2",
                    help="ociVersion of the bench bundle (default %(default)s: crun 1.8 refuses 1.3.0)")
    ap.add_argument("--batch", type=int, default=50, help="containers created+started in a row (0: skip)")
    ap.add_argument("--no-memory", action="store_true", help="skip the RSS/PSS measurement")
    ap.add_argument("--no-min-limit", action="store_true", help="skip the smallest-memory-limit search")
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
        base_cfg = json.loads(json.dumps(cfg))
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
        for rt in [r for r in runtimes if r.active]:
            extra = summary[rt.name].setdefault("once", {})
            try:
                if a.batch:
                    progress(f"bench.py: {rt.name}: {a.batch} containers in a row")
                    extra["batch"] = batch(rt, bundles, a.batch)
                if not a.no_memory:
                    extra["memory"] = memory(rt, bundles)
                if not a.no_min_limit:
                    progress(f"bench.py: {rt.name}: smallest memory limit for run true")
                    extra["min_limit"] = min_memory_limit(rt, workdir, base_cfg, bundles["true"] / "rootfs")
                cost = wrapper_cost(rt.cmd)
                if cost is not None:
                    extra["wrapper_ms"] = cost
            except OpFailed as e:
                rt.note = (rt.note + "; " if rt.note else "") + f"once-per-runtime part stopped: {e}"
                rc = 1
        print_table(summary, a.baseline, a.n)
        print_once(summary, a.baseline)
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
