"""Student architectures by size: standard Llama configs, so the result loads with plain transformers.

Sizes count non-embedding parameters (the tied embedding/output matrix depends on the tokenizer's
vocabulary, not on the preset). Per layer a Llama block holds 4·d² attention weights and 3·d·ff MLP
weights; with ff ≈ 8/3·d that is about 12·d².

The shapes lean wide and shallow for their size: on a CPU the matmuls of a wide layer run near the
machine's peak while a deep stack of narrow layers pays per-op overhead (norms, rotary, activations)
that does no useful FLOPs. Head size is 64 throughout (32 for `tiny`, which is too narrow for more
than a few heads of 64).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import LlamaConfig

from distill.errors import ConfigError, Problem


@dataclass(frozen=True)
class Preset:
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    description: str


PRESETS: dict[str, Preset] = {
    "tiny": Preset(128, 4, 4, 352, "~0.8M non-embedding params: seconds per step on a laptop, smoke tests"),
    "small": Preset(256, 5, 4, 704, "~4M: the default; good TinyStories in ten CPU minutes"),
    "medium": Preset(384, 4, 6, 1024, "~7M"),
    "large": Preset(512, 5, 8, 1408, "~16M: one GPU, or a patient CPU"),
    "xl": Preset(640, 6, 10, 1728, "~30M: GPU"),
}


def model_config(preset: str, custom: dict[str, Any], *, vocab_size: int, context_length: int,
                 bos_token_id: int, eos_token_id: int, pad_token_id: int, dropout: float) -> LlamaConfig:
    """The LlamaConfig of a preset (or of `custom` fields, for preset "custom")."""
    fields: dict[str, Any] = dict(
        vocab_size=vocab_size,
        max_position_embeddings=context_length,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        tie_word_embeddings=True,  # the output head shares the embedding: fewer params to learn from little data
        attention_dropout=dropout,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        initializer_range=0.02,
        attn_implementation="sdpa",
    )
    if preset == "custom":
        if not custom:
            raise ConfigError(Problem("preset 'custom' needs architecture fields", key="student.custom",
                                      hint="e.g. {hidden_size: 256, num_hidden_layers: 4, num_attention_heads: 4, intermediate_size: 704}"))
        fields.update(custom)
    else:
        shape = PRESETS[preset]
        fields.update(hidden_size=shape.d_model, num_hidden_layers=shape.n_layers,
                      num_attention_heads=shape.n_heads, num_key_value_heads=shape.n_heads,
                      intermediate_size=shape.d_ff)
    try:
        return LlamaConfig(**fields)
    except (TypeError, ValueError, StrictDataclassError) as exc:  # transformers validates configs on creation
        raise ConfigError(Problem(f"not a valid Llama architecture: {exc}", key="student.custom")) from None


def count_parameters(model) -> tuple[int, int, int]:
    """(non-embedding, trainable, total) parameter counts; shared tensors are counted once."""
    seen: set[int] = set()
    non_embedding = trainable = total = 0
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            total += param.numel()
            trainable += param.numel() if param.requires_grad else 0
            if not isinstance(module, torch.nn.Embedding):
                non_embedding += param.numel()
    # A tied output head is the embedding again (already skipped as shared); an untied one is a
    # vocab-sized Linear that also scales with the tokenizer, so it is not counted either.
    head = model.get_output_embeddings()
    if head is not None and id(head.weight) in seen and head.weight is not model.get_input_embeddings().weight:
        non_embedding -= head.weight.numel()
    return non_embedding, trainable, total

