"""Request text must be valid Unicode. JSON's `\\ud800` escape decodes to a lone UTF-16 surrogate, which a Python
string holds but no UTF-8 encoder accepts: one in a request would break every later encoding of it (the echo in the
response, an SSE frame, a stored response read back). Bodies are decoded strictly and checked once, as they are
parsed."""

from __future__ import annotations

import re

from gptoss.server.errors import bad_request, param_name

SURROGATE = re.compile("[\ud800-\udfff]")
# a JSON escape of a surrogate (\uD800-\uDFFF): once the body is strictly decoded, the only way to write one
ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")

Path = list[int | str]


def lone_surrogate(data: object) -> tuple[Path, bool] | None:
    """Where the first string holding a lone surrogate is: (path, True when it is a key of the object at path), or
    None. Iterative, so any depth the JSON parser accepted is fine."""
    stack: list[tuple[Path, object]] = [([], data)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            if SURROGATE.search(node):
                return path, False
        elif isinstance(node, dict):
            if any(SURROGATE.search(key) for key in node):
                return path, True
            stack.extend(([*path, key], value) for key, value in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend(([*path, i], value) for i, value in reversed(list(enumerate(node))))
    return None


def decode_body(raw: bytes) -> str:
    """Strict UTF-8 (json.loads on bytes would also take UTF-16/32, and encoded surrogates)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        message = f"The request body is not valid UTF-8 (byte {e.start}: {e.reason})."
        raise bad_request(message, code="invalid_encoding") from None


def check_strings(text: str, data: object) -> None:
    """400 naming the first field (or key) whose text holds a lone surrogate; `text` is the JSON `data` came from
    (when it has no surrogate escape, the common case, nothing is walked)."""
    found = lone_surrogate(data) if ESCAPED_SURROGATE.search(text) else None
    if found is None:
        return
    path, in_key = found
    param = param_name(path)
    where = (f"a key of '{param}'" if param else "a key of the body") if in_key else f"'{param}'"
    raise bad_request(
        f"Invalid value for {where}: the text holds a lone UTF-16 surrogate (an unpaired \\uD800-\\uDFFF escape), "
        "which is not valid Unicode.",
        param,
        "invalid_value",
    )


def scrub(data: object) -> object:
    """A copy with every lone surrogate replaced by U+FFFD (for rows stored before bodies were checked)."""
    if isinstance(data, str):
        return SURROGATE.sub("\ufffd", data)
    if isinstance(data, dict):
        return {scrub(key): scrub(value) for key, value in data.items()}
    if isinstance(data, list):
        return [scrub(value) for value in data]
    return data
