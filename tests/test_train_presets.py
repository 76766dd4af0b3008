"""Student presets: sizes as advertised, standard Llama configs."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from distill.errors import ConfigError
from distill.train.presets import PRESETS, count_parameters, model_config

EXPECTED_MILLIONS = {"tiny": (0.5, 1.5), "small": (3.0, 5.0), "medium": (6.0, 9.0), "large": (13, 19), "xl": (25, 35)}


def build(preset: str, custom: dict | None = None, vocab: int = 4096):
    config = model_config(preset, custom or {}, vocab_size=vocab, context_length=256, bos_token_id=0,
                          eos_token_id=0, pad_token_id=1, dropout=0.0)
    with torch.device("meta"):  # sizes only: no memory, no init time
        return LlamaForCausalLM(config)


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_sizes_match_their_names(name):
    non_embedding, trainable, total = count_parameters(build(name))
    low, high = EXPECTED_MILLIONS[name]
    assert low * 1e6 <= non_embedding <= high * 1e6
    assert total == trainable == non_embedding + 4096 * PRESETS[name].d_model  # one tied embedding


def test_custom_architecture_and_plain_loading(tmp_path):
    model = LlamaForCausalLM(model_config("custom", {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                     "intermediate_size": 128}, vocab_size=300, context_length=64,
                                         bos_token_id=0, eos_token_id=0, pad_token_id=1, dropout=0.0))
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "LlamaForCausalLM" and loaded.config.hidden_size == 64
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()  # tied


def test_custom_needs_fields_and_valid_ones():
    with pytest.raises(ConfigError, match="student.custom"):
        build("custom", {})
    with pytest.raises(ConfigError, match="student.custom"):
        build("custom", {"hidden_size": 100, "num_attention_heads": 3})  # 100 is not divisible by 3
