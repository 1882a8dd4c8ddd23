import json
import random
import statistics
from collections import Counter

import pytest

from gptoss.demo import data
from gptoss.finetune.data import encode_line, render_with_mask
from gptoss.harmony import Conversation, HarmonyEncodingName, ReasoningEffort, Role, load_harmony_encoding
from gptoss.server.conversation import NO_AUTO_DROP


@pytest.fixture(scope="module")
def encoding():
    return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)


@pytest.fixture(scope="module")
def samples():
    return data.generate(100, seed=3)


def test_same_seed_same_conversations_other_seed_others():
    a = list(data.jsonl_lines(data.generate(12, seed=7)))
    assert a == list(data.jsonl_lines(data.generate(12, seed=7)))
    assert a != list(data.jsonl_lines(data.generate(12, seed=8)))


def test_every_family_present_in_equal_share(samples):
    counts = Counter(s.task.family for s in samples)
    assert counts == {"arithmetic": 20, "function": 20, "extraction": 20, "chat": 20, "echo": 20}


def test_a_family_named_twice_gets_twice_the_share():
    samples = data.generate(40, seed=3, families=["function", "chat", "function", "echo"])
    counts = Counter(s.task.family for s in samples)
    assert counts == {"function": 20, "chat": 10, "echo": 10}


def test_every_conversation_renders_and_round_trips_through_the_parser(samples, encoding):
    for s in samples:
        conversation = s.conversation()
        tokens = encoding.render_conversation_for_training(conversation, NO_AUTO_DROP)
        parsed = encoding.parse_messages_from_completion_tokens(tokens, None)
        assert [(m.author.role, m.channel, m.recipient) for m in parsed] == [
            (m.author.role, m.channel, m.recipient) for m in conversation.messages
        ]
        assert encoding.render_conversation_for_training(Conversation.from_messages(parsed), NO_AUTO_DROP) == tokens


def test_jsonl_lines_are_what_finetune_reads(samples, encoding):
    for s, line in zip(samples[:8], data.jsonl_lines(samples[:8]), strict=True):
        tokens, mask = encode_line(line, encoding, 2048)
        assert (tokens, mask) == render_with_mask(s.conversation(), encoding)
        assert encoding.decode(tokens).endswith("<|return|>") and mask[-1] == 1


def test_system_and_developer_messages_are_the_servers(samples):
    for s in samples:
        messages = s.conversation().messages
        system = messages[0].content[0]
        assert messages[0].author.role is Role.SYSTEM
        assert system.reasoning_effort is s.effort and system.conversation_start_date == s.date
        assert ("python" in (system.tools or {})) == s.task.python
        developer = [m for m in messages if m.author.role is Role.DEVELOPER]
        assert bool(developer) == bool(s.task.tools or s.task.response_format or s.task.instructions)


def test_turn_shape_per_family(samples):
    for s in samples:
        assistant = [m for m in s.conversation().messages if m.author.role is Role.ASSISTANT]
        assert assistant[0].channel == "analysis" and assistant[-1].channel == "final"
        recipients = [m.recipient for m in assistant if m.recipient]
        expected = {"arithmetic": ["python"], "function": [f"functions.{s.task.expected.get('name')}"]}
        assert recipients == expected.get(s.task.family, [])
        if s.task.family == "extraction":
            assert json.loads(assistant[-1].content[0].text) == s.task.expected["fields"]


def test_analysis_grows_with_effort(samples, encoding):
    lengths: dict[ReasoningEffort, list[int]] = {e: [] for e in ReasoningEffort}
    for s in samples:
        lengths[s.effort].append(len(encoding.encode(s.reasoning(), allowed_special=set())))
    low, medium, high = (statistics.median(lengths[e]) for e in ReasoningEffort)
    assert low < medium < high


def test_bad_requests_are_named():
    with pytest.raises(ValueError, match="unknown task family 'poetry'"):
        data.generate(4, 0, ["arithmetic", "poetry"])
    with pytest.raises(ValueError, match="count must be at least 1, got 0"):
        data.generate(0, 0)


def test_main_writes_the_file(tmp_path, encoding):
    out = tmp_path / "train.jsonl"
    data.main([str(out), "--count", "5", "--seed", "1"])
    lines = out.read_text().splitlines()
    assert lines == list(data.jsonl_lines(data.generate(5, 1)))


def test_the_copy_drill_repeats_the_users_items_without_a_system_prompt():
    rng = random.Random(4)
    for _ in range(20):
        user, answer = data.copy_drill(rng).messages
        assert user.author.role is Role.USER and answer.author.role is Role.ASSISTANT and answer.channel == "final"
        said = answer.content[0].text
        assert user.content[0].text.endswith(" " + said) and 8 <= len(said.split()) <= 30
    a = [data.copy_drill(random.Random(9)).to_json() for _ in range(2)]
    assert a[0] == a[1]


def test_the_drill_draws_its_words_from_the_list_it_is_given():
    rng = random.Random(5)
    drills = [data.copy_drill(rng, words=("Laurason", "Oslo")) for _ in range(50)]
    said = [w for d in drills for w in d.messages[1].content[0].text.split()]
    assert {w for w in said if not w.isdigit()} == {"Laurason", "Oslo"}


def test_earlier_exchanges_are_context_the_model_is_not_trained_to_write(encoding):
    plain, more = data.generate(60, seed=4), data.generate(60, seed=4, earlier=0.5)
    assert [s.task for s in plain] == [s.task for s in more]  # a stream of its own: the same tasks
    with_earlier = [s for s in more if s.earlier is not None]
    assert 10 < len(with_earlier) < 50 and all(s.task.family != "extraction" for s in with_earlier)
    for s in with_earlier:
        tokens, mask = encode_line(s.training_line(), encoding, 4096)
        text, trained = encoding.decode(tokens), encoding.decode([t for t, m in zip(tokens, mask, strict=True) if m])
        said = s.earlier.turn[-1].text
        assert said in text and text.index(said) < text.index(s.task.prompt[0].text)
        # one trained answer: this turn's (the earlier exchange's assistant messages are context, weight 0)
        assert trained.endswith(s.task.turn[-1].text + "<|return|>") and trained.count("<|channel|>final") == 1
        if s.earlier.family == "function":
            assert s.earlier.expected["name"] in {t.name for t in s.task.tools}
    assert [s.training_line() for s in plain] == list(data.jsonl_lines(plain))
