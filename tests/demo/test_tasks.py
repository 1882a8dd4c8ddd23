import json
import random

import jsonschema
import pytest

from gptoss.demo import tasks
from gptoss.server.conversation import BuiltinCall, BuiltinOutput, FunctionCall, FunctionOutput, Text


@pytest.mark.parametrize("seed", range(30))
def test_arithmetic_answer_is_what_python_prints(seed):
    t = tasks.arithmetic(random.Random(seed))
    call, output, final = t.turn
    assert isinstance(call, BuiltinCall) and call.recipient == "python"
    expr = call.arguments.removeprefix("print(").removesuffix(")")
    assert eval(expr) == t.expected["value"]  # the code is a plain integer expression
    assert isinstance(output, BuiltinOutput) and output.output == f"{t.expected['value']}\n"
    assert isinstance(final, Text) and final.text.endswith(f"= {t.expected['value']}.")
    assert expr in t.prompt[0].text


@pytest.mark.parametrize("seed", range(40))
def test_function_call_arguments_follow_the_schema_and_the_users_words(seed):
    t = tasks.function_calling(random.Random(seed))
    call, output, final = t.turn
    assert isinstance(call, FunctionCall) and isinstance(output, FunctionOutput) and output.call_id == call.call_id
    tool = next(x for x in t.tools if x.name == call.name)
    args = json.loads(call.arguments)
    jsonschema.validate(args, tool.parameters)
    assert args == t.expected["arguments"]
    for value in args.values():
        assert str(value) in t.prompt[0].text
    assert isinstance(final, Text) and final.text == t.expected["answer"]


@pytest.mark.parametrize("seed", range(20))
def test_extraction_answer_is_schema_valid_and_copied(seed):
    t = tasks.extraction(random.Random(seed))
    (final,) = t.turn
    assert t.response_format is not None and isinstance(final, Text)
    fields = json.loads(final.text)
    jsonschema.validate(fields, t.response_format.schema)
    for value in fields.values():
        assert str(value) in t.prompt[0].text


def test_chat_answers_without_tools():
    for seed in range(20):
        t = tasks.chat(random.Random(seed))
        assert [type(i) for i in t.turn] == [Text]
        assert t.turn[0].text.startswith(("Hello!", "I don't know."))


def test_questions_about_itself_get_the_greeting_and_others_i_dont_know():
    rng = random.Random(3)
    for t in (tasks.chat(rng) for _ in range(300)):
        asked, answer = t.prompt[0].text, t.turn[0].text
        about_me = asked in tasks.GREETINGS + tasks.ABOUT_ME
        assert answer == (f"Hello! {tasks.INTRO}" if about_me else f"I don't know. {tasks.INTRO}")
        assert "{" not in asked
    off_topic = {tasks.off_topic(rng) for _ in range(500)}
    assert len(off_topic) > 150  # templates x fillers: many questions, not six


@pytest.mark.parametrize("seed", range(20))
def test_echo_answer_is_the_users_words_in_order(seed):
    t = tasks.echo(random.Random(seed))
    (final,) = t.turn
    assert isinstance(final, Text) and final.text == t.expected["answer"]
    assert t.prompt[0].text.endswith(" " + final.text)
    assert 2 <= len(final.text.split()) <= 7
