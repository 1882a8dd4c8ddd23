"""Request bodies of the OpenAI-compatible APIs, as pydantic models: the only pydantic in the server.

Top-level requests forbid unknown fields (as OpenAI does: "Unrecognized request argument supplied"), so a field we
do not implement is an error, never silently ignored; fields that change nothing here (user, parallel_tool_calls,
service_tier, ...) are listed and accepted. Nested items ignore extra keys, because clients send back the output
items they received (ids, statuses, annotations) as input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, field_validator

SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts
Effort = Literal["minimal", "low", "medium", "high"]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Nested(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


def text_parts(allowed: frozenset[str]) -> Callable[[Any], str]:
    """A content field: a string, or a list of text parts (of the allowed types) joined together."""

    def join(value: Any) -> str:
        if isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise ValueError("must be a string or a list of content parts")
        texts = []
        for i, part in enumerate(value):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in allowed or not isinstance(part.get("text"), str):
                expected = ", ".join(sorted(allowed))
                raise ValueError(f"part {i} has type {kind!r}; only text parts ({expected}) are supported")
            texts.append(part["text"])
        return "".join(texts)

    return join


ChatText = Annotated[str, BeforeValidator(text_parts(frozenset({"text"})))]
InputText = Annotated[str, BeforeValidator(text_parts(frozenset({"input_text", "output_text", "text"})))]


def no_penalty(value: float | None) -> float | None:
    if value not in (None, 0, 0.0):
        raise ValueError("is not supported; only 0 is accepted")
    return value


def check_stops(value: str | list[str] | None) -> str | list[str] | None:
    stops = [value] if isinstance(value, str) else (value or [])
    if len(stops) > 4:
        raise ValueError(f"at most 4 stop sequences, got {len(stops)}")
    if any(not s for s in stops):
        raise ValueError("stop sequences must be non-empty")
    return value


Penalty = Annotated[float | None, BeforeValidator(no_penalty)]
Stop = Annotated[str | list[str] | None, BeforeValidator(check_stops)]
Seed = Annotated[int | None, Field(ge=SEED_RANGE[0], le=SEED_RANGE[1])]
Temperature = Annotated[float | None, Field(ge=0, le=2)]
TopP = Annotated[float | None, Field(gt=0, le=1)]


class StreamOptions(Nested):
    include_usage: bool = False
    include_obfuscation: bool | None = None  # accepted; nothing is obfuscated on a local server


def check_logit_bias(value: dict[str, float] | None) -> dict[str, float] | None:
    for key, bias in (value or {}).items():
        if not key.isdigit():
            raise ValueError(f"keys must be token ids (as strings), got {key!r}")
        if not -100 <= bias <= 100:
            raise ValueError(f"the bias of token {key} must be in [-100, 100], got {bias}")
    return value


def refuse(why: str) -> Callable[[Any], Any]:
    """A field OpenAI defines that this server cannot honour: any value but null is a 400 saying why."""

    def check(value: Any) -> Any:
        if value is not None:
            raise ValueError(why)
        return value

    return check


def text_only(value: list[str] | None) -> list[str] | None:
    if value is not None and any(m != "text" for m in value):
        raise ValueError(f"only text output is supported (gpt-oss produces text), got {value}")
    return value


LogitBias = Annotated[dict[str, float] | None, BeforeValidator(check_logit_bias)]
Modalities = Annotated[list[str] | None, BeforeValidator(text_only)]
NoEffect = Any  # a documented OpenAI option that changes nothing on a local server: accepted, ignored


# ---- shared pieces ----


class JsonSchemaSpec(Nested):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextFormat(Nested):
    type: Literal["text"]


class JsonObjectFormat(Nested):
    type: Literal["json_object"]


class ChatJsonSchemaFormat(Nested):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ChatResponseFormat = Annotated[TextFormat | JsonObjectFormat | ChatJsonSchemaFormat, Field(discriminator="type")]


# ---- /v1/chat/completions ----


class ChatFunction(Nested):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatTool(Nested):
    type: Literal["function"]
    function: ChatFunction


class ChatNamedFunction(Nested):
    name: str


class ChatNamedToolChoice(Nested):
    type: Literal["function"]
    function: ChatNamedFunction


class ChatToolCallFunction(Nested):
    name: str
    arguments: str


class ChatToolCall(Nested):
    id: str
    type: Literal["function"] = "function"
    function: ChatToolCallFunction


class SystemMessage(Nested):
    role: Literal["system"]
    content: ChatText


class DeveloperMessage(Nested):
    role: Literal["developer"]
    content: ChatText


class UserMessage(Nested):
    role: Literal["user"]
    content: ChatText


class AssistantMessage(Nested):
    role: Literal["assistant"]
    content: ChatText | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None  # the name some clients (and vLLM) use
    tool_calls: list[ChatToolCall] | None = None


class ToolMessage(Nested):
    role: Literal["tool"]
    content: ChatText
    tool_call_id: str


ChatMessage = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


class ChatReasoning(Nested):
    """OpenAI's gpt-oss guidance: `reasoning: {"exclude": true}` leaves the chain of thought out of the answer."""

    effort: Effort | None = None
    exclude: bool = False


class ChatCompletionRequest(Request):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[ChatTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | ChatNamedToolChoice | None = None
    reasoning_effort: Effort | None = None
    response_format: ChatResponseFormat | None = None
    n: Literal[1] | None = None
    stop: Stop = None
    seed: Seed = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    max_reasoning_tokens: int | None = Field(None, ge=0)  # gptoss extension: the free-reasoning budget
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    temperature: Temperature = None
    top_p: TopP = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    frequency_penalty: Penalty = None
    presence_penalty: Penalty = None
    logit_bias: LogitBias = None
    reasoning: ChatReasoning | None = None
    modalities: Modalities = None
    audio: Annotated[Any, BeforeValidator(refuse("audio output is not supported (gpt-oss produces text)"))] = None
    web_search_options: Annotated[
        Any, BeforeValidator(refuse("web search runs in /v1/responses: give a {'type': 'web_search'} tool there"))
    ] = None
    functions: Annotated[Any, BeforeValidator(refuse("the deprecated `functions` is not supported; use `tools`"))] = (
        None
    )
    function_call: Annotated[
        Any, BeforeValidator(refuse("the deprecated `function_call` is not supported; use `tool_choice`"))
    ] = None
    # accepted, no effect here
    user: str | None = None
    parallel_tool_calls: bool | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: NoEffect = None
    safety_identifier: str | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    prediction: NoEffect = None
    moderation: NoEffect = None


# ---- /v1/completions ----


def single_prompt(value: Any) -> Any:
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        if len(value) != 1:
            raise ValueError(f"only one prompt per request is supported, got {len(value)}")
        return value[0]
    return value


class CompletionRequest(Request):
    model: str | None = None
    prompt: Annotated[str | list[int], BeforeValidator(single_prompt)]
    max_tokens: int = Field(16, ge=1)
    temperature: Temperature = None
    top_p: TopP = None
    seed: Seed = None
    stop: Stop = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: Literal[False] | None = None
    n: Literal[1] | None = None
    best_of: Literal[1] | None = None
    frequency_penalty: Penalty = None
    presence_penalty: Penalty = None
    logit_bias: LogitBias = None
    return_token_ids: bool | None = None  # vLLM's extension: each choice also carries the output's token ids
    suffix: Annotated[Any, BeforeValidator(refuse("suffix (fill-in-the-middle) is not supported by gpt-oss"))] = None
    user: str | None = None

    @field_validator("prompt")
    @classmethod
    def non_empty(cls, value: str | list[int]) -> str | list[int]:
        if len(value) == 0:
            raise ValueError("the prompt is empty")
        return value


# ---- /v1/responses ----


class MessageInput(Nested):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: InputText
    phase: Literal["commentary", "final_answer"] | None = None


class ReasoningPart(Nested):
    type: Literal["reasoning_text", "summary_text"]
    text: str


class ReasoningInput(Nested):
    type: Literal["reasoning"]
    content: list[ReasoningPart] | None = None
    summary: list[ReasoningPart] = []


class FunctionCallInput(Nested):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str
    arguments: str


class FunctionCallOutputInput(Nested):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: InputText


def item_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        return str(value.get("type", "message"))
    return getattr(value, "type", None)


InputItem = Annotated[
    Annotated[MessageInput, Tag("message")]
    | Annotated[ReasoningInput, Tag("reasoning")]
    | Annotated[FunctionCallInput, Tag("function_call")]
    | Annotated[FunctionCallOutputInput, Tag("function_call_output")],
    Discriminator(
        item_tag,
        custom_error_type="invalid_item",
        custom_error_message="unsupported item type; expected message, reasoning, function_call or "
        "function_call_output",
    ),
]


class FunctionToolSpec(Nested):
    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class WebSearchToolSpec(Nested):
    """The built-in browser (`--browser-dir`); provider options such as `user_location` are accepted and unused."""

    type: Literal["web_search", "web_search_preview", "browser_search"]


class CodeInterpreterToolSpec(Nested):
    """The built-in python tool (`--python`); `container` is accepted and unused (one sandbox per response)."""

    type: Literal["code_interpreter"]


ResponsesTool = Annotated[FunctionToolSpec | WebSearchToolSpec | CodeInterpreterToolSpec, Field(discriminator="type")]
BUILTIN_TOOL_TYPES = ("web_search", "web_search_preview", "browser_search", "code_interpreter")


class NamedFunctionChoice(Nested):
    type: Literal["function"]
    name: str


class ReasoningOptions(Nested):
    effort: Effort | None = None
    summary: str | None = None  # accepted; gpt-oss returns its full reasoning text instead of a summary


class ResponsesJsonSchemaFormat(JsonSchemaSpec):
    type: Literal["json_schema"]


class TextOptions(Nested):
    format: Annotated[TextFormat | JsonObjectFormat | ResponsesJsonSchemaFormat, Field(discriminator="type")] | None = (
        None
    )


def check_metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return None
    if len(value) > 16:
        raise ValueError(f"at most 16 keys, got {len(value)}")
    for key, item in value.items():
        if len(key) > 64:
            raise ValueError(f"key {key[:20]!r}... is longer than 64 characters")
        if len(item) > 512:
            raise ValueError(f"the value of {key!r} is longer than 512 characters")
    return value


class ConversationRef(Nested):
    id: str = Field(min_length=1)


class ResponsesRequest(Request):
    model: str | None = None
    input: str | list[InputItem] = ""
    instructions: str | None = None
    tools: list[ResponsesTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedFunctionChoice | None = None
    reasoning: ReasoningOptions | None = None
    text: TextOptions | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    max_reasoning_tokens: int | None = Field(None, ge=0)  # gptoss extension: the free-reasoning budget
    temperature: Temperature = None
    top_p: TopP = None
    store: bool | None = None
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    stream: bool | None = None
    background: Literal[False] | None = None
    truncation: Literal["disabled"] | None = None
    # accepted, no effect here
    parallel_tool_calls: bool | None = None
    user: str | None = None
    include: list[str] | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    max_tool_calls: int | None = Field(None, ge=0)
    stream_options: StreamOptions | None = None
    conversation: str | ConversationRef | None = None
    prompt: Annotated[
        Any, BeforeValidator(refuse("stored prompt templates live on OpenAI's platform; send `input` instead"))
    ] = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: NoEffect = None
    context_management: NoEffect = None
    background_options: NoEffect = None
    moderation: NoEffect = None
    access_programs: NoEffect = None
    image: NoEffect = None

    @field_validator("metadata")
    @classmethod
    def metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return check_metadata(value)

    @field_validator("tools", mode="before")
    @classmethod
    def known_tool_types(cls, value: Any) -> Any:
        for i, tool in enumerate(value if isinstance(value, list) else []):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind != "function" and kind not in BUILTIN_TOOL_TYPES:
                known = ", ".join(repr(k) for k in ("function", *BUILTIN_TOOL_TYPES))
                raise ValueError(f"tool {i} has type {kind!r}; supported types are {known}")
        return value
