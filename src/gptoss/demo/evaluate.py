"""Does a model follow harmony on held-out demo prompts? Greedy decoding of each sample's prompt (rendered as the
server renders it), then: the turn ends with `<|call|>` / `<|return|>`, the call goes to the right tool with the
right arguments, and after the tool's reply (fed back as the server would) the final answer holds the result.

This runs the model directly, without the grammar the server adds for JSON calls and response formats (so it is
stricter than serving), and without the python sandbox (the tool's reply is the known output of `print(expr)`).

    python -m gptoss.demo.evaluate CHECKPOINT [--per-family N] [--seed S]   (last line: one JSON object)
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from gptoss.demo.data import Sample, generate
from gptoss.demo.tasks import FAMILIES
from gptoss.harmony import Conversation, HarmonyEncoding, Message, Role, load_harmony_encoding
from gptoss.harmony.tokenizer import CALL, RETURN
from gptoss.server.conversation import BuiltinCall, FunctionCall, FunctionOutput, render_prompt, to_message

Generate = Callable[[list[int]], list[int]]  # prompt tokens -> the generated tokens (through a stop token)
EVAL_SEED = 1_000_003  # held out: the training data uses the recipe's DATA_SEED


@dataclass(frozen=True)
class Outcome:
    family: str
    effort: str
    closed: bool  # every generated turn ended with <|call|> or <|return|>
    correct: bool
    analysis_tokens: int


def parse(encoding: HarmonyEncoding, tokens: list[int]) -> list[Message]:
    return encoding.parse_messages_from_completion_tokens(tokens, Role.ASSISTANT, strict=False)


def text(m: Message) -> str:
    return "".join(getattr(c, "text", "") for c in m.content)


def evaluate_sample(generate_turn: Generate, encoding: HarmonyEncoding, s: Sample) -> Outcome:
    prompt = render_prompt(s.prompt(), encoding).tokens
    out = generate_turn(prompt)
    closed = bool(out) and out[-1] in (CALL, RETURN)
    messages = parse(encoding, out)
    analysis = sum(len(encoding.encode(text(m), allowed_special=set())) for m in messages if m.channel == "analysis")
    call = next((i for i in s.task.turn if isinstance(i, BuiltinCall | FunctionCall)), None)
    correct = False
    if call is None:
        correct = closed and out[-1] == RETURN and final_ok(s, messages)
    elif closed and out[-1] == CALL and call_ok(call, messages[-1]):
        reply = s.task.turn[1]
        names = (
            {reply.call_id: call.name} if isinstance(reply, FunctionOutput) and isinstance(call, FunctionCall) else {}
        )
        tool = encoding.render_conversation_for_completion(
            Conversation.from_messages([to_message(reply, names)]), Role.ASSISTANT
        )
        more = generate_turn(prompt + out + tool)
        closed = bool(more) and more[-1] == RETURN
        correct = closed and final_ok(s, parse(encoding, more))
    return Outcome(s.task.family, s.effort.value.lower(), closed, correct, analysis)


def call_ok(call: BuiltinCall | FunctionCall, m: Message) -> bool:
    if isinstance(call, BuiltinCall):
        return m.recipient == "python" and text(m).strip() == call.arguments
    try:
        return m.recipient == f"functions.{call.name}" and json.loads(text(m)) == json.loads(call.arguments)
    except json.JSONDecodeError:
        return False


def final_ok(s: Sample, messages: Sequence[Message]) -> bool:
    finals = [text(m) for m in messages if m.channel == "final"]
    if not finals:
        return False
    answer, expected = finals[-1], s.task.expected
    if s.task.family == "arithmetic":
        return str(expected["value"]) in answer
    if s.task.family == "extraction":
        try:
            return bool(json.loads(answer) == expected["fields"])
        except json.JSONDecodeError:
            return False
    return bool(answer.strip() == expected["answer"])


def summarize(outcomes: Sequence[Outcome]) -> dict[str, object]:
    table: dict[str, object] = {}
    for family in sorted({o.family for o in outcomes}):
        mine = [o for o in outcomes if o.family == family]
        table[family] = {
            "n": len(mine),
            "correct": sum(o.correct for o in mine) / len(mine),
            "closed": sum(o.closed for o in mine) / len(mine),
        }
    for effort in ("low", "medium", "high"):
        lengths = [o.analysis_tokens for o in outcomes if o.effort == effort]
        table[f"median_analysis_{effort}"] = statistics.median(lengths) if lengths else None
    return table


def model_generator(checkpoint: Path, max_tokens: int) -> Generate:
    import gptoss

    model = gptoss.load(checkpoint)
    stops = (CALL, RETURN)
    return lambda prompt: list(model.generate(prompt, max_tokens, temperature=0.0, stop_tokens=stops))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gptoss.demo.evaluate", description=__doc__)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--per-family", type=int, default=30)
    parser.add_argument("--seed", type=int, default=EVAL_SEED)
    parser.add_argument("--max-tokens", type=int, default=256, help="per generated turn")
    args = parser.parse_args(argv)
    encoding = load_harmony_encoding("HarmonyGptOss")
    generate_turn = model_generator(args.checkpoint, args.max_tokens)
    samples = generate(len(FAMILIES) * args.per_family, args.seed)
    outcomes = [evaluate_sample(generate_turn, encoding, s) for s in samples]
    for o in outcomes:
        print(json.dumps(asdict(o)))
    print(json.dumps(summarize(outcomes)))


if __name__ == "__main__":
    main()
