"""gptoss's LoRA against transformers + PEFT (fp32): the same loss, every LoRA gradient within 1e-4 relative, and
adapters that load both ways with identical logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import gptoss
from gptoss.finetune.lora import ATTENTION, TARGETS, LoraAdapter, LoraConfig
from gptoss.finetune.objective import differentiable_ops, loss_sum
from gptoss.finetune.peft_io import load_adapter, save_adapter, tensor_name
from gptoss.runtime import Model
from tests.conftest import PARITY_CONFIGS


def random_adapter(model: Model, cfg: LoraConfig, seed: int = 0) -> LoraAdapter:
    adapter = LoraAdapter(model.config, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.factors.values():  # B != 0 too, so the adapter changes the output and A gets gradients
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return adapter


def batch(vocab: int, n: int, seed: int = 0) -> tuple[list[int], list[int]]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (n,), generator=g).tolist()
    mask = [0] * (n // 3) + [1] * (n - n // 3)  # a prompt, then trained tokens
    mask[n // 2] = 0  # and a hole, as a tool message leaves
    return tokens, mask


def hf_peft(ckpt: Path, adapter_dir: Path, trainable: bool = True) -> torch.nn.Module:
    from peft import PeftModel
    from transformers import GptOssForCausalLM, Mxfp4Config

    hf = GptOssForCausalLM.from_pretrained(ckpt, quantization_config=Mxfp4Config(dequantize=True), dtype=torch.float32)
    return PeftModel.from_pretrained(hf, str(adapter_dir), is_trainable=trainable).eval()


def ours(model: Model, adapter: LoraAdapter, tokens: list[int], mask: list[int]) -> torch.Tensor:
    model.transformer.adapter = adapter
    adapter.eval()
    with differentiable_ops():
        total, n = loss_sum(model.transformer, tokens, mask)
    loss = total / n
    loss.backward()
    return loss.detach()


def theirs(peft_model: torch.nn.Module, tokens: list[int], mask: list[int]) -> torch.Tensor:
    labels = torch.tensor([t if m else -100 for t, m in zip(tokens, mask, strict=True)])
    out = peft_model(input_ids=torch.tensor([tokens]), labels=labels[None])
    out.loss.backward()
    return out.loss.detach()


def peft_grads(peft_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        n.replace(".default.weight", ".weight"): p.grad
        for n, p in peft_model.named_parameters()
        if "lora_" in n and p.grad is not None
    }


@pytest.mark.parametrize(("name", "targets"), [("tiny", ATTENTION), ("gqa4", TARGETS), ("mqa6", ("router", "down"))])
def test_loss_and_gradients_match_peft(
    checkpoints: dict[str, Path], tmp_path: Path, name: str, targets: tuple[str, ...]
) -> None:
    cfg = PARITY_CONFIGS[name]
    model = gptoss.load(checkpoints[name], dtype=torch.float32)
    adapter = random_adapter(model, LoraConfig(r=4, alpha=8.0, targets=targets))
    tokens, mask = batch(cfg.vocab_size, 2 * cfg.initial_context_length + 5)
    loss = ours(model, adapter, tokens, mask)
    save_adapter(adapter, tmp_path / "adapter", str(checkpoints[name]))
    peft_model = hf_peft(checkpoints[name], tmp_path / "adapter")
    ref = theirs(peft_model, tokens, mask)
    assert abs(loss - ref) <= 1e-4 * abs(ref)
    grads = peft_grads(peft_model)
    assert len(grads) == len(adapter.factors)  # every factor has a PEFT twin that got a gradient
    for k, p in adapter.factors.items():
        layer, rest = k.split("_", 1)
        target, factor = rest.rsplit("_", 1)
        g = grads[tensor_name(int(layer), target, factor, targets)]
        assert p.grad is not None and g.abs().max() > 0
        rel = (p.grad - g).norm() / g.norm()
        assert rel <= 1e-4, f"{k}: relative gradient error {rel:.2e}"


@pytest.mark.parametrize("layers", [None, [1]])
def test_peft_adapter_loads_into_gptoss(checkpoints: dict[str, Path], tmp_path: Path, layers: list[int] | None) -> None:
    """An adapter PEFT created and saved (on every layer, or only some) gives the same logits in gptoss as in PEFT."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from transformers import GptOssForCausalLM, Mxfp4Config

    path = checkpoints["gqa4"]
    hf = GptOssForCausalLM.from_pretrained(path, quantization_config=Mxfp4Config(dequantize=True), dtype=torch.float32)
    peft_cfg = PeftLoraConfig(
        r=2,
        lora_alpha=6,
        target_modules=["q_proj", "v_proj"],
        target_parameters=["mlp.experts.gate_up_proj"],
        layers_to_transform=layers,
    )
    peft_model = get_peft_model(hf, peft_cfg)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    peft_model.save_pretrained(tmp_path / "peft")
    tokens, _ = batch(PARITY_CONFIGS["gqa4"].vocab_size, 50, seed=2)
    with torch.no_grad():
        ref = peft_model.eval()(input_ids=torch.tensor([tokens])).logits[0]
    model = gptoss.load(path, dtype=torch.float32)
    model.transformer.adapter = load_adapter(tmp_path / "peft", model.config)
    assert model.transformer.adapter.cfg.targets == ("q", "v", "gate_up")
    assert model.transformer.adapter.cfg.layers == (None if layers is None else tuple(layers))
    save_adapter(model.transformer.adapter, tmp_path / "back")  # the same tensors PEFT wrote, no more
    assert (
        load_file(tmp_path / "back" / "adapter_model.safetensors").keys()
        == load_file(tmp_path / "peft" / "adapter_model.safetensors").keys()
    )
    got = model.logits(tokens)
    assert (got - ref).abs().max() <= 1e-4
    model.transformer.adapter = None
    assert (model.logits(tokens) - ref).abs().max() > 1e-3  # the adapter matters


def test_gptoss_adapter_gives_peft_logits(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    model = gptoss.load(checkpoints["tiny"], dtype=torch.float32)
    adapter = random_adapter(model, LoraConfig(r=3, alpha=5.0, targets=("k", "o", "router")), seed=1)
    model.transformer.adapter = adapter
    tokens, _ = batch(PARITY_CONFIGS["tiny"].vocab_size, 40, seed=4)
    got = model.logits(tokens)
    save_adapter(adapter, tmp_path / "a")
    with torch.no_grad():
        ref = hf_peft(checkpoints["tiny"], tmp_path / "a", trainable=False)(input_ids=torch.tensor([tokens])).logits[0]
    assert (got - ref).abs().max() <= 1e-4
    reloaded = load_adapter(tmp_path / "a", model.config)
    for k, p in adapter.factors.items():
        assert torch.equal(reloaded.factors[k], p)
