"""The turn grammar and its constraint, driven token by token as the decode loop drives it (no model needed)."""

from __future__ import annotations

import json

import pytest
import torch

from gptoss.harmony import HarmonyEncoding
from gptoss.harmony.constraint import SchemaError, TurnConstraint, check_schema, turn_grammar, utf8_missing
from gptoss.harmony.grammar import ToolCallRule, TurnRules, Variant, lark

V = 201088
POINT = {
    "type": "object",
    "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 9}, "tag": {"enum": ["a", "b"]}},
    "required": ["x", "tag"],
    "additionalProperties": False,
}
WEATHER = ToolCallRule("functions.get_weather", {"type": "object", "properties": {"city": {"enum": ["Oslo", "Rome"]}}})


def tokens(enc: HarmonyEncoding, text: str) -> list[int]:
    return enc.encode(text, allowed_special="all")


def accepts(enc: HarmonyEncoding, rules: TurnRules, text: str, budget: int | None = None) -> bool:
    """Feeds text through the constraint: True if every token was allowed when it came."""
    c = TurnConstraint(turn_grammar(enc, rules), V, budget)
    for t in tokens(enc, text):
        if not bool(c.mask()[t]):
            return False
        c.advance(t)
    return True


def test_final_json_follows_free_reasoning(enc: HarmonyEncoding) -> None:
    rules = TurnRules(final_schema=POINT)
    ok = "<|channel|>analysis<|message|>Think {freely}.<|end|><|start|>assistant"
    ok += '<|channel|>final<|message|>{"x":3,"tag":"a"}<|return|>'
    assert accepts(enc, rules, ok)
    assert accepts(enc, rules, '<|channel|>final<|message|>{"x":3,"tag":"b"}<|return|>')  # reasoning is optional
    assert not accepts(enc, rules, '<|channel|>final<|message|>{"x": 3,"tag":"a"}<|return|>')  # compact JSON only
    assert not accepts(enc, rules, '<|channel|>final<|message|>{"x":12,"tag":"a"}<|return|>')  # out of bounds
    assert not accepts(enc, rules, '<|channel|>final<|message|>{"x":3}<|return|>')  # required missing
    assert not accepts(enc, rules, "<|channel|>final<|message|>Sure!<|return|>")
    assert not accepts(enc, rules, '<|channel|>commentary to=functions.f <|constrain|>json<|message|>{"a":1}<|call|>')


def test_tool_choice_modes(enc: HarmonyEncoding) -> None:
    other = ToolCallRule("functions.other", {"type": "object", "properties": {}, "additionalProperties": False})
    call = '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Oslo"}<|call|>'
    answer = "<|channel|>final<|message|>It rains.<|return|>"
    auto = TurnRules(calls=(WEATHER, other))
    assert accepts(enc, auto, call) and accepts(enc, auto, answer)
    assert not accepts(enc, auto, call.replace("Oslo", "Paris"))  # a started call is completed validly
    assert not accepts(enc, auto, call.replace("get_weather", "get_wether"))  # only declared recipients
    required = TurnRules(calls=(WEATHER, other), choice="required")
    assert accepts(enc, required, call) and not accepts(enc, required, answer)
    assert accepts(enc, required, "<|channel|>commentary to=functions.other <|constrain|>json<|message|>{}<|call|>")
    named = TurnRules(calls=(WEATHER, other), choice="function", function="other")
    assert not accepts(enc, named, call)
    none = TurnRules(calls=(WEATHER,), choice="none")
    assert accepts(enc, none, answer) and not accepts(enc, none, call)
    # a preamble may precede a call; the renderer's header order (recipient first) is accepted too
    preamble = "<|channel|>commentary<|message|>Checking.<|end|><|start|>assistant"
    assert accepts(enc, required, preamble + call)
    first = ' to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>{"city":"Rome"}<|call|>'
    assert accepts(enc, required, first)
    assert not accepts(enc, none, preamble + answer)  # no preambles when nothing can be called


def test_builtin_calls_have_their_own_rules(enc: HarmonyEncoding) -> None:
    search = ToolCallRule(
        "browser.search", {"type": "object", "properties": {"query": {"type": "string"}}}, False, True
    )
    python = ToolCallRule("python", None, builtin=True)
    rules = TurnRules(calls=(search, python), choice="required")
    assert accepts(enc, rules, '<|channel|>analysis to=browser.search<|message|>{"query":"kiwi"}<|call|>')
    assert not accepts(enc, rules, '<|channel|>analysis to=browser.search<|message|>{"query":1}<|call|>')
    assert accepts(enc, rules, "<|channel|>analysis to=python code<|message|>print(1)\n<|call|>")


def test_reasoning_budget_closes_the_analysis(enc: HarmonyEncoding) -> None:
    rules = TurnRules(final_schema=POINT)
    c = TurnConstraint(turn_grammar(enc, rules), V, reasoning_budget=5)
    for t in tokens(enc, "<|channel|>analysis<|message|>"):
        c.advance(t)
    end = tokens(enc, "<|end|>")[0]
    for t in tokens(enc, " one two three four five six"):
        if c.closed:
            break
        c.advance(t)
    assert c.reasoning_tokens == 5 and c.closed
    allowed = c.mask().nonzero().flatten().tolist()
    assert allowed == [end]  # only the end of the analysis message, then the structured part
    for t in tokens(enc, '<|end|><|start|>assistant<|channel|>final<|message|>{"x":1,"tag":"b"}<|return|>'):
        assert bool(c.mask()[t])
        c.advance(t)
    assert c.done


def test_zero_budget_allows_no_reasoning(enc: HarmonyEncoding) -> None:
    rules = TurnRules(final_schema=POINT)
    assert not accepts(enc, rules, "<|channel|>analysis<|message|>x<|end|>", budget=0)
    assert accepts(enc, rules, '<|channel|>final<|message|>{"x":0,"tag":"a"}<|return|>', budget=0)
    with pytest.raises(ValueError, match="reasoning_budget must be >= 0, got -1"):
        TurnConstraint(turn_grammar(enc, rules), V, -1)


def test_masks_are_computed_ahead_and_sized_to_the_logits(enc: HarmonyEncoding) -> None:
    c = TurnConstraint(turn_grammar(enc, TurnRules(final_schema=POINT)), V)
    mask = c.mask()
    assert mask.shape == (V,) and mask.dtype == torch.bool
    assert mask.nonzero().flatten().tolist() == tokens(enc, "<|channel|>") + tokens(enc, " to=")[:0]
    c.advance(tokens(enc, "<|channel|>")[0])
    assert c._next is not None  # the next mask is already being computed (on the worker thread)


def test_grammars_are_compiled_once(enc: HarmonyEncoding) -> None:
    rules = TurnRules(final_schema={"type": "object", "properties": {"k": {"const": 7}}})
    grammar = turn_grammar(enc, rules)
    from gptoss.harmony.constraint import compiled

    before = compiled.cache_info().hits
    turn_grammar(enc, TurnRules(final_schema={"type": "object", "properties": {"k": {"const": 7}}}))
    assert compiled.cache_info().hits == before + len(Variant)
    assert "%json" in lark(rules, Variant.FULL) and grammar.matcher(Variant.FULL) is not None


@pytest.mark.parametrize(
    ("schema", "strict", "message"),
    [
        ({"type": "array", "uniqueItems": True}, True, "cannot enforce the JSON Schema keyword(s) 'uniqueItems'"),
        ({"not": {"type": "string"}}, True, "keyword(s) 'not' in strict mode"),
        ({"type": "strng"}, False, "invalid JSON Schema at type: 'strng' is not valid"),
        ({"type": "string", "pattern": "(a"}, False, "invalid JSON Schema at pattern: '(a' is not a 'regex'"),
        ({"$ref": "#/$defs/missing"}, False, "invalid JSON Schema: Pointer '/$defs/missing' does not exist"),
        ([1, 2], False, "invalid JSON Schema: expected an object, got list"),
    ],
)
def test_schema_errors_name_the_problem(schema: object, strict: bool, message: str) -> None:
    with pytest.raises(SchemaError, match=message.replace("(", r"\(").replace(")", r"\)").replace("$", r"\$")) as e:
        check_schema(schema, strict, "text.format.schema")
    assert e.value.param == "text.format.schema"


def test_lenient_schemas_are_enforced_where_they_can_be(enc: HarmonyEncoding, caplog: pytest.LogCaptureFixture) -> None:
    schema = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 3}, "uniqueItems": True}
    check_schema(schema, False, "p")  # not strict: uniqueItems is ignored (and logged), the rest enforced
    assert 'p: not enforced (the schema is not strict): Unimplemented keys: ["uniqueItems"]' in caplog.text
    rules = TurnRules(final_schema=schema, final_strict=False)
    assert accepts(enc, rules, "<|channel|>final<|message|>[1,1]<|return|>")
    assert not accepts(enc, rules, "<|channel|>final<|message|>[7]<|return|>")
    assert json.loads("[1,1]") == [1, 1]


def test_utf8_missing() -> None:
    assert utf8_missing(b"abc") == 0 and utf8_missing(b"") == 0
    assert utf8_missing("é".encode()[:1]) == 1 and utf8_missing("é".encode()) == 0
    assert utf8_missing("✓".encode()[:1]) == 2 and utf8_missing("✓".encode()[:2]) == 1
    assert utf8_missing("😀".encode()[:1]) == 3 and utf8_missing(b"x" + "😀".encode()) == 0


def test_budget_cut_inside_a_character_completes_it_first(enc: HarmonyEncoding) -> None:
    lead, cont = (
        enc.tokenizer.encode_single_token(b"\xe2"),
        enc.tokenizer.encode_single_token(b"\x9c"),
    )  # two of the bytes of ✓
    c = TurnConstraint(turn_grammar(enc, TurnRules(final_schema=POINT)), V, reasoning_budget=2)
    for t in [*tokens(enc, "<|channel|>analysis<|message|>"), tokens(enc, "a")[0], lead]:
        c.advance(t)
    assert c.reasoning_tokens == 2 and not c.closed
    allowed = c.mask()
    assert bool(allowed[cont]) and not bool(allowed[tokens(enc, "<|end|>")[0]]) and not bool(allowed[lead])
    c.advance(cont)
    assert not c.closed  # one byte still missing
    c.advance(enc.tokenizer.encode_single_token(b"\x93"))
    assert c.closed and c.mask().nonzero().flatten().tolist() == tokens(enc, "<|end|>")
