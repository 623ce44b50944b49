"""runtime.md: state, the lifecycle and the operations' errors."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..harness import Ctx, Fail, check, proc_cgroup, wait_for

RT = "runtime.md"


def _tmpfs(cfg: dict, dest: str) -> None:
    cfg["mounts"].append({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]})


@check("state: created (id, status, pid, bundle, ociVersion)", f"{RT}#state")
def state_created(c: Ctx) -> None:
    k = c.create(c.config())
    st = k.state()
    for key in ("ociVersion", "id", "status", "pid", "bundle"):
        if key not in st:
            raise Fail(f"state lacks {key!r}: {st}")
    if st["id"] != k.id or st["status"] != "created":
        raise Fail(f"state says id={st['id']!r} status={st['status']!r}")
    if not isinstance(st["pid"], int) or st["pid"] <= 0 or not Path(f"/proc/{st['pid']}").exists():
        raise Fail(f"pid {st['pid']!r} is no live process")
    if not os.path.isabs(st["bundle"]) or os.path.realpath(st["bundle"]) != os.path.realpath(k.bundle):
        raise Fail(f"bundle {st['bundle']!r} is not the absolute bundle path {k.bundle}")


@check("state: annotations", f"{RT}#state")
def state_annotations(c: Ctx) -> str | None:
    cfg = c.config()
    cfg["annotations"] = {"org.example.key": "value", "org.example.empty": ""}
    st = c.create(cfg).state()
    if "annotations" not in st:
        return "annotations absent from state (allowed)"
    if st["annotations"] != cfg["annotations"]:
        raise Fail(f"state annotations {st['annotations']} != config's {cfg['annotations']}")
    return None


@check("state: unknown container is an error", f"{RT}#query-state")
def state_unknown(c: Ctx) -> None:
    r = c.rt("state", c.new_id())
    if r.ok:
        raise Fail("state of a container that does not exist succeeded")


@check("operations without a container id are errors", f"{RT}#operations")
def ops_without_id(c: Ctx) -> None:
    bad = [op for op in (["state"], ["start"], ["kill"], ["delete"]) if c.rt(*op).ok]
    if bad:
        raise Fail(f"succeeded without an id: {bad}")


@check("create: program not run before start", f"{RT}#create")
def create_not_run(c: Ctx) -> None:
    cfg = c.config(["sh", "-c", "touch /run/ran; exec sleep 3600"])
    _tmpfs(cfg, "/run")
    k = c.create(cfg)
    time.sleep(0.3)
    if k.root("/run/ran").exists():
        raise Fail("process.args ran at create")
    k.start()
    if not wait_for(lambda: k.root("/run/ran").exists(), 10):
        raise Fail("process.args did not run after start")


@check("create: duplicate id is an error, the first is untouched", f"{RT}#create")
def create_duplicate(c: Ctx) -> None:
    k = c.create(c.config())
    r = c.rt("create", "--bundle", str(c.bundle(c.config())), k.id)
    if r.ok:
        raise Fail("a second create with the same id succeeded")
    st = k.state()
    if st["status"] != "created" or st["pid"] != k.pid:
        raise Fail(f"the first container changed: {st}")


@check("create: failure leaves no container", f"{RT}#errors")
def create_failure(c: Ctx) -> None:
    cfg = c.config()
    cfg["root"]["path"] = "/nonexistent/rootfs"
    k = c.try_create(cfg)
    if k.create_result.ok:
        raise Fail("create with a missing root.path succeeded")
    if c.rt("state", k.id).ok:
        raise Fail("a failed create left a container behind")


@check("create: failure leaves no cgroup behind", f"{RT}#errors")
def create_failure_cgroup(c: Ctx) -> None:
    from ..harness import cgroup_mounts
    cfg = c.config()
    cfg["linux"]["resources"]["cpu"] = {"cpus": "4095"}  # no such CPU: the write fails
    cfg["linux"]["resources"]["pids"] = {"limit": 100}
    k = c.try_create(cfg)
    if k.create_result.ok:
        from ..harness import Skip
        raise Skip("host accepts cpuset.cpus 4095")
    left = [m + "/" + k.id for m in set(cgroup_mounts().values()) if os.path.isdir(m + "/" + k.id)]
    if left:
        raise Fail(f"a failed create left cgroups: {left}")


@check("create: config.json changes after create have no effect", f"{RT}#lifecycle")
def create_config_frozen(c: Ctx) -> None:
    cfg = c.config(["sh", "-c", "echo $MARK > /run/mark; exec sleep 3600"], env=["MARK=before"])
    _tmpfs(cfg, "/run")
    k = c.create(cfg)
    cfg2 = json.loads((k.bundle / "config.json").read_text())
    cfg2["process"]["env"] = [e.replace("MARK=before", "MARK=after") for e in cfg2["process"]["env"]]
    (k.bundle / "config.json").write_text(json.dumps(cfg2))
    k.start()
    if not wait_for(lambda: k.root("/run/mark").exists(), 10):
        raise Fail("the process did not run")
    wait_for(lambda: k.root("/run/mark").read_text().strip() != "", 5)
    got = k.root("/run/mark").read_text().strip()
    if got != "before":
        raise Fail(f"process saw MARK={got!r} from the edited config.json")


@check("start: created -> running, program runs", f"{RT}#start")
def start_running(c: Ctx) -> None:
    k = c.run(c.config())
    st = k.state()
    if st["status"] != "running":
        raise Fail(f"status after start is {st['status']!r}")
    if Path(f"/proc/{k.pid}/cmdline").read_bytes().split(b"\0")[:2] != [b"sleep", b"3600"]:
        raise Fail(f"pid {k.pid} runs {Path(f'/proc/{k.pid}/cmdline').read_bytes()!r}")


@check("start: on a running container is an error, no effect", f"{RT}#start")
def start_running_again(c: Ctx) -> None:
    k = c.run(c.config())
    r = c.rt("start", k.id)
    if r.ok:
        raise Fail("start on a running container succeeded")
    st = k.state()
    if st["status"] != "running" or st["pid"] != k.pid:
        raise Fail(f"container changed: {st}")


@check("start: on a stopped container is an error", f"{RT}#start")
def start_stopped(c: Ctx) -> None:
    k = c.run(c.config(["true"]))
    k.wait_status("stopped")
    if c.rt("start", k.id).ok:
        raise Fail("start on a stopped container succeeded")


@check("start: without process is an error", f"{RT}#start")
def start_no_process(c: Ctx) -> str | None:
    cfg = c.config()
    del cfg["process"]
    k = c.try_create(cfg)
    if not k.create_result.ok:
        return "refused at create"
    if c.rt("start", k.id).ok:
        raise Fail("start of a container without process succeeded")
    return None


@check("status: stopped once the process exits", f"{RT}#state")
def stopped_after_exit(c: Ctx) -> None:
    k = c.run(c.config(["true"]))
    k.wait_status("stopped")


@check("kill: signal reaches the container process", f"{RT}#kill")
def kill_signal(c: Ctx) -> None:
    cfg = c.config(["sh", "-c", "trap 'echo usr1 > /run/sig' USR1; touch /run/ready; "
                                "while :; do sleep 0.1; done"])
    _tmpfs(cfg, "/run")
    k = c.run(cfg)
    if not wait_for(lambda: k.root("/run/ready").exists(), 10):
        raise Fail("the process did not start")
    r = k.kill("USR1")
    if not r.ok:
        raise Fail(f"kill USR1: {r.why()}")
    if not wait_for(lambda: k.root("/run/sig").exists(), 10):
        raise Fail("the process never got SIGUSR1")


@check("kill: a created container", f"{RT}#kill")
def kill_created(c: Ctx) -> None:
    k = c.create(c.config())
    r = k.kill("KILL")
    if not r.ok:
        raise Fail(f"kill of a created container: {r.why()}")
    k.wait_status("stopped")


@check("kill: on a stopped container is an error", f"{RT}#kill")
def kill_stopped(c: Ctx) -> None:
    k = c.run(c.config(["true"]))
    k.wait_status("stopped")
    if k.kill("KILL").ok:
        raise Fail("kill on a stopped container succeeded")
    if k.state()["status"] != "stopped":
        raise Fail("state changed")


@check("delete: on a running container is an error, no effect", f"{RT}#delete")
def delete_running(c: Ctx) -> None:
    k = c.run(c.config())
    if k.delete().ok:
        raise Fail("delete of a running container succeeded")
    st = k.state()
    if st["status"] != "running" or not Path(f"/proc/{k.pid}").exists():
        raise Fail(f"container changed: {st}")


@check("delete: on a created container is an error, no effect", f"{RT}#delete")
def delete_created(c: Ctx) -> None:
    k = c.create(c.config())
    if k.delete().ok:
        raise Fail("delete of a created (not stopped) container succeeded")
    if k.state()["status"] != "created":
        raise Fail("container changed")


@check("delete: stopped container, its resources go, id reusable", f"{RT}#delete")
def delete_stopped(c: Ctx) -> None:
    k = c.run(c.config(["true"]))
    cg = proc_cgroup(k.pid) if Path(f"/proc/{k.pid}").exists() else {}
    k.wait_status("stopped")
    r = k.delete()
    if not r.ok:
        raise Fail(f"delete of a stopped container: {r.why()}")
    if c.rt("state", k.id).ok:
        raise Fail("state still answers after delete")
    from ..harness import cgroup_mounts
    mounts = cgroup_mounts()
    left = [mounts[ctl] + path for ctl, path in cg.items() if k.id in path and ctl in mounts
            and Path(mounts[ctl] + path).exists()]
    if left:
        raise Fail(f"cgroups left after delete: {left}")
    k2 = c.create(c.config(), cid=k.id)
    if k2.state()["id"] != k.id:
        raise Fail("id not reusable")


@check("delete: resources not created by the container are kept", f"{RT}#delete")
def delete_keeps_foreign(c: Ctx) -> None:
    from ..harness import cgroup_mounts
    mounts = cgroup_mounts()
    if "pids" not in mounts:
        from ..harness import Skip
        raise Skip("host has no v1 pids hierarchy")
    cid = c.new_id()
    pre = Path(mounts["pids"]) / cid
    pre.mkdir()
    c.cleanups.append(lambda: pre.rmdir() if pre.exists() else None)
    cfg = c.config(["true"])
    k = c.create(cfg, cid=cid)
    k.start()
    k.wait_status("stopped")
    if not k.delete().ok:
        raise Fail("delete failed")
    if not pre.exists():
        raise Fail(f"delete removed the pre-existing cgroup {pre}")


@check("cli: create --pid-file", "runc create --pid-file")
def pid_file(c: Ctx) -> None:
    pf = c.dir / "pidfile"
    k = c.create(c.config(), "--pid-file", str(pf))
    text = pf.read_text().strip() if pf.exists() else ""
    if text != str(k.pid):
        raise Fail(f"pid file says {text!r}, state pid {k.pid}")
