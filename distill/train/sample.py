"""Generate text from a student: the finished model, or the newest checkpoint of a run in progress."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_model
from safetensors import SafetensorError

from distill.errors import Problem, RunDirError
from distill.files import read_json_file
from distill.lineage import load_saved_model
from distill.train.checkpoint import checkpoints
from distill.train.config import TrainConfig
from distill.train.data import render_prompt, start_token


def load_student(path: Path):
    """(model, tokenizer, source) from a model directory or a train folder (RUN/train); a released bundle's
    tar.gz opens with `distill.release.unpack.open_student`.

    A train folder gives its finished `model/` when there is one, else its newest checkpoint, rebuilt
    from the run's settings (`run.json`) and tokenizer.
    """
    path = Path(path)
    if (path / "config.json").is_file() and (path / "tokenizer_config.json").is_file():
        return (*load_saved_model(path), path)
    if (path / "model").is_dir():
        return load_student(path / "model")
    saved = checkpoints(path)
    if not saved or not (path / "run.json").is_file():
        raise RunDirError(Problem("no trained model and no checkpoint yet", file=path,
                                  hint="run `distill train RUN` first (a checkpoint appears every checkpoint_every steps)"))
    from distill.train.loop import prepare_student  # the loop imports the whole training stack

    stored = read_json_file(path / "run.json", made_by="distill train RUN")
    try:
        config = TrainConfig.model_validate(stored.get("config"))
    except ValueError as exc:
        raise RunDirError(Problem(f"wrong shape: {str(exc).splitlines()[0]}", file=path / "run.json")) from None
    model, tokenizer = prepare_student(config, path)
    try:
        load_model(model, saved[-1] / "model.safetensors")
    except (OSError, RuntimeError, SafetensorError) as exc:
        raise RunDirError(Problem(f"the checkpoint cannot be loaded ({type(exc).__name__}: {str(exc)[:200]})",
                                  file=saved[-1] / "model.safetensors",
                                  hint="delete this checkpoint folder to fall back to the one before it")) from None
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
