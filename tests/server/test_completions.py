"""/v1/completions (raw prompts), /v1/models, /health and /metrics over a real socket."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import MODEL, Running, decode, tokens

RAW = "<|start|>user<|message|>hi<|end|><|start|>assistant"
OUT = "<|channel|>analysis<|message|>Let me think.<|end|><|start|>assistant<|channel|>final<|message|>Hello there!"
OUT = "<|channel|>analysis<|message|>Let me think.<|end|><|start|>assistant<|channel|>final<|message|>Hello there!"


def test_text_prompt_with_special_tokens_is_tokenized_as_harmony(srv: Running) -> None:
    r = srv.client().completions.create(model=MODEL, prompt=RAW, max_tokens=100)
    assert srv.source.prompts[-1] == tokens(RAW)
    assert r.choices[0].text == OUT + "<|return|>"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(tokens(RAW)), 17)


def test_token_id_prompt_and_default_max_tokens(srv: Running) -> None:
    r = srv.client().completions.create(model=MODEL, prompt=[200006, 1428, 200008])
    assert srv.source.prompts[-1] == [200006, 1428, 200008]
    assert srv.source.params[-1].max_tokens == 16  # OpenAI's default for this endpoint
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].text == decode(tokens(OUT)[:16])


def test_stop_sequence_and_streaming(srv: Running) -> None:
    client = srv.client()
    r = client.completions.create(model=MODEL, prompt=RAW, stop=["<|end|>"], max_tokens=100)
    assert (r.choices[0].text, r.choices[0].finish_reason) == ("<|channel|>analysis<|message|>Let me think.", "stop")
    chunks = list(
        client.completions.create(
            model=MODEL, prompt=RAW, max_tokens=5, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "<|channel|>analysis<|message|>Let me"
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_logprobs_columns(srv: Running) -> None:
    r = srv.client().completions.create(model=MODEL, prompt=RAW, max_tokens=4, logprobs=2)
    lp = r.choices[0].logprobs
    assert lp is not None
    assert lp.tokens == ["<|channel|>", "analysis", "<|message|>", "Let"]
    assert lp.text_offset == [0, 11, 19, 30]
    assert lp.token_logprobs == [0.0, -0.5, -1.0, 0.0]  # what the scripted source reports
    assert lp.top_logprobs is not None and all(len(t) == 2 for t in lp.top_logprobs)


def test_return_token_ids_gives_the_exact_output_tokens(srv: Running) -> None:
    client = srv.client()
    r = client.completions.create(model=MODEL, prompt=RAW, max_tokens=6, extra_body={"return_token_ids": True})
    assert r.choices[0].model_extra == {"token_ids": tokens(OUT)[:6]}
    cut = client.completions.create(
        model=MODEL, prompt=RAW, max_tokens=100, stop=["think"], extra_body={"return_token_ids": True}
    )
    assert cut.choices[0].text == "<|channel|>analysis<|message|>Let me "
    assert cut.choices[0].model_extra == {"token_ids": tokens(OUT)[:6]}  # the text is cut; the tokens are not
    chunks = list(
        client.completions.create(
            model=MODEL, prompt=RAW, max_tokens=6, stream=True, extra_body={"return_token_ids": True}
        )
    )
    assert [t for c in chunks for t in (c.choices[0].model_extra or {})["token_ids"]] == tokens(OUT)[:6]
    plain = client.completions.create(model=MODEL, prompt=RAW, max_tokens=2)
    assert not plain.choices[0].model_extra


def test_models(srv: Running) -> None:
    client = srv.client()
    (model,) = client.models.list().data
    assert (model.id, model.object, model.owned_by) == (MODEL, "model", "gptoss")
    assert client.models.retrieve(MODEL).id == MODEL


def test_health_and_metrics(srv: Running) -> None:
    with srv.http() as http:
        assert http.get("/health").json() == {"status": "ok", "model": MODEL}
        http.post("/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 2})
        http.post("/v1/completions", json={"model": "nope", "prompt": "x"})
        text = http.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = {
        (s.labels["route"], s.labels["status"]): s.value
        for s in families["gptoss_requests"].samples
        if s.name.endswith("_total")
    }
    assert requests[("/v1/completions", "404")] >= 1
    assert requests[("/v1/completions", "200")] >= 1
    assert families["gptoss_output_tokens"].samples[0].value >= 2
    assert families["gptoss_ready"].samples[0].value == 1
    assert families["gptoss_queue_depth"].samples[0].value == 0
