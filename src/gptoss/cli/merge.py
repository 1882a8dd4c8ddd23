"""`gptoss merge`: write base + LoRA adapter as one checkpoint in the official layout (MXFP4 experts)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "merge a LoRA adapter into its base checkpoint (experts re-quantized to MXFP4; the error is reported)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="base checkpoint folder")
    p.add_argument("--lora", type=Path, required=True, help="PEFT adapter folder (gptoss finetune's --out)")
    p.add_argument("--out", type=Path, required=True, help="folder for the merged checkpoint")


def run(args: argparse.Namespace) -> int:
    from gptoss.finetune.merge import merge

    summary = merge(args.model, args.lora, args.out)
    print(json.dumps(summary))
    return 0
