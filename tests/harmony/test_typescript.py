"""JSON Schema -> TypeScript: the quirks the reference lists, literal formatting (serde_json floats), and the
schema checks that reject what is not JSON Schema."""

from __future__ import annotations

import functools
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gptoss.harmony as gh
from gptoss.harmony import HarmonyError
from gptoss.harmony.jsonnum import serde_parse
from gptoss.harmony.schema import check_tool_parameters
from gptoss.harmony.typescript import serde_display, to_typescript


def params(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "string"}, "string"),
        ({"type": ["integer", "null"]}, "number | null"),
        ({"anyOf": [{"type": "string"}]}, "any"),
        ({"$ref": "#/x"}, "any"),
        ({"enum": ["a"]}, "any"),
        (True, "any"),
        ({"type": "array"}, "Array<any>"),
        ({"type": "object", "properties": {}}, "{\n}"),
        ({"oneOf": [{"type": "string"}, {"type": "number", "description": "num"}]}, "\n | string\n | number // num"),
        (
            params(m={"type": "array", "items": {"type": "string", "enum": ["u", "v"]}, "default": ["u"]}),
            '{\nm?: "u" | "v"[], // default: ["u"]\n}',
        ),
        (params(s={"type": "string", "default": 'with "quote"'}), '{\ns?: string, // default: "with "quote""\n}'),
        (params(d={"type": "string", "description": "line1\nline2"}), "{\n// line1\nline2\nd?: string,\n}"),
        (
            params(a={"type": "object", "description": "nested obj", "properties": {"x": {"type": "number"}}}),
            "{\n// nested obj\na?:     // nested obj\n{\n    x?: number,\n    },\n}",
        ),
    ],
)
def test_quirks(schema: Any, expected: str) -> None:
    assert to_typescript(schema) == expected


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1e15, "1000000000000000.0"),
        (1e16, "1e16"),
        (1e-4, "0.0001"),
        (1e-5, "0.00001"),
        (1e-6, "1e-6"),
        (-2.5e30, "-2.5e30"),
        (0.1, "0.1"),
        (2.0, "2.0"),
        (-0.0, "-0.0"),
        (2**70, "1.1805916207174113e21"),
        (-(2**63), "-9223372036854775808"),
        ({"k": [None, True, "é\n"]}, '{"k":[null,true,"é\\n"]}'),
    ],
)
def test_serde_display(value: Any, text: str) -> None:
    assert serde_display(value) == text


def test_serde_parse_and_display_reject_non_json() -> None:
    with pytest.raises(HarmonyError, match="not a JSON number: 'NaN'"):
        serde_parse("NaN")
    with pytest.raises(TypeError, match="not a JSON value: b'x'"):
        serde_display(b"x")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3.758518362345901e+49", 3.7585183623459005e49),  # serde's fast parse is not correctly rounded
        ("18446744073709551615", 2**64 - 1),
        ("18446744073709551616", 1.8446744073709552e19),
        ("-9223372036854775808", -(2**63)),
        ("-9223372036854775809", -9.223372036854776e18),
        ("1e400", None),
    ],
)
def test_serde_parse(text: str, value: float | None) -> None:
    if value is None:
        with pytest.raises(HarmonyError, match="number out of range in a tool schema"):
            serde_parse(text)
    else:
        parsed = serde_parse(text)
        assert parsed == value and type(parsed) is type(value)


@functools.cache
def _encodings() -> tuple[Any, Any]:
    import openai_harmony

    name = "HarmonyGptOss"
    return gh.load_harmony_encoding(name), openai_harmony.load_harmony_encoding(name)


def render_tool(m: Any, encoding: Any, parameters: dict[str, Any]) -> list[int]:
    developer = m.DeveloperContent.new().with_function_tools([m.ToolDescription.new("f", "", parameters)])
    return list(encoding.render(m.Message.from_role_and_content(m.Role.DEVELOPER, developer)))


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**80), 2**80)))
def test_literals_match_openai_harmony(value: float) -> None:
    import openai_harmony

    enc, oh_enc = _encodings()
    schema = params(x={"type": "number", "default": value, "examples": [value]}, y={"default": [value, {"v": value}]})
    assert render_tool(gh, enc, schema) == render_tool(openai_harmony, oh_enc, schema)


INVALID = [
    (params(a={"type": "strng"}), r"parameters\.properties\.a\.type: unknown type 'strng' \(expected one of: object"),
    (params(a={"type": []}), r"properties\.a\.type: an empty list of types"),
    (params(a={"type": ["string", 3]}), r"properties\.a\.type: unknown type 3"),
    ({"type": "object", "required": "a"}, r"parameters\.required: must be a list of property names"),
    ({"type": "object", "properties": ["a"]}, r"parameters\.properties: must be an object mapping names to schemas"),
    (params(a={"oneOf": []}), r"properties\.a\.oneOf: must be a non-empty list of schemas"),
    (params(a={"items": 3}), r"properties\.a\.items: a JSON Schema must be an object or a boolean, got int"),
    (params(a={"items": [{}, "x"]}), r"properties\.a\.items\[1\]: a JSON Schema must be an object or a boolean"),
    (params(a={"not": []}), r"properties\.a\.not: a JSON Schema must be an object or a boolean, got list"),
    (params(a={"enum": "x"}), r"properties\.a\.enum: must be a list"),
    (params(a={"description": 1}), r"properties\.a\.description: must be a string"),
    (params(a={"nullable": "yes"}), r"properties\.a\.nullable: must be true or false"),
    (params(a={"default": math.nan}), r"parameters\.properties\.a\.default: nan is not a JSON number"),
    (params(a={"default": {1: 2}}), r"properties\.a\.default: object key 1 is not a string"),
    (params(a={"default": (1, 2)}), r"properties\.a\.default: tuple is not a JSON value"),
    ("string", r"parameters: must be a JSON Schema object, got str"),
]


@pytest.mark.parametrize(("schema", "message"), INVALID)
def test_invalid_schemas_name_the_path(schema: Any, message: str) -> None:
    with pytest.raises(HarmonyError, match=message):
        check_tool_parameters(schema, "parameters")


def test_valid_schemas_pass() -> None:
    schema = params(
        a={"anyOf": [{"type": "string"}, True]},
        b={"type": "array", "items": [{"type": "string"}], "prefixItems": [False]},
        c={"$ref": "#/$defs/c", "$defs": {"c": {"const": 1}}},
        d={"type": "object", "additionalProperties": {"type": "number"}, "not": {"type": "null"}},
    )
    check_tool_parameters(schema, "parameters")
    check_tool_parameters(None, "parameters")
