"""The checks, one module per part of the spec; importing this registers them in table order."""

from . import lifecycle, process, linux, mounts, cgroups, hooks  # noqa: F401
