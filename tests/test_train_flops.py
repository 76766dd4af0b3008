"""FLOPs per token and the measured matmul peak."""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from distill.train.flops import flops_per_token, measure_matmul_flops


def tiny(tied: bool = True) -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied)
    return LlamaForCausalLM(config)


def test_flops_per_token_by_hand():
    d, kv, ff, L, V, T = 32, 16, 64, 2, 100, 128  # kv: 2 key/value heads of size 8
    per_layer = d * d + 2 * d * kv + d * d + 3 * d * ff  # q, k, v, o, gate/up/down
    matmul_weights = L * per_layer + V * d  # the (tied) output head is a matmul too
    attention = 6 * L * T * d  # causal: half of 12·L·T·d
    assert flops_per_token(tiny(), T) == 6 * matmul_weights + attention
    assert flops_per_token(tiny(tied=False), T) == 6 * matmul_weights + attention  # untied: same matmuls


def test_frozen_weights_skip_their_weight_gradient():
    model = get_peft_model(tiny(), LoraConfig(r=4, target_modules=["q_proj"]))
    lora = 2 * (32 * 4 + 4 * 32)  # A and B in both layers
    attention = 6 * 2 * 128 * 32
    weights = (flops_per_token(tiny(), 128) - attention) // 6  # every matmul weight of the base model
    assert flops_per_token(model, 128) == 4 * weights + 6 * lora + attention


def test_measured_peak_is_plausible_and_leaves_the_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    rate = measure_matmul_flops("cpu", size=256, seconds=0.05)
    assert 1e8 < rate < 1e14
    assert torch.equal(torch.rand(3), expected)
