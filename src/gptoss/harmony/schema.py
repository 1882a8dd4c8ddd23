"""Structural checks on the JSON Schemas given as tool parameters and response formats.

openai-harmony renders anything (a malformed schema quietly becomes `any`), so a typo such as `"type": "strng"`
or `"required": "x"` reaches the model unnoticed. We reject what is not JSON Schema at all, naming the path, and
accept every valid schema, including keywords the TypeScript rendering ignores (anyOf, $ref, const, ...).
"""

from __future__ import annotations

import math
from typing import Any

from gptoss.harmony.errors import HarmonyError

JSON_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
SCHEMA_LIST_KEYS = ("oneOf", "anyOf", "allOf", "prefixItems")
SCHEMA_MAP_KEYS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
SCHEMA_KEYS = ("not", "additionalProperties", "contains", "propertyNames", "if", "then", "else")
STRING_KEYS = ("description", "title", "$ref", "$id", "$schema", "pattern", "format")


def check_json_value(value: object, where: str) -> None:
    """Only what JSON can carry: no NaN/inf, no tuples or sets, string keys only."""
    if value is None or isinstance(value, bool | str | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise HarmonyError(f"{where}: {value} is not a JSON number")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_json_value(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise HarmonyError(f"{where}: object key {key!r} is not a string")
            check_json_value(item, f"{where}.{key}")
        return
    raise HarmonyError(f"{where}: {type(value).__name__} is not a JSON value")


def check_tool_parameters(parameters: object, where: str) -> None:
    """Tool parameters: None (a tool without arguments) or a JSON Schema object."""
    if parameters is None:
        return
    if not isinstance(parameters, dict):
        raise HarmonyError(f"{where}: must be a JSON Schema object, got {type(parameters).__name__}")
    check_json_value(parameters, where)
    check_schema(parameters, where)


def check_schema(schema: object, where: str) -> None:
    """Recursively check that `schema` is shaped like a JSON Schema (a boolean or an object of keywords)."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise HarmonyError(f"{where}: a JSON Schema must be an object or a boolean, got {type(schema).__name__}")
    check_type_keyword(schema, where)
    check_keyword_shapes(schema, where)
    check_subschemas(schema, where)


def check_type_keyword(schema: dict[str, Any], where: str) -> None:
    if "type" not in schema:
        return
    kind = schema["type"]
    names = kind if isinstance(kind, list) else [kind]
    if isinstance(kind, list) and not kind:
        raise HarmonyError(f"{where}.type: an empty list of types")
    for name in names:
        if name not in JSON_TYPES:
            raise HarmonyError(f"{where}.type: unknown type {name!r} (expected one of: {', '.join(JSON_TYPES)})")


def check_keyword_shapes(schema: dict[str, Any], where: str) -> None:
    for key in STRING_KEYS:
        if key in schema and not isinstance(schema[key], str):
            raise HarmonyError(f"{where}.{key}: must be a string")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise HarmonyError(f"{where}.required: must be a list of property names")
    for key in ("enum", "examples"):
        if key in schema and not isinstance(schema[key], list):
            raise HarmonyError(f"{where}.{key}: must be a list")
    if "nullable" in schema and not isinstance(schema["nullable"], bool):
        raise HarmonyError(f"{where}.nullable: must be true or false")


def check_subschemas(schema: dict[str, Any], where: str) -> None:
    for key in SCHEMA_LIST_KEYS:
        if key in schema:
            items = schema[key]
            if not isinstance(items, list) or not items:
                raise HarmonyError(f"{where}.{key}: must be a non-empty list of schemas")
            for i, sub in enumerate(items):
                check_schema(sub, f"{where}.{key}[{i}]")
    for key in SCHEMA_MAP_KEYS:
        if key in schema:
            if not isinstance(schema[key], dict):
                raise HarmonyError(f"{where}.{key}: must be an object mapping names to schemas")
            for name, sub in schema[key].items():
                check_schema(sub, f"{where}.{key}.{name}")
    for key in SCHEMA_KEYS:
        if key in schema:
            check_schema(schema[key], f"{where}.{key}")
    items = schema.get("items")
    if isinstance(items, list):  # the older tuple form
        for i, sub in enumerate(items):
            check_schema(sub, f"{where}.items[{i}]")
    elif "items" in schema:
        check_schema(items, f"{where}.items")
