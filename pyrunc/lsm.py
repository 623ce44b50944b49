"""Linux security modules: AppArmor profiles and SELinux labels.

Detection follows runc (libcontainer/apparmor and go-selinux): AppArmor is enabled when
securityfs shows it and the module parameter says ``Y``; SELinux when selinuxfs is mounted
and the kernel gives us a context.  A config that asks for a label the host cannot apply is
refused before anything is created, naming the field.

Applying a label is the init stage's business (``pyrunc.init.lsm``): it opens its own
``attr`` files in the host's /proc before anything of the container is mounted, and writes
them right before exec.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .config import Linux, Process


def apparmor_enabled() -> bool:
    if not os.path.isdir("/sys/kernel/security/apparmor"):
        return False
    try:
        with open("/sys/module/apparmor/parameters/enabled", "rb") as f:
            return f.read(1) == b"Y"
    except OSError:
        return False


def selinux_enabled() -> bool:
    if not os.path.exists("/sys/fs/selinux/enforce"):
        return False
    try:
        with open("/proc/self/attr/current", "rb") as f:
            context = f.read().rstrip(b"\0\n")
    except OSError:
        return False
    return bool(context) and context != b"kernel"


def problems(proc: Process | None, linux: Linux | None, where: str = "") -> list[str]:
    """What the config asks of LSMs the host does not have, each naming its JSON path."""
    out = []
    if proc is not None and proc.apparmor_profile and not apparmor_enabled():
        out.append(f"{where}process.apparmorProfile: apparmor: config provided but apparmor not supported "
                   f"(AppArmor is not enabled on this host)")
    wants_selinux = [(f"{where}process.selinuxLabel", proc is not None and proc.selinux_label),
                     ("linux.mountLabel", linux is not None and linux.mount_label)]
    for field, value in wants_selinux:
        if value and not selinux_enabled():
            out.append(f"{field}: selinux label is specified in config, but selinux is disabled or not supported")
    return out


def with_mount_label(data: str, label: str) -> str:
    """Mount data with SELinux's ``context=`` option added (go-selinux FormatMountLabel)."""
    if not label:
        return data
    option = f'context="{label}"'
    return f"{data},{option}" if data else option
