"""The harmony chat format of gpt-oss: tokenizer, data model, renderer and streaming parser.

Mirrors openai-harmony's Python API (change `openai_harmony` to `gptoss.harmony` in the import), in pure Python
on top of tiktoken, with no network needed: the vocabulary comes from the tiktoken cache or the quicktok wheel.
"""

from gptoss.harmony.encoding import (
    HarmonyEncoding,
    HarmonyEncodingName,
    RenderConversationConfig,
    RenderOptions,
    load_harmony_encoding,
)
from gptoss.harmony.errors import HarmonyError
from gptoss.harmony.messages import (
    Author,
    Channel,
    ChannelConfig,
    Content,
    Conversation,
    DeveloperContent,
    Message,
    ReasoningEffort,
    Role,
    SystemContent,
    TextContent,
    ToolDescription,
    ToolNamespaceConfig,
)
from gptoss.harmony.parser import Repair, RepairKind, StreamableParser, StreamState
from gptoss.harmony.tokenizer import IncrementalDetokenizer, o200k_harmony
from gptoss.harmony.vocab import ensure_vocab_file

__all__ = [
    "Author",
    "Channel",
    "ChannelConfig",
    "Content",
    "Conversation",
    "DeveloperContent",
    "HarmonyEncoding",
    "HarmonyEncodingName",
    "HarmonyError",
    "IncrementalDetokenizer",
    "Message",
    "ReasoningEffort",
    "RenderConversationConfig",
    "RenderOptions",
    "Repair",
    "RepairKind",
    "Role",
    "StreamState",
    "StreamableParser",
    "SystemContent",
    "TextContent",
    "ToolDescription",
    "ToolNamespaceConfig",
    "ensure_vocab_file",
    "load_harmony_encoding",
    "o200k_harmony",
]
