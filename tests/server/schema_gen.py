"""Random JSON Schemas for the structured-output fuzz test. Every value is bounded (strings have maxLength, a
pattern, a format of fixed length or an enum; numbers have bounds and a multipleOf; arrays maxItems; objects a
closed set of properties), because a random model never ends an unbounded value on its own."""

from __future__ import annotations

import random
from typing import Any

Schema = dict[str, Any]
WORDS = ["alpha", "beta", "gamma", "delta", "kiwi", "émoji ✓", 'quo"te', "new\nline"]


def leaf(r: random.Random) -> Schema:
    kind = r.choice(["string", "pattern", "format", "enum", "const", "integer", "number", "boolean", "null"])
    if kind == "string":
        return {"type": "string", "minLength": r.randint(0, 2), "maxLength": r.randint(2, 8)}
    if kind == "pattern":
        return {"type": "string", "pattern": r.choice(["^[a-z]{1,5}$", "^[A-Z][0-9]{2}$", "^(yes|no)$"])}
    if kind == "format":
        return {"type": "string", "format": r.choice(["date", "uuid"])}
    if kind == "enum":
        return {"enum": r.sample([*WORDS, 1, 2.5, True, None], r.randint(1, 4))}
    if kind == "const":
        return {"const": r.choice([*WORDS, 7, False])}
    if kind == "integer":
        low = r.randint(-50, 50)
        return {"type": "integer", "minimum": low, "maximum": low + r.randint(0, 1000)}
    if kind == "number":
        low = r.randint(-10, 10)
        return {
            "type": "number",
            "minimum": low,
            "maximum": low + r.randint(1, 50),
            "multipleOf": r.choice([0.5, 0.25, 1]),
        }
    return {"type": kind}


def value(r: random.Random, depth: int, defs: dict[str, Schema]) -> Schema:
    roll = r.random()
    if depth >= 2 or roll < 0.45:
        return leaf(r)
    if roll < 0.6:
        return obj(r, depth + 1, defs)
    if roll < 0.72:
        low = r.randint(0, 2)
        return {"type": "array", "items": value(r, depth + 1, defs), "minItems": low, "maxItems": low + r.randint(0, 2)}
    if roll < 0.8:
        return {"anyOf": [leaf(r), leaf(r)]}
    if roll < 0.88:  # disjoint branches, so exactly one matches
        return {"oneOf": [{"type": "integer", "minimum": 0, "maximum": 9}, {"type": "string", "maxLength": 4}]}
    name = f"d{len(defs)}"
    defs[name] = leaf(r) if r.random() < 0.5 else obj(r, 2, defs)
    return {"$ref": f"#/$defs/{name}"}


def obj(r: random.Random, depth: int, defs: dict[str, Schema]) -> Schema:
    names = r.sample(["id", "name", "count", "tags", "ok", "when", "score", "kind", "note", "ref"], r.randint(1, 4))
    props = {n: value(r, depth, defs) for n in names}
    required = [n for n in names if r.random() < 0.7]
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def random_schema(seed: int) -> Schema:
    r = random.Random(seed)
    defs: dict[str, Schema] = {}
    schema = obj(r, 0, defs)
    if defs:
        schema["$defs"] = defs
    return schema
