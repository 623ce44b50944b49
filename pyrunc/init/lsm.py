"""AppArmor profiles and SELinux labels, applied by the init stage (see ``pyrunc.lsm``).

A label for exec is written to the task's own ``attr`` file in /proc.  The files are reached
through an fd of the *host's* /proc, opened before the container's mounts exist (and before
exec joins the container's mount namespace): nothing the container mounts over its /proc
can redirect the write to another file (the procfs redirections of CVE-2025-52881).  The
write happens in the very task that execs, as the kernel requires.
"""

from __future__ import annotations

import os


class ExecLabels:
    """The process's AppArmor profile and SELinux label, and the host /proc to set them through."""

    __slots__ = ("apparmor_profile", "selinux_label", "proc_fd")

    def __init__(self, apparmor_profile: str, selinux_label: str) -> None:
        self.apparmor_profile = apparmor_profile
        self.selinux_label = selinux_label
        self.proc_fd = -1
        if apparmor_profile or selinux_label:
            self.proc_fd = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def set_keycreate(self) -> None:
        """Keys we create from now on (the session keyring) get the process's label (runc)."""
        if self.selinux_label:
            _write_attr(self.proc_fd, ("keycreate",), self.selinux_label)

    def set_for_exec(self) -> None:
        """The transitions the kernel makes at our next execve."""
        if self.apparmor_profile:
            _write_attr(self.proc_fd, ("apparmor/exec", "exec"), "exec " + self.apparmor_profile)
        if self.selinux_label:
            _write_attr(self.proc_fd, ("exec",), self.selinux_label)


def _write_attr(proc_fd: int, names: tuple[str, ...], value: str) -> None:
    """Write ``value`` to the first of ``thread-self/attr/<name>`` that exists."""
    for i, name in enumerate(names):
        try:
            fd = os.open(f"thread-self/attr/{name}", os.O_WRONLY | os.O_CLOEXEC, dir_fd=proc_fd)
        except FileNotFoundError:
            if i + 1 < len(names):
                continue
            raise
        try:
            os.write(fd, value.encode())
        except OSError as e:
            raise OSError(e.errno, f"setting the {name} label {value!r}: {e.strerror}") from None
        finally:
            os.close(fd)
        return
