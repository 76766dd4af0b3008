"""Tiny real models and tokenizers for the evaluation and inspection tests (seconds on a CPU)."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

STORIES = [
    "Once upon a time there was a little cat named Tom. Tom liked to play with his red ball.",
    "One day, Lily went to the park with her mom. She saw a big dog and said hello.",
    "Ben had a small boat. He took it to the pond and watched it float on the water.",
    "The sun was warm and the birds sang. Mia ran to the garden to pick a pretty flower.",
    "Sam was sad because his toy was broken. His dad helped him fix it and Sam was happy again.",
]


def tiny_tokenizer(corpus: list[str] = STORIES, vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with the project's special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|pad|>"
    )


def tiny_llama(vocab_size: int, *, hidden: int = 32, layers: int = 2, heads: int = 4, seed: int = 0):
    """A randomly initialised Llama small enough for unit tests, with eager attention (maps readable)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=256,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
        attn_implementation="eager",
    )
    return LlamaForCausalLM(config).eval()
