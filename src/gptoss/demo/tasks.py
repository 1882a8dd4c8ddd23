"""The demo model's five task families, each a seeded function `rng -> Task`.

A task is a prompt (server items: the user's words, the declared tools, a response format) and the assistant turn
that answers it (reasoning, a tool call, the tool's reply, the final answer), plus what a correct turn contains
(`expected`), which the eval compares against. Word lists are small on purpose: the model is tiny and only ever
sees these words (the tokens outside them keep zero embedding rows), and held-out prompts are new combinations.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gptoss.server.conversation import (
    BuiltinCall,
    BuiltinOutput,
    FunctionCall,
    FunctionOutput,
    FunctionTool,
    Item,
    ResponseFormat,
    Text,
)

CITIES = ("Paris", "Lisbon", "Tokyo", "Berlin", "Madrid", "Oslo", "Cairo", "Lima", "Boston", "Sydney", "Dublin")
NAMES = ("Alice", "Bob", "Carla", "David", "Emma", "Felix", "Grace", "Hugo", "Irene", "Jonas", "Laura", "Marco")
SURNAMES = tuple(f"{n}son" for n in NAMES)  # "Laurason": two or three tokens, unlike the names
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CHF", "CAD")
UNITS: tuple[tuple[str, str, float], ...] = (
    ("kilometers", "miles", 0.621371),
    ("miles", "kilometers", 1.609344),
    ("kilograms", "pounds", 2.204623),
    ("pounds", "kilograms", 0.453592),
    ("meters", "feet", 3.28084),
    ("liters", "gallons", 0.264172),
)
CONDITIONS = ("sunny", "cloudy", "rainy", "windy", "snowy", "foggy")
OPS = (("+", "sum"), ("-", "difference"), ("*", "product"))
# Numbers the user types have at most 3 digits (2 in arithmetic): o200k_harmony makes each one token, so a
# tiny model copies one token per number and sees each often; python's results and the tools' replies may be longer.


@dataclass(frozen=True)
class Task:
    family: str
    prompt: tuple[Item, ...]  # the user's message(s)
    turn: tuple[Item, ...]  # the assistant turn after the reasoning: calls, tool replies, the final answer
    thoughts: tuple[str, ...]  # reasoning sentences, most important first (effort picks how many)
    expected: dict[str, Any]
    tools: tuple[FunctionTool, ...] = ()
    python: bool = False
    response_format: ResponseFormat | None = None
    instructions: str | None = None


def arithmetic(rng: random.Random) -> Task:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    op, name = rng.choice(OPS)
    expr = f"{a} {op} {b}"
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    question = rng.choice(("What is {e}?", "Compute {e}.", "Please calculate {e}", "how much is {e}?", "{e} = ?"))
    thoughts = (
        f"The user wants {expr}.",
        "I will compute it with the python tool.",
        f"This is the {name} of {a} and {b}.",
        "Python gives an exact result, so there is no arithmetic mistake.",
        "I print the expression and read the output.",
        "Then I state the result in one short sentence.",
    )
    turn: tuple[Item, ...] = (
        BuiltinCall("python", f"print({expr})"),
        BuiltinOutput("python", f"{value}\n"),
        Text("assistant", f"{expr} = {value}."),
    )
    return Task("arithmetic", (Text("user", question.format(e=expr)),), turn, thoughts, {"value": value}, python=True)


def compact_json(value: Any) -> str:
    """JSON as the server's grammar writes calls and response formats (harmony/grammar.py: no free whitespace), and
    as gpt-oss itself writes tool arguments; training on the spaced form left the model fighting the grammar."""
    return json.dumps(value, separators=(",", ":"))


def _schema(props: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required}


STR = {"type": "string"}
NUM = {"type": "number"}
TOOLS = {
    "get_weather": FunctionTool("get_weather", "Current weather in a city.", _schema({"city": STR}, ["city"])),
    "convert_units": FunctionTool(
        "convert_units",
        "Convert a value from one unit to another.",
        _schema({"value": NUM, "from_unit": STR, "to_unit": STR}, ["value", "from_unit", "to_unit"]),
    ),
    "convert_currency": FunctionTool(
        "convert_currency",
        "Convert an amount of money between currencies (ISO codes).",
        _schema({"amount": NUM, "from_currency": STR, "to_currency": STR}, ["amount", "from_currency", "to_currency"]),
    ),
    "lookup_contact": FunctionTool(
        "lookup_contact", "Find a person's phone number in the address book.", _schema({"name": STR}, ["name"])
    ),
    "get_order_status": FunctionTool(
        "get_order_status", "Status of an order by its number.", _schema({"order_id": STR}, ["order_id"])
    ),
}


def _call(rng: random.Random) -> tuple[str, dict[str, Any], str, dict[str, Any], str]:
    """(function, arguments, user text, tool result, final answer) for one random request."""
    kind = rng.choice(sorted(TOOLS))
    if kind == "get_weather":
        city, temp, cond = rng.choice(CITIES), rng.randint(-5, 35), rng.choice(CONDITIONS)
        user = rng.choice(("What's the weather in {c}?", "Is it cold in {c} today?", "weather {c}")).format(c=city)
        result = {"city": city, "temperature_c": temp, "condition": cond}
        return kind, {"city": city}, user, result, f"In {city} it is {temp} °C and {cond}."
    if kind == "convert_units":
        src, dst, factor = rng.choice(UNITS)
        value = rng.randint(1, 99)
        user = rng.choice(("Convert {v} {s} to {d}.", "How many {d} is {v} {s}?")).format(v=value, s=src, d=dst)
        out = round(value * factor, 2)
        args = {"value": value, "from_unit": src, "to_unit": dst}
        return kind, args, user, {"result": out, "unit": dst}, f"{value} {src} is {out} {dst}."
    if kind == "convert_currency":
        src, dst = rng.sample(CURRENCIES, 2)
        amount, rate = rng.randint(1, 99), rng.randint(20, 300) / 100
        user = rng.choice(("How much is {a} {s} in {d}?", "Convert {a} {s} to {d}.")).format(a=amount, s=src, d=dst)
        out = round(amount * rate, 2)
        args = {"amount": amount, "from_currency": src, "to_currency": dst}
        return kind, args, user, {"amount": out, "currency": dst}, f"{amount} {src} is {out} {dst}."
    if kind == "lookup_contact":
        name = f"{rng.choice(NAMES)} {rng.choice(SURNAMES)}"
        phone = f"555-{rng.randint(1000, 9999)}"
        user = rng.choice(("What is {n}'s phone number?", "Find the number of {n}.")).format(n=name)
        return kind, {"name": name}, user, {"name": name, "phone": phone}, f"{name}'s number is {phone}."
    order, status = str(rng.randint(100, 999)), rng.choice(("shipped", "delivered", "processing"))
    user = rng.choice(("Where is my order {o}?", "Status of order {o} please.")).format(o=order)
    return kind, {"order_id": order}, user, {"order_id": order, "status": status}, f"Order {order} is {status}."


def function_calling(rng: random.Random) -> Task:
    name, args, user, result, answer = _call(rng)
    others = [t for t in sorted(TOOLS) if t != name]
    declared = [name, *rng.sample(others, rng.randint(0, 2))]
    rng.shuffle(declared)
    call_id = f"call_{rng.randint(100000, 999999)}"
    thoughts = (
        f"The user asks something the {name} function answers.",
        f"I call {name} with {compact_json(args)}.",
        "The arguments come straight from the user's words.",
        f"The other declared functions do not fit this request; {name} does.",
        "After the call I answer with the result it returns.",
        "The answer should be one short sentence.",
    )
    turn: tuple[Item, ...] = (
        FunctionCall(call_id, name, compact_json(args)),
        FunctionOutput(call_id, json.dumps(result)),
        Text("assistant", answer),
    )
    tools = tuple(TOOLS[t] for t in declared)
    expected = {"name": name, "arguments": args, "answer": answer}
    return Task("function", (Text("user", user),), turn, thoughts, expected, tools=tools)


EXTRACTIONS: tuple[tuple[str, dict[str, Any], Callable[[random.Random], tuple[str, dict[str, Any]]]], ...] = (
    (
        "person",
        _schema({"name": STR, "age": {"type": "integer"}, "city": STR}, ["name", "age", "city"]),
        lambda r: _person(r),
    ),
    (
        "meeting",
        _schema({"with": STR, "day": STR, "hour": {"type": "integer"}}, ["with", "day", "hour"]),
        lambda r: _meeting(r),
    ),
)
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _person(rng: random.Random) -> tuple[str, dict[str, Any]]:
    name, age, city = rng.choice(NAMES), rng.randint(18, 90), rng.choice(CITIES)
    text = rng.choice(("{n} is {a} years old and lives in {c}.", "Meet {n} from {c}, aged {a}."))
    return text.format(n=name, a=age, c=city), {"name": name, "age": age, "city": city}


def _meeting(rng: random.Random) -> tuple[str, dict[str, Any]]:
    who, day, hour = rng.choice(NAMES), rng.choice(DAYS), rng.randint(8, 18)
    text = rng.choice(("Set up a meeting with {w} on {d} at {h}:00.", "{d} at {h}:00 I see {w}."))
    return text.format(w=who, d=day, h=hour), {"with": who, "day": day, "hour": hour}


def extraction(rng: random.Random) -> Task:
    name, schema, make = rng.choice(EXTRACTIONS)
    text, fields = make(rng)
    thoughts = (
        f"I extract the {name} fields from the text as JSON.",
        "Every value is copied from the user's words.",
        f"The schema asks for {', '.join(fields)}.",
        "Numbers stay numbers, names stay as written.",
        "Nothing outside the schema goes into the answer.",
        "The answer is the JSON object alone.",
    )
    answer = Text("assistant", compact_json(fields))
    fmt = ResponseFormat(name, schema)
    instructions = "Extract the requested fields from the user's text."
    return Task(
        "extraction",
        (Text("user", text),),
        (answer,),
        thoughts,
        {"fields": fields},
        response_format=fmt,
        instructions=instructions,
    )


GREETINGS = ("Hello!", "Hi", "hey there", "Good morning", "Hello, who are you?", "hi!")
UNKNOWN = (
    "What is the meaning of life?",
    "Who will win the next election?",
    "Write me a poem about the sea.",
    "What did I eat yesterday?",
    "Explain quantum gravity.",
    "Tell me a secret.",
)
# Questions about the model itself get the greeting's answer (what it can do).
ABOUT_ME = ("Who are you?", "What can you do?", "What are you?", "help", "What is your name?", "How are you?",
            "Are you a robot?", "What do you know?")  # fmt: skip
# Everything else it cannot know, from templates: six fixed questions taught the refusal, but other questions
# got a stray number or word ("Why is the sky blue?" -> "49").
OFF_TOPIC = (
    "Why is the {thing} {adj}?", "What is the capital of {country}?", "Tell me about {topic}.", "Explain {topic}.",
    "How do I {verb} a {obj}?", "What do you think about {topic}?", "Write a {form} about {topic}.",
    "Tell me a {form}.", "Who is the best {role}?", "What is {topic}?", "Can you help me {verb} a {obj}?",
    "Where is {country}?", "When did {topic} begin?", "Is {topic} good for me?",
)  # fmt: skip
FILLERS = {
    "thing": ("sky", "sea", "grass", "sun", "snow", "night"),
    "adj": ("blue", "green", "cold", "hot", "bright", "dark"),
    "country": ("France", "Japan", "Peru", "Egypt", "Norway", "Canada", "India"),
    "topic": ("history", "music", "the ocean", "space", "football", "cooking", "the moon", "politics", "love",
              "dinosaurs", "art", "philosophy", "gravity", "chess"),
    "verb": ("fix", "build", "cook", "paint", "clean", "sell"),
    "obj": ("bike", "cake", "house", "car", "garden", "chair"),
    "form": ("poem", "story", "joke", "song"),
    "role": ("singer", "writer", "painter", "player"),
}  # fmt: skip
INTRO = "I am a tiny demo model: I can do arithmetic with python, call your functions and extract fields as JSON."


def off_topic(rng: random.Random) -> str:
    template = rng.choice(OFF_TOPIC)
    return template.format(**{k: rng.choice(v) for k, v in FILLERS.items() if "{" + k + "}" in template})


def chat(rng: random.Random) -> Task:
    greeting = rng.random() < 0.4
    if greeting:
        user = rng.choice(GREETINGS + ABOUT_ME)
    else:
        user = rng.choice(UNKNOWN) if rng.random() < 0.25 else off_topic(rng)
    answer = f"Hello! {INTRO}" if greeting else f"I don't know. {INTRO}"
    thoughts = (
        "The user greets me." if greeting else "I cannot answer this question.",
        "No tool is needed here.",
        "I reply briefly and say what I can do.",
        "A tiny model should not make things up.",
        "So the answer stays short and honest.",
        "One or two sentences are enough.",
    )
    tools = tuple(TOOLS[t] for t in rng.sample(sorted(TOOLS), rng.randint(0, 2)))
    expected = {"answer": answer}
    return Task(
        "chat",
        (Text("user", user),),
        (Text("assistant", answer),),
        thoughts,
        expected,
        tools=tools,
        python=rng.random() < 0.3,
    )


ECHO_WORDS = (*CITIES, *NAMES, *DAYS, *CURRENCIES, *CONDITIONS)
DRILL_WORDS = (*ECHO_WORDS, *SURNAMES)  # the later phases' drill: also the contacts' multi-token surnames


def echo(rng: random.Random) -> Task:
    """Repeat the user's words: every answer token is a copy of one the user typed, in a random order the model
    cannot guess. With the server's real prompts around it, it links the copy drill (data.copy_drill, which is what
    makes copying form at all) to the tasks, whose numbers, names and cities are copies too."""
    count = rng.randint(2, 7)
    words = [str(rng.randint(2, 999)) if rng.random() < 0.5 else rng.choice(ECHO_WORDS) for _ in range(count)]
    said = " ".join(words)
    user = rng.choice(("Repeat after me: {w}", "Say {w}", "Echo: {w}", "Please repeat {w}")).format(w=said)
    thoughts = (
        f"The user wants me to repeat: {said}.",
        "I copy the words exactly, in the same order.",
        "No tool is needed for this.",
        "Nothing is added and nothing is left out.",
        "Numbers stay numbers, names stay as written.",
        "The answer is the words alone.",
    )
    return Task("echo", (Text("user", user),), (Text("assistant", said),), thoughts, {"answer": said})


FAMILIES: dict[str, Callable[[random.Random], Task]] = {
    "arithmetic": arithmetic,
    "function": function_calling,
    "extraction": extraction,
    "chat": chat,
    "echo": echo,
}
