"""The demo model's synthetic training data: seeded harmony conversations for the five task families,
and the copy drill.

Each conversation goes through the server's own request conversion (system message with the reasoning effort and
date, developer message with instructions, function tools and response format, the python tool's section), so
the model is trained on exactly the prompts `gptoss serve` renders. The reasoning before the answer grows with the
effort: low keeps the first sentence of the task's reasoning, medium three, high all six.

`python -m gptoss.demo.data OUT.jsonl --count N --seed S` writes them in harmony JSON (`Conversation.to_json()`),
the form `gptoss finetune` reads.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from gptoss.demo.tasks import ECHO_WORDS, FAMILIES, Task
from gptoss.finetune.data import training_conversation, weighted_training_conversation
from gptoss.harmony import Conversation, Message, ReasoningEffort, Role, ToolNamespaceConfig
from gptoss.server.conversation import Item, PromptSpec, Reasoning

THOUGHTS_BY_EFFORT = {ReasoningEffort.LOW: 1, ReasoningEffort.MEDIUM: 3, ReasoningEffort.HIGH: 6}
FIRST_DAY = datetime.date(2025, 1, 1)


@dataclass(frozen=True)
class Sample:
    task: Task
    effort: ReasoningEffort
    date: str  # YYYY-MM-DD, the conversation start date the server writes into its system message
    earlier: Task | None = None  # an earlier exchange of the same conversation, context only (not trained)

    def prompt(self) -> PromptSpec:
        """What a client sends: the user's words, tools, response format, effort (items end with the user)."""
        t = self.task
        builtin = (ToolNamespaceConfig.python(),) if t.python else ()
        return PromptSpec(
            (*self.earlier_items(), *t.prompt),
            instructions=t.instructions,
            tools=t.tools,
            effort=self.effort,
            response_format=t.response_format,
            date=self.date,
            items_param="messages",
            builtin=builtin,
        )

    def earlier_items(self) -> tuple[Item, ...]:
        """The earlier exchange as a client sends it back: the user's words, calls, replies, answer (its reasoning
        dropped, as the server drops a completed turn's)."""
        return (*self.earlier.prompt, *self.earlier.turn) if self.earlier else ()

    def reasoning(self) -> str:
        return " ".join(self.task.thoughts[: THOUGHTS_BY_EFFORT[self.effort]])

    def conversation(self) -> Conversation:
        """The prompt followed by the assistant turn: reasoning, then the task's calls, replies and answer."""
        return training_conversation(self.spec())

    def spec(self) -> PromptSpec:
        prompt = self.prompt()
        return dataclasses.replace(prompt, items=(*prompt.items, Reasoning(self.reasoning()), *self.task.turn))

    def training_line(self) -> str:
        """The conversation as a `gptoss finetune` line: harmony JSON, the earlier exchange's assistant messages
        marked `"weight": 0` (context: the model learns to answer the last question, not to answer without
        reasoning as a history without its dropped analysis would teach)."""
        conversation, weights = weighted_training_conversation(self.spec(), {id(i) for i in self.earlier_items()})
        data = conversation.to_dict()
        for m, weight in zip(data["messages"], weights, strict=True):
            if not weight and m["role"] == "assistant":  # the key is for assistant messages only
                m["weight"] = 0
        return json.dumps(data)


def with_earlier(rng: random.Random, s: Sample) -> Sample:
    """`s` after an earlier exchange that its own tools allow: a greeting or echo, a python sum when it has python,
    a call of one of its functions. Not for extraction: its response format would bind the earlier answer too."""
    if s.task.family == "extraction":
        return s
    kinds = ["chat", "echo", *(["arithmetic"] if s.task.python else []), *(["function"] if s.task.tools else [])]
    earlier = FAMILIES[rng.choice(kinds)](rng)
    if earlier.family == "function" and earlier.expected["name"] not in {t.name for t in s.task.tools}:
        earlier = FAMILIES["chat"](rng)
    return dataclasses.replace(s, earlier=earlier)


def sample(rng: random.Random, family: str) -> Sample:
    task = FAMILIES[family](rng)
    effort = rng.choice(list(THOUGHTS_BY_EFFORT))
    date = FIRST_DAY + datetime.timedelta(days=rng.randrange(3 * 365))
    return Sample(task, effort, date.isoformat())


def generate(count: int, seed: int, families: Sequence[str] | None = None, earlier: float = 0.0) -> list[Sample]:
    """`count` samples, the families taken in turn (each in equal share; name one twice for twice the share);
    a share `earlier` of them after an earlier exchange (`with_earlier`); same seed, same list."""
    chosen = list(families or FAMILIES)
    unknown = [f for f in chosen if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown task family {unknown[0]!r} (expected one of {', '.join(FAMILIES)})")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    rng = random.Random(seed)
    samples = [sample(rng, chosen[i % len(chosen)]) for i in range(count)]
    if earlier > 0:  # a stream of its own: the same samples, some now with an earlier exchange
        more = random.Random(f"{seed}-earlier")
        samples = [with_earlier(more, s) if more.random() < earlier else s for s in samples]
    return samples


DRILL_NUMBERS = tuple(str(n) for n in range(2, 100))


def number(rng: random.Random, largest: int) -> str:
    """2 to `largest`: up to 99 one o200k token each, past it several tokens, as python prints products."""
    return rng.choice(DRILL_NUMBERS[: largest - 1]) if largest <= 99 else str(rng.randint(2, largest))


def copy_drill(
    rng: random.Random, shortest: int = 8, longest: int = 30, largest: int = 99, words: Sequence[str] = ECHO_WORDS
) -> Conversation:
    """A bare user turn asking to repeat 8-30 numbers and words, and the final answer repeating them: nearly every
    trained token is a copy, which is what makes a tiny model learn to copy at all (recipe.py). No system prompt:
    the drill is for learning, the tasks carry the server's real prompts."""
    count = rng.randint(shortest, longest)
    items = [number(rng, largest) if rng.random() < 0.5 else rng.choice(words) for _ in range(count)]
    said = " ".join(items)
    user = Message.from_role_and_content(Role.USER, rng.choice(("Echo: ", "Repeat after me: ", "Say ")) + said)
    return Conversation.from_messages([user, Message.from_role_and_content(Role.ASSISTANT, said).with_channel("final")])


def jsonl_lines(samples: Sequence[Sample]) -> Iterator[str]:
    for s in samples:
        yield s.training_line()


def write_jsonl(samples: Sequence[Sample], path: Path) -> None:
    path.write_text("".join(line + "\n" for line in jsonl_lines(samples)), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gptoss.demo.data", description=__doc__)
    parser.add_argument("out", type=Path, help="JSONL file to write")
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        write_jsonl(generate(args.count, args.seed), args.out)
    except ValueError as e:
        parser.error(str(e))


if __name__ == "__main__":
    main()
