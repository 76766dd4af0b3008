"""Fine-tuning a local base model: LoRA adapters with peft, or every weight.

There is no model hub here: `base_model` is a directory written by `save_pretrained` (config,
weights, tokenizer). The released student is always a plain transformers model: at the end LoRA
adapters are merged into the base weights (see `checkpoint.save_release_model`) and also kept on the
side in `adapter/` for whoever wants them alone.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from distill.errors import ConfigError, Problem
from distill.train.config import TrainConfig
from distill.train.tokenizer import DEFAULT_CHAT_TEMPLATE


def load_base_model(config: TrainConfig):
    """(model, tokenizer) of `config.base_model`, wrapped with LoRA adapters when `config.lora`."""
    path = config.base_model
    if path is None or not (path / "config.json").is_file():
        raise ConfigError(Problem(f"{path} is not a model directory (no config.json)", key="student.base_model",
                                  hint="point it at a folder written by save_pretrained"))
    tokenizer = AutoTokenizer.from_pretrained(path)
    if config.chat_template is not None or tokenizer.chat_template is None:
        tokenizer.chat_template = config.chat_template or DEFAULT_CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        # Padding only fills instruct rows past their end, where the loss is masked: any token will do,
        # and reusing eos keeps the embedding matrix (and LoRA's frozen base) unchanged.
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if config.lora:
        model = get_peft_model(model, lora_config(config))
    return model, tokenizer


def lora_config(config: TrainConfig) -> LoraConfig:
    return LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules or "all-linear",  # peft leaves the output head out
        task_type="CAUSAL_LM",
    )

