"""Fast validation of config.json and state documents against spec/*.json.

The JSON Schemas in ``spec/`` (draft-04, OCI runtime-spec v1.3.0, Linux) are
the source of truth.  This module is a small interpreter of just the draft-04
keywords they use, so that ``create`` does not pay for importing jsonschema
(~130 ms).  It imports only ``json`` and ``os`` (``re`` is imported lazily, and
only for patterns that are not a plain literal / ``^literal`` prefix).

Public API::

    validate_config(doc) -> list[SchemaError]   # [] means valid
    validate_state(doc)  -> list[SchemaError]

Every violation is reported, not just the first.  ``SchemaError.path`` is a
JSON path such as ``linux.namespaces[2].type`` (``""`` for the document root)
and ``SchemaError.message`` follows jsonschema's wording with values rendered
as JSON, e.g. ``"foo" is not one of ["cgroup", "ipc", ...]``.

Supported keywords: $ref (relative to the referring file, JSON-pointer
fragments), type, enum, properties, patternProperties, additionalProperties,
required, dependencies, minProperties, maxProperties, items, additionalItems,
minItems, maxItems, uniqueItems, minimum, maximum, exclusiveMinimum,
exclusiveMaximum, multipleOf, minLength, maxLength, pattern, allOf, anyOf,
oneOf, not.  As in draft-04, keywords next to a ``$ref`` are ignored.  Other
keywords ("format", ...) are ignored, so the schema files must not use them
(tests/unit/test_schema.py checks this).  When a node that holds
anyOf/oneOf/not fails, its "description" (if any) is appended to the message
as the human explanation of the rule.
"""

from __future__ import annotations

import os

from . import jsonio

__all__ = [
    "SCHEMA_DIR",
    "CONFIG_SCHEMA",
    "STATE_SCHEMA",
    "SchemaError",
    "validate_config",
    "validate_state",
]

SCHEMA_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "spec"
)
CONFIG_SCHEMA = "config-schema.json"
STATE_SCHEMA = "state-schema.json"
FEATURES_SCHEMA = "features-schema.json"

_SHOW_MAX = 80  # longest rendering of an instance inside a message


class SchemaError:
    """One schema violation: where (``path``) and which rule (``message``)."""

    __slots__ = ("path", "message")

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message

    def __str__(self) -> str:
        if self.path:
            return f"{self.path}: {self.message}"
        return self.message

    def __repr__(self) -> str:
        return f"SchemaError({self.path!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SchemaError):
            return NotImplemented
        return self.path == other.path and self.message == other.message

    def __hash__(self) -> int:
        return hash((self.path, self.message))


def validate_config(doc: object) -> list[SchemaError]:
    """Validate a parsed config.json; return every error ([] when valid)."""
    return _run(CONFIG_SCHEMA, doc)


def validate_state(doc: object) -> list[SchemaError]:
    """Validate a parsed state document; return every error ([] when valid)."""
    return _run(STATE_SCHEMA, doc)


def validate_features(doc: object) -> list[SchemaError]:
    """Validate a Features structure (``pyrunc features``; its tests)."""
    return _run(FEATURES_SCHEMA, doc)


def validate_resources(doc: object) -> list[SchemaError]:
    """Validate a LinuxResources document on its own (``update --resources``); paths are
    relative to it (``memory.limit``)."""
    errors: list[SchemaError] = []
    base, schema = _resolve("defs-linux.json", "#/definitions/Resources")
    _validate(doc, schema, base, None, errors)
    return errors


def validate_process(doc: object) -> list[SchemaError]:
    """Validate a runtime-spec ``process`` object on its own (``exec --process FILE``); paths
    read as in config.json (``process.user.uid``)."""
    errors: list[SchemaError] = []
    base, schema = _resolve(CONFIG_SCHEMA, "#/definitions/Process")
    _validate(doc, schema, base, (None, "process"), errors)
    return errors


# --------------------------------------------------------------------------
# schema loading and $ref resolution (lazy, cached for the process lifetime)

_files: dict[str, dict] = {}
_refs: dict[tuple[str, str], tuple[str, dict]] = {}


def _load(name: str) -> dict:
    doc = _files.get(name)
    if doc is None:
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"schema reference outside {SCHEMA_DIR}: {name!r}")
        with open(os.path.join(SCHEMA_DIR, name), "rb") as f:
            doc = jsonio.loads(f.read())
        _files[name] = doc
    return doc


def _resolve(base: str, ref: str) -> tuple[str, dict]:
    key = (base, ref)
    hit = _refs.get(key)
    if hit is None:
        name, _, fragment = ref.partition("#")
        if not name:
            name = base
        node: dict = _load(name)
        if fragment:
            if fragment[0] != "/":
                raise ValueError(f"unsupported $ref {ref!r} in {base}")
            for token in fragment[1:].split("/"):
                token = token.replace("~1", "/").replace("~0", "~")
                node = node[int(token)] if isinstance(node, list) else node[token]
        hit = _refs[key] = (name, node)
    return hit


def _run(name: str, doc: object) -> list[SchemaError]:
    errors: list[SchemaError] = []
    _validate(doc, _load(name), name, None, errors)
    return errors


# --------------------------------------------------------------------------
# helpers

# Paths are built as cheap linked pairs (parent, key), None for the root, and
# only turned into strings when an error is reported.

_JSON_TYPES = {
    dict: "object",
    list: "array",
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def _json_type(inst: object) -> str | None:
    t = _JSON_TYPES.get(type(inst))
    if t is not None:
        return t
    if isinstance(inst, bool):
        return "boolean"
    if isinstance(inst, int):
        return "integer"
    if isinstance(inst, float):
        return "number"
    if isinstance(inst, str):
        return "string"
    if isinstance(inst, dict):
        return "object"
    if isinstance(inst, list):
        return "array"
    return None


def _format_path(path) -> str:
    keys = []
    while path is not None:
        path, key = path
        keys.append(key)
    out: list[str] = []
    for key in reversed(keys):
        if isinstance(key, int):
            out.append(f"[{key}]")
        elif key.isidentifier():
            out.append(f".{key}" if out else key)
        else:
            out.append(f"[{jsonio.dumps(key, compact=False, ensure_ascii=False)}]")
    return "".join(out)


def _show(value: object) -> str:
    try:
        text = jsonio.dumps(value, compact=False, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > _SHOW_MAX:
        text = text[: _SHOW_MAX - 3] + "..."
    return text


def _fail(errors: list, path, message: str) -> None:
    errors.append(SchemaError(_format_path(path), message))


def _explained(message: str, schema: dict) -> str:
    why = schema.get("description")
    return f"{message} ({why})" if isinstance(why, str) and why else message


def _is_number(inst: object) -> bool:
    return isinstance(inst, (int, float)) and not isinstance(inst, bool)


def _equal(a: object, b: object) -> bool:
    # JSON equality: true/false are not 1/0, 1 == 1.0, containers compare deeply.
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple, dict)) or isinstance(b, (list, tuple, dict)):
        return False
    return a == b


_REGEX_META = frozenset("\\.^$*+?{}[]()|")
_SEMVER = ("^(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)(-(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
           "(\\.(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*))*)?(\\+[0-9A-Za-z-]+(\\.[0-9A-Za-z-]+)*)?$")
_ALNUM_HYPHEN = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-")


def _is_semver(s: str) -> bool:
    """The SemVer pattern above without ``re`` (whose import costs ~5 ms on every create).
    Like the regex's ``$``, a single trailing newline is tolerated."""
    if s.endswith("\n"):
        s = s[:-1]
    core, plus, build = s.partition("+")
    if plus and not all(part and _ALNUM_HYPHEN.issuperset(part) for part in build.split(".")):
        return False
    core, dash, pre = core.partition("-")
    if dash and not all(_is_pre_release_id(part) for part in pre.split(".")):
        return False
    numbers = core.split(".")
    return len(numbers) == 3 and all(_is_semver_number(n) for n in numbers)


def _is_semver_number(n: str) -> bool:
    return n.isascii() and n.isdigit() and (n == "0" or not n.startswith("0"))


def _is_pre_release_id(part: str) -> bool:
    if not part or not _ALNUM_HYPHEN.issuperset(part):
        return False
    return _is_semver_number(part) if part.isdigit() else True


_patterns: dict[str, object] = {_SEMVER: lambda s: _is_semver(s)}


def _matcher(pattern: str):
    fn = _patterns.get(pattern)
    if fn is None:
        if pattern.startswith("^") and _REGEX_META.isdisjoint(pattern[1:]):
            prefix = pattern[1:]
            fn = lambda s: s.startswith(prefix)  # noqa: E731
        elif _REGEX_META.isdisjoint(pattern):
            fn = lambda s: pattern in s  # noqa: E731
        else:
            import re  # lazily: only schemas with real regexes pay for it

            fn = re.compile(pattern).search
        _patterns[pattern] = fn
    return fn


def _is_valid(inst: object, schema: dict, base: str) -> bool:
    scratch: list[SchemaError] = []
    _validate(inst, schema, base, None, scratch)
    return not scratch


# --------------------------------------------------------------------------
# the interpreter


def _validate(inst: object, schema: dict, base: str, path, errors: list) -> None:
    while "$ref" in schema:  # draft-04: siblings of $ref are ignored
        base, schema = _resolve(base, schema["$ref"])
    for key in schema:
        check = _KEYWORDS.get(key)
        if check is not None:
            check(schema[key], inst, schema, base, path, errors)


def _kw_type(want, inst, schema, base, path, errors):
    have = _json_type(inst)
    wanted = [want] if isinstance(want, str) else want
    for t in wanted:
        if t == have or (t == "number" and have == "integer"):
            return
    shown = ", ".join(_show(t) for t in wanted)
    _fail(errors, path, f"{_show(inst)} is not of type {shown}")


def _kw_enum(choices, inst, schema, base, path, errors):
    if isinstance(inst, str):
        if inst in choices:
            return
    elif any(_equal(inst, c) for c in choices):
        return
    _fail(errors, path, f"{_show(inst)} is not one of {jsonio.dumps(choices, compact=False, ensure_ascii=False)}")


def _kw_properties(props, inst, schema, base, path, errors):
    if isinstance(inst, dict):
        for name, value in inst.items():
            sub = props.get(name)
            if sub is not None:
                _validate(value, sub, base, (path, name), errors)


def _kw_pattern_properties(pprops, inst, schema, base, path, errors):
    if isinstance(inst, dict):
        for pattern, sub in pprops.items():
            match = _matcher(pattern)
            for name, value in inst.items():
                if match(name):
                    _validate(value, sub, base, (path, name), errors)


def _kw_additional_properties(extra, inst, schema, base, path, errors):
    if not isinstance(inst, dict) or extra is True:
        return
    props = schema.get("properties", {})
    pprops = schema.get("patternProperties", {})
    unexpected = []
    for name, value in inst.items():
        if name in props:
            continue
        if pprops and any(_matcher(p)(name) for p in pprops):
            continue
        if extra is False:
            unexpected.append(name)
        else:
            _validate(value, extra, base, (path, name), errors)
    if unexpected:
        shown = ", ".join(_show(n) for n in sorted(unexpected))
        verb = "were" if len(unexpected) > 1 else "was"
        _fail(errors, path, f"Additional properties are not allowed ({shown} {verb} unexpected)")


def _kw_required(names, inst, schema, base, path, errors):
    if isinstance(inst, dict):
        for name in names:
            if name not in inst:
                _fail(errors, path, f"{_show(name)} is a required property")


def _kw_dependencies(deps, inst, schema, base, path, errors):
    if not isinstance(inst, dict):
        return
    for name, dep in deps.items():
        if name not in inst:
            continue
        if isinstance(dep, list):
            for other in dep:
                if other not in inst:
                    _fail(errors, path, f"{_show(other)} is a dependency of {_show(name)}")
        else:
            _validate(inst, dep, base, path, errors)


def _kw_min_properties(n, inst, schema, base, path, errors):
    if isinstance(inst, dict) and len(inst) < n:
        msg = "should be non-empty" if n == 1 else "does not have enough properties"
        _fail(errors, path, f"{_show(inst)} {msg}")


def _kw_max_properties(n, inst, schema, base, path, errors):
    if isinstance(inst, dict) and len(inst) > n:
        msg = "is expected to be empty" if n == 0 else "has too many properties"
        _fail(errors, path, f"{_show(inst)} {msg}")


def _kw_items(items, inst, schema, base, path, errors):
    if not isinstance(inst, list):
        return
    if isinstance(items, dict):
        for i, value in enumerate(inst):
            _validate(value, items, base, (path, i), errors)
        return
    for i, (value, sub) in enumerate(zip(inst, items)):
        _validate(value, sub, base, (path, i), errors)


def _kw_additional_items(extra, inst, schema, base, path, errors):
    items = schema.get("items")
    if not isinstance(inst, list) or not isinstance(items, list) or extra is True:
        return
    rest = inst[len(items):]
    if extra is False:
        if rest:
            _fail(errors, path, f"Additional items are not allowed ({_show(rest)} were unexpected)")
        return
    for i, value in enumerate(rest, len(items)):
        _validate(value, extra, base, (path, i), errors)


def _kw_min_items(n, inst, schema, base, path, errors):
    if isinstance(inst, list) and len(inst) < n:
        msg = "should be non-empty" if n == 1 else "is too short"
        _fail(errors, path, f"{_show(inst)} {msg}")


def _kw_max_items(n, inst, schema, base, path, errors):
    if isinstance(inst, list) and len(inst) > n:
        msg = "is expected to be empty" if n == 0 else "is too long"
        _fail(errors, path, f"{_show(inst)} {msg}")


def _kw_unique_items(unique, inst, schema, base, path, errors):
    if not unique or not isinstance(inst, list):
        return
    for i, a in enumerate(inst):
        for b in inst[i + 1:]:
            if _equal(a, b):
                _fail(errors, path, f"{_show(inst)} has non-unique elements")
                return


def _kw_minimum(limit, inst, schema, base, path, errors):
    if not _is_number(inst):
        return
    if schema.get("exclusiveMinimum", False):
        if inst <= limit:
            _fail(errors, path, f"{_show(inst)} is less than or equal to the minimum of {_show(limit)}")
    elif inst < limit:
        _fail(errors, path, f"{_show(inst)} is less than the minimum of {_show(limit)}")


def _kw_maximum(limit, inst, schema, base, path, errors):
    if not _is_number(inst):
        return
    if schema.get("exclusiveMaximum", False):
        if inst >= limit:
            _fail(errors, path, f"{_show(inst)} is greater than or equal to the maximum of {_show(limit)}")
    elif inst > limit:
        _fail(errors, path, f"{_show(inst)} is greater than the maximum of {_show(limit)}")


def _kw_multiple_of(factor, inst, schema, base, path, errors):
    if not _is_number(inst):
        return
    if isinstance(factor, float):
        quotient = inst / factor
        try:
            ok = int(quotient) == quotient
        except (OverflowError, ValueError):
            ok = False
    else:
        ok = inst % factor == 0
    if not ok:
        _fail(errors, path, f"{_show(inst)} is not a multiple of {_show(factor)}")


def _kw_min_length(n, inst, schema, base, path, errors):
    if isinstance(inst, str) and len(inst) < n:
        msg = "should be non-empty" if n == 1 else "is too short"
        _fail(errors, path, f"{_show(inst)} {msg}")


def _kw_max_length(n, inst, schema, base, path, errors):
    if isinstance(inst, str) and len(inst) > n:
        msg = "is expected to be empty" if n == 0 else "is too long"
        _fail(errors, path, f"{_show(inst)} {msg}")


def _kw_pattern(pattern, inst, schema, base, path, errors):
    if isinstance(inst, str) and not _matcher(pattern)(inst):
        _fail(errors, path, f"{_show(inst)} does not match {_show(pattern)}")


def _kw_all_of(subs, inst, schema, base, path, errors):
    for sub in subs:
        _validate(inst, sub, base, path, errors)


def _kw_any_of(subs, inst, schema, base, path, errors):
    for sub in subs:
        if _is_valid(inst, sub, base):
            return
    _fail(errors, path, _explained(f"{_show(inst)} is not valid under any of the given schemas", schema))


def _kw_one_of(subs, inst, schema, base, path, errors):
    matched = [sub for sub in subs if _is_valid(inst, sub, base)]
    if not matched:
        _fail(errors, path, _explained(f"{_show(inst)} is not valid under any of the given schemas", schema))
    elif len(matched) > 1:
        shown = ", ".join(_show(m) for m in matched)
        _fail(errors, path, _explained(f"{_show(inst)} is valid under each of {shown}", schema))


def _kw_not(sub, inst, schema, base, path, errors):
    if _is_valid(inst, sub, base):
        _fail(errors, path, _explained(f"{_show(inst)} should not be valid under {_show(sub)}", schema))


_KEYWORDS = {
    "type": _kw_type,
    "enum": _kw_enum,
    "properties": _kw_properties,
    "patternProperties": _kw_pattern_properties,
    "additionalProperties": _kw_additional_properties,
    "required": _kw_required,
    "dependencies": _kw_dependencies,
    "minProperties": _kw_min_properties,
    "maxProperties": _kw_max_properties,
    "items": _kw_items,
    "additionalItems": _kw_additional_items,
    "minItems": _kw_min_items,
    "maxItems": _kw_max_items,
    "uniqueItems": _kw_unique_items,
    "minimum": _kw_minimum,
    "maximum": _kw_maximum,
    "multipleOf": _kw_multiple_of,
    "minLength": _kw_min_length,
    "maxLength": _kw_max_length,
    "pattern": _kw_pattern,
    "allOf": _kw_all_of,
    "anyOf": _kw_any_of,
    "oneOf": _kw_one_of,
    "not": _kw_not,
}

# Keywords that carry no validation rule for us (annotations / bookkeeping).
# Anything outside _KEYWORDS and this set is unsupported and must not be
# used in spec/*.json.
_NON_VALIDATING = frozenset(
    {"$schema", "title", "description", "definitions", "default",
     "exclusiveMinimum", "exclusiveMaximum"}
)
