"""Seeded generators of random harmony conversations (as openai-harmony's wire JSON) and token streams.

Both libraries read the same JSON, so a rendering difference can only come from the renderers. The generator aims
at the corners: random JSON schemas (oneOf, enums, nested objects, odd defaults and floats), built-in and custom
tool namespaces, analysis to drop across turns, tool calls and results, structured-output instructions, author
names, content types, empty strings, CRLF, emoji and special-token text inside content.
"""

from __future__ import annotations

import copy
import random
from typing import Any

from gptoss.harmony import ToolNamespaceConfig
from gptoss.harmony import tokenizer as tok

WORDS = [
    "hello",
    " world",
    "the",
    " weather",
    "\n",
    "\n\n",
    " ",
    "  ",
    "\t",
    "naïve",
    "🤖",
    "👩‍💻",
    "数据",
    "é",
    "Ω",
    "<|end|>",
    "<|start|>",
    "<|channel|>",
    "x",
    "A",
    "'s",
    "123",
    "3.14",
    "\r\n",
    "\r",
    "—",
    "{",
    "}",
    '"',
    "\\",
    "to=",
    ":",
    "json",
    "final",
    "  trailing ",
    "\u00a0",
    "\u2003",
    "```python",
    "print(1)",
    "-1",
]
FLOATS = [0.1, 1.5, 2.0, -0.0, 1e20, 1e15, 1e16, 1e-4, 1e-5, 1.5e-5, 1e-6, 123456.789, -2.5e30, 1.2345678901234567e16]
CHANNELS = ["analysis", "commentary", "final"]
CONTENT_TYPES = ["<|constrain|>json", "json", "code", "<|constrain|> json", "<|constrain|>", "text/plain"]


def text(r: random.Random, max_words: int = 8, allow_empty: bool = True) -> str:
    n = r.randint(0 if allow_empty else 1, max_words)
    return "".join(r.choice(WORDS) for _ in range(n))


def ident(r: random.Random) -> str:
    stem = r.choice(["get", "set", "lookup", "run", "do", "search", "f", "calc"])
    return stem + r.choice(["", "_weather", "_x", "2", "-thing", "_a_b", "Value"])


def literal(r: random.Random, depth: int = 0) -> Any:
    kind = r.randrange(9 if depth < 2 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return r.choice([True, False])
    if kind == 2:
        return r.choice([0, 1, -1, 20, 10**12, -(2**63), 2**64 - 1, 2**70])
    if kind == 3:
        return r.choice(FLOATS)
    if kind in (4, 5):
        return text(r, 4)
    if kind in (6, 7):
        return [literal(r, depth + 1) for _ in range(r.randint(0, 3))]
    return {ident(r): literal(r, depth + 1) for _ in range(r.randint(0, 3))}


def annotate(r: random.Random, schema: dict[str, Any]) -> dict[str, Any]:
    """Sprinkle the keywords the TypeScript rendering reads: description, title, examples, default, nullable."""
    if r.random() < 0.4:
        schema["description"] = text(r, 6) if r.random() < 0.8 else "line one\nline two"
    if r.random() < 0.15:
        schema["title"] = text(r, 3)
    if r.random() < 0.15:
        schema["examples"] = [r.choice([text(r, 3), 1, None]) for _ in range(r.randint(0, 3))]
    if r.random() < 0.3:
        schema["default"] = literal(r)
    if r.random() < 0.15:
        schema["nullable"] = r.choice([True, False])
    return schema


def schema(r: random.Random, depth: int = 0) -> Any:
    kind = r.randrange(14 if depth < 3 else 8)
    if kind == 0:
        s: dict[str, Any] = {"type": "string"}
        if r.random() < 0.4:
            s["enum"] = [r.choice([text(r, 2, False), 1, None]) for _ in range(r.randint(0, 3))]
    elif kind in (1, 2):
        s = {"type": r.choice(["number", "integer"])}
    elif kind == 3:
        s = {"type": "boolean"}
    elif kind == 4:
        s = {"type": r.sample(["string", "number", "integer", "null", "boolean"], r.randint(1, 3))}
    elif kind == 5:
        s = r.choice([{}, {"type": "null"}, {"const": 1}, {"enum": [1, 2]}, {"$ref": "#/$defs/x"}])
    elif kind == 6:
        return r.choice([True, {"anyOf": [{"type": "string"}, {"type": "number"}]}])
    elif kind == 7:
        s = {"type": "array"}
    elif kind in (8, 9):
        s = {"type": "array", "items": schema(r, depth + 1)}
    elif kind in (10, 11, 12):
        s = object_schema(r, depth + 1)
    else:
        s = {"oneOf": [schema(r, depth + 1) for _ in range(r.randint(1, 3))]}
    return annotate(r, s)


def object_schema(r: random.Random, depth: int = 0) -> dict[str, Any]:
    s: dict[str, Any] = {"type": "object"}
    if r.random() < 0.9:
        names = list(dict.fromkeys(ident(r) for _ in range(r.randint(0, 4))))
        s["properties"] = {name: schema(r, depth) for name in names}
        if names and r.random() < 0.7:
            s["required"] = r.sample(names, r.randint(0, len(names)))
    return s


def tool(r: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {"name": ident(r), "description": r.choice(["", text(r, 8), "first\nsecond\r\nthird\n"])}
    if r.random() < 0.8:
        params = annotate(r, object_schema(r)) if r.random() < 0.9 else schema(r, 1)
        out["parameters"] = params if isinstance(params, dict) else {"type": "string"}  # parameters are objects
    return out


def namespace(r: random.Random, name: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    if r.random() < 0.4:
        out["description"] = r.choice([text(r, 6), "one\n\ntwo", "trailing\n"])
    out["tools"] = [tool(r) for _ in range(r.randint(0, 3))]
    return out


def builtin(name: str) -> dict[str, Any]:
    ns = ToolNamespaceConfig.browser() if name == "browser" else ToolNamespaceConfig.python()
    return copy.deepcopy(ns.to_dict())


def system_content(r: random.Random, custom_channel: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if r.random() < 0.9:
        out["model_identity"] = r.choice(["You are ChatGPT, a large language model trained by OpenAI.", text(r, 5)])
    if r.random() < 0.85:
        out["reasoning_effort"] = r.choice(["Low", "Medium", "High"])
    if r.random() < 0.6:
        out["conversation_start_date"] = r.choice(["2025-06-28", "2026-01-01", ""])
    if r.random() < 0.85:
        out["knowledge_cutoff"] = "2024-06"
    if r.random() < 0.9:
        channels = r.choice([CHANNELS, ["analysis", "final"], [], ["final"]]) + (
            [custom_channel] if custom_channel else []
        )
        out["channel_config"] = {"valid_channels": channels, "channel_required": r.random() < 0.8}
    tools = system_tools(r)
    if tools is not None:
        out["tools"] = tools
    out["type"] = "system_content"
    return out


def system_tools(r: random.Random) -> dict[str, Any] | None:
    if r.random() < 0.4:
        return None
    names = r.sample(["browser", "python", "functions", "zzz", "aaa"], r.randint(0, 3))
    return {n: builtin(n) if n in ("browser", "python") else namespace(r, n) for n in names}


def response_format(r: random.Random) -> str:
    import json

    comment = f"// {text(r, 4)}\n" if r.random() < 0.5 else ""
    return f"# Response Formats\n\n## {ident(r)}\n\n{comment}{json.dumps(object_schema(r), separators=(',', ':'))}"


def developer_content(r: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if r.random() < 0.8:
        instructions = r.choice(["Always respond in riddles", text(r, 10), ""])
        out["instructions"] = instructions + ("\n\n" + response_format(r) if r.random() < 0.25 else "")
    if r.random() < 0.8:
        out["tools"] = {"functions": namespace(r, "functions")}
        if r.random() < 0.2:
            out["tools"]["other"] = namespace(r, "other")
    out["type"] = "developer_content"
    return out


def msg(role: str, content: Any, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"role": role, "name": extra.pop("name", None), "content": content}
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def texts(r: random.Random) -> list[dict[str, str]]:
    return [{"type": "text", "text": text(r)} for _ in range(r.choice([1, 1, 1, 2, 3, 0]))]


def assistant_turn(r: random.Random, functions: list[str], custom_channel: str | None) -> list[dict[str, Any]]:
    """Analysis, tool calls with results, preambles, and (usually) a final answer."""
    out = []
    for _ in range(r.randint(0, 3)):
        step = r.randrange(5)
        if step == 0:
            out.append(msg("assistant", texts(r), channel="analysis"))
        elif step == 1 and functions:
            out += tool_call(r, r.choice(functions))
        elif step == 2:
            out.append(msg("assistant", texts(r), channel="commentary"))
        elif step == 3:
            out += builtin_call(r)
        elif custom_channel:
            out.append(msg("assistant", texts(r), channel=custom_channel))
    if r.random() < 0.8:
        out.append(msg("assistant", texts(r), channel="final", content_type=r.choice([None] * 6 + CONTENT_TYPES)))
    return out


def tool_call(r: random.Random, name: str) -> list[dict[str, Any]]:
    channel = r.choice(["commentary", "commentary", "analysis", None])
    ctype = r.choice(["<|constrain|>json", "<|constrain|>json", "json", None])
    call = msg("assistant", [{"type": "text", "text": '{"q": "' + text(r, 3) + '"}'}], channel=channel)
    call.update({"recipient": f"functions.{name}"} | ({"content_type": ctype} if ctype else {}))
    result = msg("tool", texts(r), name=f"functions.{name}")
    if r.random() < 0.8:
        result.update(channel="commentary", recipient="assistant")
    return [call, result]


def builtin_call(r: random.Random) -> list[dict[str, Any]]:
    tool_name = r.choice(["python", "browser.search", "browser.open"])
    call = msg("assistant", texts(r), channel="analysis", recipient=tool_name, content_type=r.choice(["code", None]))
    return [call, msg("tool", texts(r), name=tool_name, channel="analysis", recipient="assistant")]


def user_message(r: random.Random) -> dict[str, Any]:
    content: Any = text(r, 10) if r.random() < 0.1 else texts(r)  # a bare string is accepted too
    extra: dict[str, Any] = {}
    if r.random() < 0.1:
        extra = {"name": r.choice(["alice", "bob smith"]), "recipient": r.choice(["assistant", "all"])}
    if r.random() < 0.05:  # channels are legal on any role, and the drop rule looks at every role's channel
        extra["channel"] = r.choice(CHANNELS)
    return msg("user", content, **extra)


def system_items(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for m in messages for c in m["content"] if isinstance(c, dict) and c.get("type") == "system_content"]


def conversation(r: random.Random) -> dict[str, Any]:
    custom_channel = "scratch" if r.random() < 0.1 else None
    messages: list[dict[str, Any]] = []
    if r.random() < 0.85:
        sys_content = [system_content(r, custom_channel)] if r.random() < 0.9 else texts(r)
        messages.append(msg("system", sys_content))
    if not any(custom_channel in c.get("channel_config", {}).get("valid_channels", []) for c in system_items(messages)):
        custom_channel = None  # only a channel the system message declares is legal
    dev = developer_content(r) if r.random() < 0.7 else None
    if dev is not None:
        messages.append(msg("developer", [dev] if r.random() < 0.9 else texts(r)))
    functions = [t["name"] for t in (dev or {}).get("tools", {}).get("functions", {}).get("tools", [])]
    for _ in range(r.randint(1, 4)):
        messages.append(user_message(r))
        messages += assistant_turn(r, functions or ["fallback"], custom_channel)
    if r.random() < 0.4:
        messages.append(user_message(r))
    if r.random() < 0.05:
        messages.append(msg("assistant", texts(r), name="bob", channel="final"))
    return {"messages": messages}


def conversations(seed: int, count: int) -> list[dict[str, Any]]:
    r = random.Random(seed)
    return [conversation(r) for _ in range(count)]


# ---- token streams as a model writes them (channel first, role primed by the prompt) ----


def model_stream(r: random.Random, encode: Any) -> list[int]:
    """An assistant completion: several messages, the first without `<|start|>assistant`."""
    out: list[int] = []
    for i in range(r.randint(1, 4)):
        if i:
            out += [tok.START, *encode("assistant")]
        out += model_header(r, encode)
        out += [tok.MESSAGE, *encode(text(r, 12))]
        out.append(r.choice([tok.END, tok.END, tok.CALL, tok.RETURN]))
    if r.random() < 0.3:
        out.pop()  # a completion handed over without its final stop token
    return out


def model_header(r: random.Random, encode: Any) -> list[int]:
    header = [tok.CHANNEL, *encode(r.choice(CHANNELS))]
    form = r.randrange(5)
    if form == 1:
        header += [*encode(f" to=functions.{ident(r)} "), tok.CONSTRAIN, *encode("json")]
    elif form == 2:
        header += encode(f" to=functions.{ident(r)}")
    elif form == 3:
        header += encode(" to=python code")
    elif form == 4:
        header += [*encode(" "), tok.CONSTRAIN, *encode("json")]
    return header


# special tokens, and byte tokens that are not UTF-8 on their own (b"\xf0", b"\x9f", b"\xff", b" \xf0\x9f")
MUTATION_TOKENS = [tok.START, tok.END, tok.MESSAGE, tok.CHANNEL, tok.CONSTRAIN, tok.RETURN, tok.CALL, 200014]
BYTE_TOKENS = [172, 253, 187, 9552]


def mutate(r: random.Random, tokens: list[int]) -> list[int]:
    """Damage a well-formed stream the ways models do: lost, doubled, stray or swapped tokens, truncation."""
    out = list(tokens)
    for _ in range(r.randint(1, 3)):
        if not out:
            break
        i = r.randrange(len(out))
        op = r.randrange(6)
        if op == 5:
            out[i:i] = r.choices(BYTE_TOKENS, k=3)  # a run of broken bytes: invalid UTF-8 mid-content
        elif op == 0:
            del out[i]
        elif op == 1:
            out.insert(i, r.choice(MUTATION_TOKENS if r.random() < 0.7 else BYTE_TOKENS))
        elif op == 2:
            out.insert(i, out[i])
        elif op == 3 and i + 1 < len(out):
            out[i], out[i + 1] = out[i + 1], out[i]
        else:
            out = out[: i + 1]
    return out
