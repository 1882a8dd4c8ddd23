"""JSON Schema -> the TypeScript-like signatures gpt-oss reads in the `# Tools` section.

This reproduces openai-harmony's renderer exactly, quirks included, because the model was trained on its output:
a nested object's closing brace is not dedented, an object's description is printed twice, `anyOf`/`$ref`/`const`
become `any`, string defaults are not escaped, and literal values (defaults) print the way Rust's serde_json
prints them (see jsonnum.py: `1e16` not `1e+16`, and serde's own float parsing).
"""

from __future__ import annotations

import json
from typing import Any

from gptoss.harmony.jsonnum import display_number


def serde_display(value: Any) -> str:
    """Compact JSON as serde_json's `Display` writes it, numbers as they come out of serde's parser."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return display_number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(serde_display(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{serde_display(k)}:{serde_display(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"not a JSON value: {value!r}")


def as_object(value: Any) -> dict[str, Any]:
    """Field lookups on a non-object schema find nothing, as serde's `Value::get` does."""
    return value if isinstance(value, dict) else {}


def is_enum(schema: dict[str, Any]) -> bool:
    enum = schema.get("enum")
    return isinstance(enum, list) and len(enum) > 0


def is_nullable(schema: Any) -> bool:
    return as_object(schema).get("nullable") is True


def with_null(schema: Any, rendered: str) -> str:
    return rendered + " | null" if is_nullable(schema) and "null" not in rendered else rendered


def default_note(schema: dict[str, Any], raw_enum_string: bool) -> str:
    """`default: ...` as openai-harmony words it; an enum's string default is raw in one place and JSON in another."""
    d = schema["default"]
    if isinstance(d, str) and not is_enum(schema):
        return f'default: "{d}"'
    if isinstance(d, str) and raw_enum_string:
        return f"default: {d}"
    return f"default: {serde_display(d)}"


def to_typescript(schema: Any, indent: str = "") -> str:
    if not isinstance(schema, dict):
        return "any"
    if isinstance(schema.get("oneOf"), list):
        return one_of_union(schema["oneOf"], indent)
    kind = schema.get("type")
    if isinstance(kind, list):
        names = ["number" if t == "integer" else t for t in kind if isinstance(t, str)]
        return " | ".join(names) if names else "any"
    if isinstance(kind, str):
        return typed(schema, kind, indent)
    return "any"


def one_of_union(variants: list[Any], indent: str) -> str:
    """A schema that is itself a oneOf: each variant on its own line, with its description/default trailing."""
    out = ""
    for variant in variants:
        out += f"\n{indent} | " + with_null(variant, to_typescript(variant, indent + "   "))
        v = as_object(variant)
        trailing = [v["description"]] if isinstance(v.get("description"), str) else []
        if "default" in v:
            trailing.append(default_note(v, raw_enum_string=False))
        if trailing:
            out += " // " + " ".join(trailing)
    return out


def typed(schema: dict[str, Any], kind: str, indent: str) -> str:
    if kind == "object":
        return object_type(schema, indent)
    if kind == "string":
        enum = schema.get("enum")
        strings = [s for s in enum if isinstance(s, str)] if isinstance(enum, list) else []
        return " | ".join(f'"{s}"' for s in strings) if strings else "string"
    if kind in ("number", "integer"):
        return "number"
    if kind == "boolean":
        return "boolean"
    if kind == "array":
        return to_typescript(schema["items"], indent) + "[]" if "items" in schema else "Array<any>"
    return "any"


def object_type(schema: dict[str, Any], indent: str) -> str:
    description = schema.get("description")
    out = f"{indent}// {description}\n" if isinstance(description, str) else ""
    out += "{\n"
    properties = schema.get("properties")
    if isinstance(properties, dict):
        required_list = schema.get("required")
        required = {r for r in required_list if isinstance(r, str)} if isinstance(required_list, list) else set()
        for key, value in properties.items():
            out += property_lines(key, value, key in required, indent)
    return out + indent + "}"  # the closing brace stays at the property's indent: openai-harmony's quirk


def property_comments(prop: dict[str, Any], indent: str) -> str:
    out = ""
    if isinstance(prop.get("title"), str):
        out += f"{indent}// {prop['title']}\n{indent}//\n"
    if "oneOf" not in prop and isinstance(prop.get("description"), str):
        out += f"{indent}// {prop['description']}\n"
    examples = prop.get("examples")
    if isinstance(examples, list) and examples:
        out += f"{indent}// Examples:\n"
        out += "".join(f'{indent}// - "{ex}"\n' for ex in examples if isinstance(ex, str))
    return out


def property_lines(key: str, value: Any, required: bool, indent: str) -> str:
    prop = as_object(value)
    out = property_comments(prop, indent)
    name = key if required else key + "?"
    if isinstance(prop.get("oneOf"), list):
        return out + one_of_property(name, prop, indent)
    out += f"{indent}{name}: " + with_null(value, to_typescript(value, indent + "    ")) + ","
    if "default" in prop:
        out += " // " + default_note(prop, raw_enum_string=True)
    return out + "\n"


def one_of_property(name: str, prop: dict[str, Any], indent: str) -> str:
    """A property whose schema is a oneOf: description and default above, one variant per line, then `,`."""
    variants: list[Any] = prop["oneOf"]
    pdesc = prop["description"] if isinstance(prop.get("description"), str) else None
    first = as_object(variants[0]) if variants else {}
    above = pdesc is not None and first.get("description") != pdesc
    out = f"{indent}// {pdesc}\n" if above else ""
    if "default" in prop:
        out += f"{indent}// {default_note(prop, raw_enum_string=True)}\n"
    out += f"{indent}{name}:\n"
    for i, variant in enumerate(variants):
        out += f"{indent} | " + with_null(variant, to_typescript(variant, indent + "   "))
        v = as_object(variant)
        trailing = []
        description = v.get("description")
        if not (i == 0 and above) and isinstance(description, str) and description != pdesc:
            trailing.append(description)
        if "default" in v:
            trailing.append(default_note(v, raw_enum_string=True))
        if trailing:
            out += " // " + " ".join(trailing)
        out += "\n"
    return out + indent + ",\n"
