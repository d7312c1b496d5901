"""Envoy's own validation constraints, read from its proto descriptors (protoc-gen-validate).

Envoy checks every xDS message against the `validate.rules` options of its
protos (`port_value` lte 65535, `load_balancing_weight` gte 1, `priority` lte
128, ...). `violations(message)` checks a parsed message against those same
options, so the tests restate no number. A rule this checker does not know
raises instead of passing silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from google.protobuf import duration_pb2
from google.protobuf.message import Message
from validate import validate_pb2

WRAPPERS = {
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
}
KNOWN_REGEXES = {
    # PGV's HTTP_HEADER_NAME and HTTP_HEADER_VALUE (strict), as in its generated validators.
    validate_pb2.HTTP_HEADER_NAME: r"^:?[0-9a-zA-Z!#$%&'*+-.^_|~`]+$",
    validate_pb2.HTTP_HEADER_VALUE: r"^[^\u0000-\u0008\u000A-\u001F\u007F]*$",
}


class UnknownRule(NotImplementedError):
    pass


def _seconds(duration: duration_pb2.Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def _range(value: float, rules: Any, convert=lambda v: v) -> Iterator[str]:
    """PGV's numeric rules: const, in, not_in, and lt/lte/gt/gte (an exclusive outside range when upper < lower)."""
    fields = {f.name: convert(v) for f, v in rules.ListFields() if f.name not in ("in", "not_in", "ignore_empty")}
    for name in fields:
        if name not in ("const", "lt", "lte", "gt", "gte", "required"):
            raise UnknownRule(f"{type(rules).__name__}.{name}")
    if "const" in fields and value != fields["const"]:
        yield f"must equal {fields['const']}"
    members = [convert(v) for v in getattr(rules, "in", [])]
    if members and value not in members:
        yield f"must be one of {members}"
    if value in [convert(v) for v in getattr(rules, "not_in", [])]:
        yield "is a forbidden value"
    lower = ("gt", fields["gt"]) if "gt" in fields else ("gte", fields["gte"]) if "gte" in fields else None
    upper = ("lt", fields["lt"]) if "lt" in fields else ("lte", fields["lte"]) if "lte" in fields else None
    above = lower is None or (value > lower[1] if lower[0] == "gt" else value >= lower[1])
    below = upper is None or (value < upper[1] if upper[0] == "lt" else value <= upper[1])
    if lower and upper and upper[1] < lower[1]:
        if not (above or below):
            yield f"must be outside ({upper[0]} {upper[1]}, {lower[0]} {lower[1]})"
    elif not (above and below):
        yield "must be " + " and ".join(f"{name} {bound}" for name, bound in filter(None, (lower, upper)))


STRING_RULES = {
    "min_len": lambda value, expected: len(value) >= expected,
    "max_len": lambda value, expected: len(value) <= expected,
    "len": lambda value, expected: len(value) == expected,
    "min_bytes": lambda value, expected: len(value.encode()) >= expected,
    "max_bytes": lambda value, expected: len(value.encode()) <= expected,
    "len_bytes": lambda value, expected: len(value.encode()) == expected,
    "prefix": lambda value, expected: value.startswith(expected),
    "suffix": lambda value, expected: value.endswith(expected),
    "contains": lambda value, expected: expected in value,
    "not_contains": lambda value, expected: expected not in value,
    "pattern": lambda value, expected: re.search(expected, value) is not None,
    "in": lambda value, expected: value in expected,
    "not_in": lambda value, expected: value not in expected,
    "well_known_regex": lambda value, expected: re.match(KNOWN_REGEXES[expected], value) is not None,
    # Qualifiers: strict only selects well_known_regex's strict form (the one above).
    "strict": lambda value, expected: True,
    "ignore_empty": lambda value, expected: True,
}


def _string(value: str, rules: validate_pb2.StringRules) -> Iterator[str]:
    if rules.ignore_empty and value == "":
        return
    for field, expected in rules.ListFields():
        check = STRING_RULES.get(field.name)
        if check is None:
            raise UnknownRule(f"StringRules.{field.name}")
        if not check(value, expected):
            yield f"breaks string rule {field.name} {expected!r}"


def _value_rules(value: Any, rules: validate_pb2.FieldRules, field) -> Iterator[str]:
    """Rules of the `type` oneof applied to one (non-repeated) value."""
    kind = rules.WhichOneof("type")
    if kind is None:
        return
    typed = getattr(rules, kind)
    if field.message_type is not None and field.message_type.full_name in WRAPPERS:
        value = value.value
    if kind in ("float", "double", "int32", "int64", "uint32", "uint64", "sint32", "sint64") or "fixed" in kind:
        yield from _range(value, typed)
    elif kind == "bool":
        if typed.HasField("const") and value != typed.const:
            yield f"must be {typed.const}"
    elif kind == "string":
        yield from _string(value, typed)
    elif kind == "enum":
        for f, expected in typed.ListFields():
            if f.name == "defined_only":
                if expected and field.enum_type.values_by_number.get(value) is None:
                    yield f"{value} is not a defined {field.enum_type.name}"
            elif f.name in ("const", "in", "not_in"):
                yield from _range(value, typed)
            else:
                raise UnknownRule(f"EnumRules.{f.name}")
    elif kind == "duration":
        yield from _range(_seconds(value), typed, convert=lambda v: _seconds(v) if isinstance(v, Message) else v)
    elif kind == "any":
        for f, _ in typed.ListFields():
            if f.name not in ("required", "in", "not_in"):
                raise UnknownRule(f"AnyRules.{f.name}")
        allowed = list(getattr(typed, "in"))
        if allowed and value.type_url not in allowed:
            yield f"type {value.type_url} is not allowed"
    else:
        raise UnknownRule(f"FieldRules.{kind}")


def _field_violations(message: Message, field) -> Iterator[str]:
    options = field.GetOptions()
    rules = options.Extensions[validate_pb2.rules] if options.HasExtension(validate_pb2.rules) else None
    value = getattr(message, field.name)
    is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
    if rules is not None:
        if rules.HasField("message"):
            for f, _ in rules.message.ListFields():
                if f.name not in ("required", "skip"):
                    raise UnknownRule(f"MessageRules.{f.name}")
            if rules.message.required and not message.HasField(field.name):
                yield ": is required"
        kind = rules.WhichOneof("type")
        if kind == "repeated":
            repeated = rules.repeated
            for f, _ in repeated.ListFields():
                if f.name not in ("min_items", "max_items", "unique", "items", "ignore_empty"):
                    raise UnknownRule(f"RepeatedRules.{f.name}")
            if repeated.HasField("min_items") and len(value) < repeated.min_items:
                yield f": must have at least {repeated.min_items} items"
            if repeated.HasField("max_items") and len(value) > repeated.max_items:
                yield f": must have at most {repeated.max_items} items"
            if repeated.unique and len(set(value)) != len(value):
                yield ": items must be unique"
            if repeated.HasField("items"):
                for index, item in enumerate(value):
                    yield from (f"[{index}]: {v}" for v in _value_rules(item, repeated.items, field))
        elif kind == "map":
            pairs = rules.map
            for f, _ in pairs.ListFields():
                if f.name not in ("min_pairs", "max_pairs", "keys", "values", "no_sparse", "ignore_empty"):
                    raise UnknownRule(f"MapRules.{f.name}")
            if pairs.HasField("min_pairs") and len(value) < pairs.min_pairs:
                yield f": must have at least {pairs.min_pairs} entries"
            if pairs.HasField("max_pairs") and len(value) > pairs.max_pairs:
                yield f": must have at most {pairs.max_pairs} entries"
            entry = field.message_type
            for key, item in value.items():
                if pairs.HasField("keys"):
                    yield from (f"[{key!r}]: {v}" for v in _value_rules(key, pairs.keys, entry.fields_by_name["key"]))
                if pairs.HasField("values"):
                    yield from (
                        f"[{key!r}]: {v}" for v in _value_rules(item, pairs.values, entry.fields_by_name["value"])
                    )
        elif kind is not None and not field.is_repeated:
            if field.message_type is None or message.HasField(field.name):
                yield from (f": {v}" for v in _value_rules(value, rules, field))
            elif getattr(getattr(rules, kind), "required", False):  # duration, timestamp, any
                yield ": is required"
    # Recurse into the messages held by this field.
    if field.message_type is None or (rules is not None and rules.message.skip):
        return
    if is_map:
        if field.message_type.fields_by_name["value"].message_type is not None:
            for key, item in value.items():
                yield from (f"[{key!r}].{v}" for v in violations(item))
    elif field.is_repeated:
        for index, item in enumerate(value):
            yield from (f"[{index}].{v}" for v in violations(item))
    elif message.HasField(field.name):
        yield from (f".{v}" for v in violations(value))


def violations(message: Message) -> list[str]:
    """Every PGV constraint of `message` and of the messages inside it that its value breaks, as `path: rule`."""
    descriptor = message.DESCRIPTOR
    found: list[str] = []
    for oneof in descriptor.oneofs:
        options = oneof.GetOptions()
        required = options.HasExtension(validate_pb2.required) and options.Extensions[validate_pb2.required]
        if required and message.WhichOneof(oneof.name) is None:
            found.append(f"{oneof.name}: one of its fields is required ({descriptor.name})")
    for field in descriptor.fields:
        found += [field.name + v for v in _field_violations(message, field)]
    return found


def constraints(descriptor) -> dict[str, str]:
    """The field rules declared on one message type, by field name (to show what is checked)."""
    out = {}
    for field in descriptor.fields:
        options = field.GetOptions()
        if options.HasExtension(validate_pb2.rules):
            out[field.name] = str(options.Extensions[validate_pb2.rules]).replace("\n", " ").strip()
    return out
