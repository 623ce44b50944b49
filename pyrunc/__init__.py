"""pyrunc: an OCI runtime-spec (v1.3.0) compatible container runtime with runc's command line.

The Python API the CLI is built on::

    from pyrunc import Runtime
    rt = Runtime(root="/run/pyrunc")
    c = rt.create("demo", bundle="/path/to/bundle")
    c.start(); print(c.state()); c.kill(9); c.delete(force=True)

Names are resolved lazily: the init stage and quick commands import only what they use.
"""

from __future__ import annotations

__all__ = ["Runtime", "Container", "PyruncError", "ConfigError", "ContainerNotExistError",
           "ContainerExistsError", "ContainerNotRunningError", "InvalidStateError", "NotSupportedError"]


def __getattr__(name: str) -> object:
    if name in ("Runtime", "Container"):
        from . import container
        return getattr(container, name)
    if name in __all__:
        from . import errors
        return getattr(errors, name)
    raise AttributeError(f"module 'pyrunc' has no attribute {name!r}")
