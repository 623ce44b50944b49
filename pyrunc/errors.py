"""One error hierarchy for pyrunc.

The texts of the errors engines match by substring are runc's, word for word:
containerd decides what a failed kill or delete means by looking for "container
not running", "does not exist" and "no such process"; podman maps "executable
file not found in" and "permission denied" to exit codes 126/127.
"""

from __future__ import annotations


class PyruncError(Exception):
    """Base class: the message is what the user (or the engine) reads."""

    exit_code = 1


class ConfigError(PyruncError):
    """config.json is unreadable, breaks the schema, or asks for something impossible.

    ``problems`` holds every finding, each already of the form ``json.path: rule``.
    """

    def __init__(self, problems: list[str], source: str = "config.json") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__("\n".join(f"{source}: {p}" for p in self.problems))


class UsageError(PyruncError):
    """Bad command line: unknown flag, missing argument, bad value."""


class NotSupportedError(PyruncError):
    """The config or a flag asks for something pyrunc does not implement yet."""


class ContainerNotExistError(PyruncError):
    def __init__(self, container_id: str = "") -> None:
        super().__init__("container does not exist")
        self.container_id = container_id


class ContainerExistsError(PyruncError):
    def __init__(self) -> None:
        super().__init__("container with given ID already exists")


class ContainerNotRunningError(PyruncError):
    def __init__(self) -> None:
        super().__init__("container not running")


class ContainerNotPausedError(PyruncError):
    def __init__(self) -> None:
        super().__init__("container not paused")


class InvalidStateError(PyruncError):
    """A lifecycle rule of runtime.md forbids the command in the current status."""


class InvalidIDError(PyruncError):
    def __init__(self, container_id: str) -> None:
        super().__init__(f"invalid container id format: {container_id!r}")


class InitError(PyruncError):
    """The container's init stage failed; the message comes from inside it."""
