"""A light stand-in for dataclasses on the hot path.

Every pyrunc command starts a fresh interpreter, and ``import dataclasses`` costs
about 11 ms here (it pulls in ``inspect`` and ``re``), which is a fifth of what
``runc run`` takes in total.  ``@record`` gives the part of dataclasses pyrunc
uses -- a keyword ``__init__`` built from the class annotations and defaults,
``__repr__`` and ``__eq__`` -- for next to nothing.

Rules: annotate every field; a default that is a list or dict is copied per
instance (so ``args: list[str] = []`` is safe); fields without a default are
required keyword-or-positional arguments and must come first.
"""

from __future__ import annotations

_MUTABLE = (list, dict, set)

TYPE_CHECKING = False  # typing itself costs ~11 ms to import; type checkers see the real thing
if TYPE_CHECKING:
    from typing import dataclass_transform
else:
    def dataclass_transform(**_kwargs: object):  # noqa: ANN202
        return lambda fn: fn


@dataclass_transform()
def record(cls: type) -> type:
    names = tuple(n for n in cls.__dict__.get("__annotations__", {}) if not n.startswith("_"))
    defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}
    qualname = cls.__qualname__

    # One generic __init__ per class (no exec: compiling one per class cost ~2 ms at import).
    def __init__(self: object, *args: object, **kwargs: object) -> None:
        if len(args) > len(names):
            raise TypeError(f"{qualname}() takes {len(names)} positional arguments but {len(args)} were given")
        for name, value in zip(names, args):
            setattr(self, name, value)
        for name in names[len(args):]:
            if name in kwargs:
                value = kwargs.pop(name)
            elif name in defaults:
                value = defaults[name]
                if isinstance(value, _MUTABLE):
                    value = value.copy()  # type: ignore[attr-defined]
            else:
                raise TypeError(f"{qualname}() missing required argument: {name!r}")
            setattr(self, name, value)
        if kwargs:
            raise TypeError(f"{qualname}() got unexpected keyword argument(s): {', '.join(kwargs)}")

    cls.__init__ = __init__  # type: ignore[misc]
    cls.__fields__ = names  # type: ignore[attr-defined]
    if "__repr__" not in cls.__dict__:
        cls.__repr__ = _repr  # type: ignore[assignment]
    if "__eq__" not in cls.__dict__:
        cls.__eq__ = _eq  # type: ignore[assignment]
        cls.__hash__ = None  # type: ignore[assignment]
    return cls


def _repr(self: object) -> str:
    fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in type(self).__fields__)  # type: ignore[attr-defined]
    return f"{type(self).__name__}({fields})"


def _eq(self: object, other: object) -> bool:
    if type(other) is not type(self):
        return NotImplemented
    return all(getattr(self, n) == getattr(other, n) for n in type(self).__fields__)  # type: ignore[attr-defined]


def fields(obj: object) -> tuple[str, ...]:
    return type(obj).__fields__  # type: ignore[attr-defined,no-any-return]
