from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gptoss.config import FULL, PRESETS, SLIDING, from_hf_dict, from_original_dict, yarn_low_high
from gptoss.errors import ConfigError


def test_presets_match_the_release() -> None:
    c20, c120 = PRESETS["gpt-oss-20b"], PRESETS["gpt-oss-120b"]
    assert (c20.num_hidden_layers, c20.num_experts, c120.num_hidden_layers, c120.num_experts) == (
        24,
        32,
        36,
        128,
    )
    assert c20.max_context == 131072 and c20.layer_types[:2] == (SLIDING, FULL)
    low, high = yarn_low_high(c20)
    assert low == pytest.approx(8.09278, abs=1e-5) and high == pytest.approx(17.39802, abs=1e-5)


@pytest.mark.parametrize("name", ["tiny", "20b", "120b"])
def test_both_json_forms_round_trip(name: str) -> None:
    cfg = PRESETS[name]
    assert from_hf_dict(cfg.to_hf_json(), Path("c.json")) == cfg
    assert from_original_dict(cfg.to_original_json(), Path("c.json")) == cfg


def test_transformers_5_rope_parameters() -> None:
    d = PRESETS["20b"].to_hf_json()
    rope = d.pop("rope_scaling")
    d["rope_parameters"] = {**rope, "rope_theta": d.pop("rope_theta")}
    assert from_hf_dict(d, Path("c.json")) == PRESETS["20b"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"rope_scaling": {"rope_type": "linear", "factor": 2}}, "rope type 'linear' is not supported"),
        ({"quantization_config": {"quant_method": "gptq"}}, "quantization method 'gptq' is not supported"),
        ({"layer_types": ["sliding_attention"]}, "layer_types has 1 entries for 24 layers"),
        ({"layer_types": ["local"] * 24}, "unknown layer type"),
        ({"num_experts_per_tok": 40}, r"experts_per_token \(40\) > num_experts \(32\)"),
        ({"hidden_size": 100}, r"hidden_size \(100\) must be a multiple of 32"),
        ({"num_hidden_layers": 0, "layer_types": []}, "num_hidden_layers must be positive"),
        ({"rope_scaling": {"rope_type": "yarn", "beta_fast": 32}}, "rope scaling has no 'factor'"),
        ({"rope_scaling": {"factor": 32, "beta_slow": -1}}, r"rope_ntk_alpha \(YaRN beta\) must be positive, got -1"),
        ({"rope_theta": 1.0}, r"rope_theta \(1.0\) must be > 1"),
    ],
)
def test_bad_hf_config(edit: dict[str, object], message: str) -> None:
    d = {**PRESETS["20b"].to_hf_json(), **edit}
    with pytest.raises(ConfigError, match=message):
        from_hf_dict(d, Path("cfg.json"))


def test_truncate_round_trips_in_both_layouts() -> None:
    cfg = dataclasses.replace(PRESETS["tiny"], rope_truncate=True)
    assert from_hf_dict(cfg.to_hf_json(), Path("c.json")) == cfg
    assert from_original_dict(cfg.to_original_json(), Path("c.json")) == cfg
    assert "rope_truncate" not in PRESETS["20b"].to_original_json()  # the released form has no such key


def test_original_config_missing_key() -> None:
    d = PRESETS["20b"].to_original_json()
    del d["head_dim"]
    with pytest.raises(ConfigError, match="cfg.json: missing required key 'head_dim'"):
        from_original_dict(d, Path("cfg.json"))
