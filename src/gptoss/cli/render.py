"""`gptoss render FILE.json`: show exactly what the model sees for a conversation, as text and token ids.

FILE holds openai-harmony's conversation JSON (`{"messages": [...]}`, what `Conversation.to_json()` writes) or a
bare list of messages; `-` reads stdin.
"""

from __future__ import annotations

import argparse
import json
import sys

from gptoss.cli.__main__ import UserError

HELP = "render a harmony conversation (JSON) to the prompt text and token ids the model sees"
MODES = ("completion", "training", "plain")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE.json", help="conversation JSON file, or - for stdin")
    p.add_argument(
        "--mode",
        choices=MODES,
        default="completion",
        help="completion: append <|start|>{next role} (default); training: end the final answer with "
        "<|return|>; plain: the messages only",
    )
    p.add_argument("--next-role", default="assistant", help="role whose turn follows, in completion mode")
    p.add_argument("--keep-analysis", action="store_true", help="do not drop analysis messages of completed turns")
    p.add_argument("--json", action="store_true", help='print one JSON object {"text": ..., "tokens": [...]}')


def read_source(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text: {e}") from None


def load_conversation(text: str, path: str) -> object:
    from gptoss.harmony import Conversation

    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON: {e}") from None
    if isinstance(data, list):  # a bare list of messages
        data = {"messages": data}
    return Conversation.from_dict(data)


def run(args: argparse.Namespace) -> int:
    from gptoss.harmony import Conversation, HarmonyEncodingName, RenderConversationConfig, load_harmony_encoding

    conversation = load_conversation(read_source(args.file), args.file)
    assert isinstance(conversation, Conversation)
    encoding = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
    config = RenderConversationConfig(auto_drop_analysis=not args.keep_analysis)
    if args.mode == "completion":
        tokens = encoding.render_conversation_for_completion(conversation, args.next_role, config)
    elif args.mode == "training":
        tokens = encoding.render_conversation_for_training(conversation, config)
    else:
        tokens = encoding.render_conversation(conversation, config)
    text = encoding.decode_utf8(tokens)
    if args.json:
        print(json.dumps({"text": text, "tokens": tokens}, ensure_ascii=False))
    else:
        print(text)
        print(f"--- {len(tokens)} tokens ---")
        print(",".join(map(str, tokens)))
    return 0
