"""The ``--root`` state store: one directory per container.

Layout of ``<root>/<id>/``:

``pyrunc.json``   what pyrunc knows of the container (``ContainerState``), written atomically
``config.json``   the validated config, as persisted at create time
``exec.fifo``     the start gate; it exists while the container is ``created``

The file is called ``pyrunc.json`` (not ``state.json``) because dockerd passes the
same ``--root`` to every runtime: runc's directories may sit beside ours, and a
directory without ``pyrunc.json`` is simply not ours.

The status is never trusted from the file: it is derived from kernel facts, the
init pid together with its start time in ``/proc/PID/stat`` (pids get reused),
and the presence of the start gate.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time

from . import jsonio
from .errors import ContainerExistsError, ContainerNotExistError, InvalidIDError, PyruncError
from .record import fields, record

STATE_FILE = "pyrunc.json"
CONFIG_FILE = "config.json"
GATE_FIFO = "exec.fifo"
# The init's word to `start` when it fails after the gate (a startContainer hook, the exec itself)
REPORT_FIFO = "report.fifo"
OCI_VERSION = "1.3.0"

CREATING, CREATED, RUNNING, PAUSED, STOPPED = "creating", "created", "running", "paused", "stopped"


@record
class ContainerState:
    id: str
    bundle: str
    rootfs: str
    created: str  # RFC 3339 with nanoseconds, as runc prints it
    owner_uid: int
    init_pid: int = 0
    init_start: int = 0  # field 22 of /proc/PID/stat: distinguishes a reused pid
    creator_pid: int = 0  # the `create` process, while the container is being created
    creator_start: int = 0
    creating: bool = True  # until `create` has finished
    own_pid_namespace: bool = True
    no_new_keyring: bool = False  # create's --no-new-keyring, which exec follows too (runc)
    annotations: dict[str, str] = {}
    cgroup: dict = {}  # the cgroup manager's own description, for delete after a crash
    namespace_paths: dict[str, str] = {}


_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+,-.")


def validate_id(container_id: str) -> None:
    """runc's rule, ``^[\\w+-\\.]+$`` (ASCII word characters and ``+ , - .``) but not "." or "..",
    and at most 255 bytes: the id is one file name, in --root and in the cgroup's path."""
    if (not container_id or container_id in (".", "..") or len(container_id) > 255
            or not _ID_CHARS.issuperset(container_id)):
        raise InvalidIDError(container_id)


def now_rfc3339() -> str:
    ns = time.time_ns()
    secs, frac = divmod(ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    digits = f"{frac:09d}".rstrip("0")  # Go's RFC3339Nano trims trailing zeros
    return f"{stamp}.{digits}Z" if digits else f"{stamp}Z"


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` (clock ticks since boot), or None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def _root_hint() -> str:
    if os.geteuid() == 0:
        return ""
    return (" (a rootless pyrunc keeps its state in $XDG_RUNTIME_DIR/pyrunc: set XDG_RUNTIME_DIR, "
            "or --root, to a directory of yours)")


class Store:
    """The ``--root`` directory."""

    def __init__(self, root: str) -> None:
        self.root = root

    def path(self, container_id: str) -> str:
        validate_id(container_id)
        return os.path.join(self.root, container_id)

    def ids(self) -> list[str]:
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        except OSError as e:
            raise PyruncError(f"open {self.root}: {e.strerror}{_root_hint()}") from None
        return [n for n in names if os.path.exists(os.path.join(self.root, n, STATE_FILE))]

    def new(self, container_id: str) -> Entry:
        """Make the container's directory; it is ours alone if mkdir succeeds."""
        path = self.path(container_id)
        try:
            os.makedirs(self.root, mode=0o711, exist_ok=True)
            os.mkdir(path, 0o711)
        except FileExistsError:
            raise ContainerExistsError() from None
        except OSError as e:
            raise PyruncError(f"mkdir {e.filename}: {e.strerror}{_root_hint()}") from None
        return Entry(path)

    def remove_orphan(self, container_id: str) -> bool:
        """Remove a directory a crashed ``create`` left before its first state write.

        It holds no process and no cgroup yet (those are recorded before they exist), so
        the directory is all there is; a live ``create`` holds its lock, so we never race one."""
        path = self.path(container_id)
        if not os.path.isdir(path) or os.path.exists(os.path.join(path, STATE_FILE)):
            return False
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False  # a create is under way
        entry = Entry(path)
        entry._lock_fd = fd
        if os.path.exists(entry.file(STATE_FILE)):
            entry.unlock()
            return False
        entry.remove()
        return True

    def open(self, container_id: str) -> Entry:
        path = self.path(container_id)
        if not os.path.exists(os.path.join(path, STATE_FILE)):
            raise ContainerNotExistError(container_id)
        return Entry(path)


class Entry:
    """One container's directory, with its lock."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock_fd = -1

    def lock(self, new: bool = False) -> None:
        """Serialise commands on this container (flock on the directory itself).

        Whoever held the lock before us may have deleted the container: then we raise
        ContainerNotExistError, as if we had come a moment later."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ContainerNotExistError() from None
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._lock_fd = fd
        if not new and not os.path.exists(self.file(STATE_FILE)):
            self.unlock()
            raise ContainerNotExistError()

    def unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def read_state(self) -> ContainerState:
        try:
            with open(self.file(STATE_FILE), "rb") as f:
                doc = jsonio.loads(f.read())
        except FileNotFoundError:
            raise ContainerNotExistError() from None
        return ContainerState(**doc)

    def write_state(self, st: ContainerState) -> None:
        atomic_write(self.file(STATE_FILE), jsonio.dumps({n: getattr(st, n) for n in fields(st)}))

    def read_config(self) -> dict:
        with open(self.file(CONFIG_FILE), "rb") as f:
            return jsonio.loads(f.read())  # type: ignore[no-any-return]

    def write_config(self, doc: dict) -> None:
        atomic_write(self.file(CONFIG_FILE), jsonio.dumps(doc))

    def gate_exists(self) -> bool:
        return os.path.exists(self.file(GATE_FIFO))

    def remove(self) -> None:
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            names = []  # someone else removed it already
        for name in names:
            try:
                os.unlink(os.path.join(self.path, name))
            except IsADirectoryError:
                pass
        try:
            os.rmdir(self.path)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
        self.unlock()


def atomic_write(path: str, text: str, mode: int = 0o600) -> None:
    """Write via a temporary file and rename, so readers see the old or the new file, never half."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.rename(tmp, path)


def derive_status(entry: Entry, st: ContainerState) -> str:
    """The container's status from kernel facts, not from what the file says."""
    if st.creating:
        if st.creator_pid and process_start_time(st.creator_pid) == st.creator_start:
            return CREATING
        return STOPPED  # the create process died half-way: only delete is left
    if not st.init_pid or process_start_time(st.init_pid) != st.init_start:
        return STOPPED
    if cgroup_frozen(st):
        return PAUSED  # before the gate: a created container can be paused too (runc)
    if entry.gate_exists():
        return CREATED
    return RUNNING


def cgroup_frozen(st: ContainerState) -> bool:
    """Whether the container's own cgroup is frozen, as the kernel reports it (``pause``).

    Only asked while the init lives: runc asks first, so an init that died while frozen on
    cgroup v2 (where SIGKILL gets through) leaves it "paused" for ever; we say "stopped"."""
    if not st.cgroup:
        return False
    from .cgroups import CgroupError, manager_from_state  # ~1 ms: only for a live init

    try:
        return manager_from_state(st.cgroup).frozen()
    except CgroupError:
        return False
