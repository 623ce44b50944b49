"""JSON through the C accelerator ``_json``, without importing the ``json`` package.

``import json`` pulls in ``re`` (json.decoder compiles its regexes at import) and
with it ``enum``: about 5 ms on every pyrunc command, a sixth of what ``runc state``
takes in total.  The C scanner and encoder that ``json`` itself uses do the real
work here; only the thin Python layer around them is ours.  Error paths may still
import ``json.decoder`` (the C scanner does, to raise JSONDecodeError): that is fine.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False  # typing costs ~11 ms to import: only type checkers read it
if TYPE_CHECKING:
    from typing import Any


class _ScanContext:
    """The attributes the C scanner reads from its context (json.JSONDecoder's)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float
    memo: dict = {}


_scan = _json.make_scanner(_ScanContext())  # type: ignore[arg-type]
_WS = " \t\n\r"


def loads(data: bytes | str) -> Any:
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    start = len(text) - len(text.lstrip(_WS))
    try:
        obj, end = _scan(text, start)
    except StopIteration as e:
        raise ValueError(f"Expecting value: {_where(text, e.value)}") from None
    finally:
        _ScanContext.memo.clear()
    rest = len(text.rstrip(_WS))
    if end < rest:
        raise ValueError(f"Extra data: {_where(text, end)}")
    return obj


def _where(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    col = pos - text.rfind("\n", 0, pos)
    return f"line {line} column {col} (char {pos})"


def _encoder(separators: tuple[str, str], ascii_only: bool = True):  # type: ignore[no-untyped-def]
    # (markers, default, encoder, indent, key_separator, item_separator, sort_keys, skipkeys, allow_nan)
    strings = _json.encode_basestring_ascii if ascii_only else _json.encode_basestring
    return _json.make_encoder({}, _default, strings, None, separators[1], separators[0], False, False, True)


def _default(obj: object) -> object:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_compact = _encoder((",", ":"))
_spaced = _encoder((", ", ": "))
_spaced_unicode = _encoder((", ", ": "), ascii_only=False)


def dumps(obj: object, compact: bool = True, ensure_ascii: bool = True) -> str:
    """One line: ``{"a":1}`` (compact, Go's style) or ``{"a": 1}`` (Python's default style)."""
    encode = _compact if compact else (_spaced if ensure_ascii else _spaced_unicode)
    return "".join(encode(obj, 0))


def dumps_pretty(obj: object, indent: str = "  ", _level: int = 0) -> str:
    """Indented like Go's json.MarshalIndent(v, "", indent) (and Python's json.dumps(indent=...))."""
    pad, inner = indent * _level, indent * (_level + 1)
    if isinstance(obj, dict) and obj:
        items = ",\n".join(f"{inner}{dumps(str(k))}: {dumps_pretty(v, indent, _level + 1)}" for k, v in obj.items())
        return "{\n" + items + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)) and obj:
        items = ",\n".join(inner + dumps_pretty(v, indent, _level + 1) for v in obj)
        return "[\n" + items + "\n" + pad + "]"
    return dumps(obj)
