"""The openai-harmony-shaped API: the same names import, the same calls work, code ports by changing the import."""

from __future__ import annotations

import inspect
from types import ModuleType
from typing import Any

import pytest

import gptoss.harmony as gh
from gptoss.harmony import HarmonyEncoding, HarmonyError

EXTRA_NAMES = ["ReasoningEffort", "ChannelConfig", "ToolNamespaceConfig", "RenderConversationConfig", "RenderOptions"]


def test_every_openai_harmony_name_exists(oh: ModuleType) -> None:
    for name in [*oh.__all__, *EXTRA_NAMES]:
        assert hasattr(gh, name), name
    assert gh.HarmonyEncodingName.HARMONY_GPT_OSS == "HarmonyGptOss"
    assert [s.value for s in gh.StreamState] == [s.value for s in oh.StreamState]
    assert [r.value for r in gh.Role] == [r.value for r in oh.Role]
    assert [e.value for e in gh.ReasoningEffort] == [e.value for e in oh.ReasoningEffort]


def test_encoding_methods_take_the_same_arguments(oh: ModuleType, oh_enc: Any, enc: HarmonyEncoding) -> None:
    for name in [n for n in dir(oh_enc) if not n.startswith("_")]:
        theirs, ours = getattr(oh_enc, name), getattr(enc, name)
        if callable(theirs):
            assert list(inspect.signature(ours).parameters) == list(inspect.signature(theirs).parameters), name
    parser_attrs = {n for n in dir(oh.StreamableParser) if not n.startswith("_")}
    assert parser_attrs <= set(dir(gh.StreamableParser))


def test_load_by_name_or_enum(enc: HarmonyEncoding) -> None:
    assert gh.load_harmony_encoding("HarmonyGptOss").name == enc.name == "HarmonyGptOss"
    with pytest.raises(HarmonyError, match="unknown encoding name 'o200k_base' \\(expected 'HarmonyGptOss'\\)"):
        gh.load_harmony_encoding("o200k_base")


def ported(m: ModuleType, encoding: Any) -> tuple[list[int], list[Any], list[int]]:
    """A snippet written for openai-harmony, run against whichever module is passed in."""
    convo = m.Conversation.from_messages(
        [
            m.Message.from_role_and_content(m.Role.SYSTEM, m.SystemContent.new()),
            m.Message.from_role_and_content(m.Role.USER, "What is 2 + 2?"),
        ]
    )
    prefill = encoding.render_conversation_for_completion(convo, m.Role.ASSISTANT)
    reply = encoding.encode(
        "<|channel|>analysis<|message|>Simple.<|end|><|start|>assistant<|channel|>final<|message|>4<|return|>",
        allowed_special="all",
    )
    parsed = encoding.parse_messages_from_completion_tokens(reply, m.Role.ASSISTANT)
    return prefill, [msg.to_dict() for msg in parsed], sorted(encoding.stop_tokens_for_assistant_actions())


def test_ported_code_gives_the_same_results(oh: ModuleType, oh_enc: Any, enc: HarmonyEncoding) -> None:
    assert ported(gh, enc) == ported(oh, oh_enc)


@pytest.mark.parametrize("has_functions", [True, False])
def test_render_options(oh: ModuleType, oh_enc: Any, enc: HarmonyEncoding, has_functions: bool) -> None:
    ours = enc.render(
        gh.Message.from_role_and_content(gh.Role.SYSTEM, gh.SystemContent.new()),
        gh.RenderOptions(conversation_has_function_tools=has_functions),
    )
    theirs = oh_enc.render(
        oh.Message.from_role_and_content(oh.Role.SYSTEM, oh.SystemContent.new()),
        render_options=oh.RenderOptions(conversation_has_function_tools=has_functions),
    )
    assert ours == theirs
    assert ("'functions'" in enc.decode_utf8(ours)) is has_functions


def test_streaming_parser_usage(enc: HarmonyEncoding) -> None:
    parser = gh.StreamableParser(enc, role=gh.Role.ASSISTANT)
    deltas = []
    for token in enc.encode("<|channel|>final<|message|>Hello, world!<|return|>", allowed_special="all"):
        parser.process(token)
        if parser.last_content_delta:
            deltas.append((parser.current_channel, parser.last_content_delta))
    assert "".join(d for _, d in deltas) == "Hello, world!" and {c for c, _ in deltas} == {"final"}
    assert parser.state is gh.StreamState.EXPECT_START and len(parser.messages) == 1
