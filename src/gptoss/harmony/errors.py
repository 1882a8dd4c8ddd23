"""The one error type of `gptoss.harmony`.

openai-harmony raises `HarmonyError(RuntimeError)`. Ours is a ValueError instead, so the CLI and the server treat it
like every other bad-input error in gptoss (exit status 2, HTTP 4xx). Message texts match openai-harmony's where
a caller might match on them (parser errors); elsewhere they name the offending field.
"""

from __future__ import annotations


class HarmonyError(ValueError):
    """Bad harmony input: a conversation, schema, vocabulary file or token stream that cannot be used."""
