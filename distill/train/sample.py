"""Generate text from a student: the finished model, or the newest checkpoint of a run in progress."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from distill.errors import Problem, RunDirError
from distill.train.checkpoint import checkpoints
from distill.train.config import TrainConfig
from distill.train.data import render_prompt, start_token


def load_student(path: Path):
    """(model, tokenizer, source) from a model directory, or from a train folder (RUN/train).

    A train folder gives its finished `model/` when there is one, else its newest checkpoint, rebuilt
    from the run's settings (`run.json`) and tokenizer.
    """
    path = Path(path)
    if (path / "config.json").is_file() and (path / "tokenizer_config.json").is_file():
        return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path), path
    if (path / "model").is_dir():
        return load_student(path / "model")
    saved = checkpoints(path)
    if not saved or not (path / "run.json").is_file():
        raise RunDirError(Problem("no trained model and no checkpoint yet", file=path,
                                  hint="run `distill train RUN` first (a checkpoint appears every checkpoint_every steps)"))
    from distill.train.loop import prepare_student  # the loop imports the whole training stack

    config = TrainConfig.model_validate(json.loads((path / "run.json").read_text())["config"])
    model, tokenizer = prepare_student(config, path)
    load_model(model, saved[-1] / "model.safetensors")
    return model, tokenizer, saved[-1]


@torch.no_grad()
def generate(model, tokenizer, prompt: str, *, max_new_tokens: int = 200, temperature: float = 0.8,
             top_k: int | None = 50, seed: int = 0, chat: bool = False) -> str:
    """Continue `prompt` (or answer it, with `chat`, in the model's chat format); returns the new text."""
    text = render_prompt(tokenizer, prompt) if chat else prompt
    # The training layout: the start token, then the text (see distill.train.data).
    ids = [start_token(tokenizer), *tokenizer(text, add_special_tokens=False).input_ids]
    inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    torch.manual_seed(seed)
    model.eval()
    output = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else None,
        top_k=top_k if temperature > 0 else None,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return tokenizer.decode(output[0, len(ids):], skip_special_tokens=True)
