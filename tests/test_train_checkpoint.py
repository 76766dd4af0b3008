"""Checkpoints are whole or absent, pruned to the newest few, and restore the exact state."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from transformers import LlamaConfig, LlamaForCausalLM

from distill.train.checkpoint import TrainState, checkpoints, load_checkpoint, save_checkpoint


def test_save_prune_and_restore(tmp_path):
    accelerator = Accelerator(cpu=True)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    optimizer = torch.optim.AdamW(model.parameters())
    model, optimizer = accelerator.prepare(model, optimizer)
    (tmp_path / "checkpoints" / ".step-00000009.tmp").mkdir(parents=True)  # debris of a crash mid-save
    for step in (1, 2, 3):
        model(input_ids=torch.ones(1, 4, dtype=torch.long)).logits.sum().backward()
        optimizer.step()
        save_checkpoint(accelerator, model, tmp_path, TrainState(step=step, tokens=10 * step), keep=2)
    assert [c.name for c in checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]
    assert (checkpoints(tmp_path)[-1] / "config.json").is_file()  # enough to rebuild the model for sampling
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    expected = torch.rand(2)

    with torch.no_grad():
        model.lm_head.weight.zero_()
    torch.rand(5)
    state = load_checkpoint(accelerator, checkpoints(tmp_path)[-1])
    assert state == TrainState(step=3, tokens=30)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.rand(2), expected)  # the RNG continues where the checkpoint left it
