"""What training keeps on disk: checkpoints to resume from, and the released model.

A checkpoint is a folder `checkpoints/step-00000400/` holding Accelerate's state (model weights,
optimizer moments, RNG states of every process; sharded ones as distributed checkpoints under FSDP,
beside the gathered `model.safetensors`) plus `state.json` (step, tokens, seconds, data
position, early-stopping record). It is written as `.step-00000400.tmp/` and renamed when complete:
a folder named `step-*` is always whole, so a crash mid-save leaves the previous checkpoint in charge.
The learning rate needs no saved scheduler: it is a function of the progress recorded in state.json.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from peft import PeftModel
from safetensors.torch import save_model

from distill.files import replace_dir, write_json_atomic
from distill.train.sharding import is_sharded, whole_model

CHECKPOINTS = "checkpoints"
STATE = "state.json"


@dataclass
class TrainState:
    """Progress of one training run; everything the loop needs to continue exactly."""

    step: int = 0  # optimizer steps taken
    tokens: int = 0  # input tokens trained on, over all processes (padding excluded)
    seconds: float = 0.0  # wall-clock in the loop, over all resumes
    epoch: int = 0  # data position: the next micro-batch is (epoch, batch)
    batch: int = 0
    best_val_loss: float | None = None
    evals_since_best: int = 0
    stopped_by: str | None = None  # set when training has ended


def save_checkpoint(accelerator, model, out_dir: Path, state: TrainState, *, keep: int) -> Path:
    """Save the full training state; keep only the `keep` newest checkpoints."""
    root = out_dir / CHECKPOINTS
    final = root / f"step-{state.step:08d}"
    if final.is_dir():  # resumed exactly at this step: the checkpoint on disk is this very state
        return final
    tmp = root / f".{final.name}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # every process writes its own RNG state into it
    # A sharded model's checkpoint holds shards; samplers read the whole weights, gathered here.
    gathered = whole_model(accelerator, model) if is_sharded(accelerator) else None
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(tmp / STATE, asdict(state))
        accelerator.unwrap_model(model).config.save_pretrained(tmp)  # so samplers can rebuild it
        if gathered is not None:
            save_model(gathered, str(tmp / "model.safetensors"))
        os.replace(tmp, final)
        for old in checkpoints(out_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = out_dir / CHECKPOINTS
    return sorted(root.glob("step-*")) if root.is_dir() else []


def load_checkpoint(accelerator, path: Path) -> TrainState:
    """Restore model, optimizer and RNG states from `path`; return the progress saved with them."""
    accelerator.load_state(str(path))
    return TrainState(**json.loads((path / STATE).read_text()))


def save_release_model(model, tokenizer, model_dir: Path, *, adapter_dir: Path) -> None:
    """Save `model` and `tokenizer` for plain transformers in `model_dir`.

    LoRA adapters are saved alone in `adapter_dir`, then merged into the base weights for `model_dir`.
    Each folder is written under a temporary name and renamed into place.
    """
    if isinstance(model, PeftModel):
        _replace_dir(adapter_dir, model.save_pretrained)
        model = model.merge_and_unload()

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    _replace_dir(model_dir, save)


def _replace_dir(target: Path, write) -> None:
    """`write(folder)` into a temporary folder, then swap it in (replacing a model from an earlier finish)."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    replace_dir(tmp, target)
