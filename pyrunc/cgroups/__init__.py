"""Container cgroups (cgroupfs driver): one Manager interface, a backend per host layout.

    from pyrunc.cgroups import manager_for, manager_from_state, CgroupError

    mgr = manager_for(config.linux.cgroups_path, container_id)
    state.cgroup = mgr.to_state()          # persist first: delete --force needs it
    mgr.create(resources)                  # mkdir -p (+ v1 cpuset init, v2 subtree_control)
    mgr.apply(resources)                   # write the limits (refuses what it cannot apply)
    mgr.add(pid)                           # every hierarchy
    ...
    mgr = manager_from_state(state.cgroup) # in a later command
    mgr.kill_all(signal.SIGKILL); mgr.destroy()

Layouts ("v2", "hybrid", "v1") come from /proc/self/mountinfo, parsed once.  Only
``os``/``errno`` at import time: every pyrunc command is a fresh interpreter.
"""

from __future__ import annotations

from .base import CgroupError, Manager
from .paths import detect_layout

__all__ = ["CgroupError", "Manager", "detect_layout", "manager_for", "manager_from_state", "rootless_warnings"]


def manager_for(cgroups_path: str, container_id: str, skip_devices: bool = False,
                rootless: bool = False) -> Manager:
    """The manager for ``linux.cgroupsPath`` (runc's cgroupfs rules; see ``paths``).

    Nothing is created yet.  ``skip_devices`` leaves the device controller alone (runc's
    SkipDevices), for callers that enforce device rules some other way.  ``rootless``
    (runc's RootlessCgroups, see ``Manager.rootless``): without a cgroupsPath, the cgroups
    we are not allowed to create or join are skipped.
    """
    from . import paths as p

    mounts = p.host_mounts()
    inner = p.inner_path(cgroups_path, container_id)
    own = None if inner.startswith("/") else p.own_cgroups()
    if mounts.layout == "v2":
        from .v2 import V2Manager

        assert mounts.unified is not None
        return V2Manager(p.v2_path(inner, mounts, own), mounts.unified.mountpoint, skip_devices,
                         rootless, rootless and not cgroups_path)
    if mounts.layout in ("v1", "hybrid"):
        from .v1 import V1Manager

        return V1Manager(p.v1_paths(inner, mounts, own), mounts.layout, skip_devices,
                         rootless, rootless and not cgroups_path)
    raise CgroupError("no cgroup filesystem is mounted (see /proc/self/mountinfo)")


def manager_from_state(state: dict[str, object]) -> Manager:
    """Rebuild a manager from ``Manager.to_state()`` without looking at the host again."""
    layout = state.get("layout") if isinstance(state, dict) else None
    skip = bool(state.get("skip_devices", False)) if isinstance(state, dict) else False
    rootless = bool(state.get("rootless", False)) if isinstance(state, dict) else False
    skipped = state.get("skipped") if isinstance(state, dict) else None
    skipped = dict(skipped) if isinstance(skipped, dict) else {}
    mgr: Manager
    if layout == "v2":
        from .v2 import V2Manager

        mgr = V2Manager(str(state["path"]), str(state.get("mount", "/sys/fs/cgroup")), skip, rootless,
                        skipped=skipped)
    elif layout in ("v1", "hybrid"):
        from .v1 import V1Manager

        paths = state.get("paths")
        mgr = V1Manager(dict(paths) if isinstance(paths, dict) else {}, str(layout), skip, rootless,
                        skipped=skipped)
    else:
        raise CgroupError(f"unknown cgroup state {state!r}")
    kept = state.get("kept")
    mgr.kept = [str(d) for d in kept] if isinstance(kept, list) else []
    return mgr


def rootless_warnings(mgr: Manager, linux: object) -> list[str]:
    """What a rootless create skipped that the user should hear of (``linux``: config.Linux):
    device rules config.json asked for (runc ignores them silently; the built-in default
    rules are not worth a word), and runc's warning for a container with neither a cgroup
    nor a PID namespace of its own."""
    out = []
    resources = getattr(linux, "resources", None)
    if mgr.devices_ignored and getattr(resources, "devices", None):
        out.append("linux.resources.devices: ignored: a rootless container cannot have a device "
                   "cgroup policy (runc ignores its device rules too)")
    if not mgr.exists() and not linux.creates("pid"):  # type: ignore[attr-defined]
        out.append("Creating a rootless container with no cgroup and no private pid namespace. "
                   "Such configuration is strongly discouraged (as it is impossible to properly "
                   "kill all container's processes).")
    return out
