"""LoRA and full fine-tuning of a tiny local base model (built and saved here: no hub)."""

from __future__ import annotations

import pytest
import torch
from accelerate.utils import set_seed
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from distill.errors import ConfigError
from distill.train import TrainConfig, train_student
from distill.train.checkpoint import checkpoints
from distill.train.lora import load_base_model
from distill.train.tokenizer import train_tokenizer
from test_train_data import NAMES, stories

EXAMPLES = [{"id": i, "prompt": f"Tell a story about {NAMES[i % len(NAMES)]}.", "text": t}
            for i, t in enumerate(stories(40))]
SETTINGS = dict(context_length=64, batch_size=4, learning_rate=5e-3, warmup_steps=2, max_steps=12, eval_every=6,
                checkpoint_every=6, log_every=3, num_threads=1, peak_flops=1e10)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A random tiny Llama with its tokenizer, saved like any local model directory (no chat template)."""
    path = tmp_path_factory.mktemp("base")
    tokenizer = train_tokenizer(stories(40), 300)
    tokenizer.chat_template = None
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=0, eos_token_id=0, pad_token_id=1)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_lora_trains_only_adapters_then_merges_and_reloads(base_dir, tmp_path):
    config = TrainConfig(base_model=base_dir, lora={"r": 4, "alpha": 8}, **SETTINGS)
    out = tmp_path / "train"
    result = train_student(EXAMPLES, out, config, kind="instruct")
    assert result.trainable_params < result.non_embedding_params

    set_seed(config.seed)
    initial, _ = load_base_model(config)  # the adapters as the loop initialised them
    trained = load_file(checkpoints(out)[-1] / "model.safetensors")
    for name, before in initial.state_dict().items():
        if "lora_" in name:
            assert not torch.equal(before, trained[name]), f"adapter {name} did not change"
        elif name in trained:
            assert torch.equal(before, trained[name]), f"frozen {name} changed"

    # The adapter alone, and the merged model, both load; merging changed exactly the adapted weights.
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    assert isinstance(PeftModel.from_pretrained(base, out / "adapter"), PeftModel)
    base = AutoModelForCausalLM.from_pretrained(base_dir).state_dict()
    merged = AutoModelForCausalLM.from_pretrained(result.model_dir)
    for name, weight in merged.state_dict().items():
        adapted = name.endswith("proj.weight")
        assert torch.equal(weight, base[name]) != adapted, name
    tokenizer = AutoTokenizer.from_pretrained(result.model_dir)
    assert tokenizer.chat_template  # ours, since the base had none: the instruct format ships with the model
    ids = tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": "Tell a story about Tom."}],
                                                  add_generation_prompt=True, tokenize=False), return_tensors="pt")
    assert merged.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=1).shape[1] > ids.input_ids.shape[1]


def test_full_fine_tune_changes_every_weight(base_dir, tmp_path):
    config = TrainConfig(base_model=base_dir, **SETTINGS)
    result = train_student(EXAMPLES, tmp_path / "train", config, kind="instruct")
    assert result.trainable_params == result.non_embedding_params + 2 * 300 * 32  # + embedding and untied head
    base = AutoModelForCausalLM.from_pretrained(base_dir).state_dict()
    tuned = AutoModelForCausalLM.from_pretrained(result.model_dir).state_dict()
    assert all(not torch.equal(base[name], tuned[name]) for name in base)


def test_base_model_must_be_a_model_directory(tmp_path):
    config = TrainConfig(base_model=tmp_path, lora={})
    with pytest.raises(ConfigError, match="student.base_model"):
        load_base_model(config)
