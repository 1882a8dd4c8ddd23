"""Fine-tuning gpt-oss on the packed MXFP4 checkpoint: data (JSONL -> harmony render + loss mask), LoRA with
PEFT's layouts, the experts' custom autograd function, the training loop, PEFT-format adapters and merging."""
