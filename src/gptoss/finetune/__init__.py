"""Fine-tuning gpt-oss on the packed MXFP4 checkpoint: data (JSONL -> harmony render + loss mask), LoRA with
PEFT's layouts, the experts' custom autograd function, the training loop, PEFT-format adapters and merging.

    from gptoss.finetune import Job, LoraConfig, TrainConfig, run
    run(Job(model, data, out, LoraConfig(r=16), TrainConfig(lr=1e-4, epochs=2)))
"""

from gptoss.finetune.lora import LoraAdapter, LoraConfig
from gptoss.finetune.peft_io import attach_adapter, load_adapter, save_adapter
from gptoss.finetune.run import Job, run
from gptoss.finetune.train import TrainConfig

__all__ = [
    "Job",
    "LoraAdapter",
    "LoraConfig",
    "TrainConfig",
    "attach_adapter",
    "load_adapter",
    "run",
    "save_adapter",
]
