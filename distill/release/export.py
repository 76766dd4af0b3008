"""Exported forms of a student, each a file in the bundle: ONNX (with past key/values for generation), ONNX
int8 (ONNX Runtime's dynamic quantizer) and GGUF f16 (llama.cpp, Ollama).

`release.formats` in the spec names them (`safetensors` is always there: it is the trained model). Each
exported form is then run by its own runtime and compared with the safetensors model (`distill.release.parity`).

ONNX: one graph serves both the prompt and each generated token. Inputs `input_ids`, `position_ids` and
`past.<layer>.key/value` ([batch, kv_heads, past, head_dim]; zero-length for a prompt); outputs `logits` and
`present.<layer>.key/value` to feed back. GGUF: the Llama tensors under llama.cpp's names (q/k rows permuted
the way llama.cpp's own converter does), the model's hyper-parameters, and the byte-level BPE tokenizer as
llama.cpp reads it: model `gpt2`, pre-tokenizer `gpt-2` (the GPT-2 split regex, which is what distill's
`ByteLevel` pre-tokenizer uses), tokens, merges, special-token ids and the chat template.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

from distill.errors import ConfigError, Problem

FORMATS = ("safetensors", "onnx", "int8", "gguf")
FORM_FILES = {"onnx": "onnx/model.onnx", "int8": "onnx/model.int8.onnx", "gguf": "model.f16.gguf"}
GGUF_PRE_TOKENIZER = "gpt-2"  # llama.cpp's LLAMA_VOCAB_PRE_TYPE_GPT2: the GPT-2 split regex


def check_formats(formats: list[str], key: str = "release.formats") -> list[str]:
    """The formats in a fixed order, safetensors first; a located error for an unknown one."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigError(Problem(f"unknown export format {unknown[0]!r}", key=key, hint=f"one of {', '.join(FORMATS)}"))
    return [f for f in FORMATS if f in formats or f == "safetensors"]


def export_forms(model_dir: Path, out_dir: Path, formats: list[str]) -> dict[str, Path]:
    """Write each exported form of the model in `model_dir` under `out_dir`; returns format -> file."""
    written: dict[str, Path] = {}
    for form in check_formats(formats):
        if form == "safetensors":
            continue
        target = Path(out_dir) / FORM_FILES[form]
        target.parent.mkdir(parents=True, exist_ok=True)
        if form == "onnx":
            export_onnx(model_dir, target)
        elif form == "int8":
            source = written.get("onnx") or export_onnx(model_dir, target.with_name(".fp32-for-int8.onnx"))
            quantize_int8(source, target)
            if "onnx" not in written:
                source.unlink()
        else:
            export_gguf(model_dir, target)
        written[form] = target
    return written


class _Step:
    """Built lazily (torch is imported only when exporting): one forward over a DynamicCache made of flat tensors."""

    @staticmethod
    def module(model):
        import torch
        from transformers import DynamicCache

        layers = model.config.num_hidden_layers

        class Step(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, input_ids, position_ids, *past):
                cache = DynamicCache(config=self.model.config)
                for i in range(layers):
                    cache.update(past[2 * i], past[2 * i + 1], i)
                out = self.model(input_ids=input_ids, position_ids=position_ids, cache=cache, use_cache=True)
                return (out.logits, *[t for layer in out.cache.layers for t in (layer.keys, layer.values)])

        return Step().eval()


def kv_names(layers: int, prefix: str) -> list[str]:
    return [f"{prefix}.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


def export_onnx(model_dir: Path, target: Path) -> Path:
    """The model as one ONNX graph with past key/values in and present key/values out (fp32)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    config = model.config
    layers, kv_heads = config.num_hidden_layers, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    past_len, seq = 3, 2  # example shapes only: every axis but the hidden ones is dynamic
    example = (torch.zeros((1, seq), dtype=torch.long), torch.arange(past_len, past_len + seq)[None],
               *[torch.zeros((1, kv_heads, past_len, head_dim)) for _ in range(2 * layers)])
    past, present = kv_names(layers, "past"), kv_names(layers, "present")
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "position_ids": {0: "batch", 1: "sequence"},
            "logits": {0: "batch", 1: "sequence"}, **{n: {0: "batch", 2: "past"} for n in past},
            **{n: {0: "batch", 2: "total"} for n in present}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        torch.onnx.export(_Step.module(model), example, str(target), input_names=["input_ids", "position_ids", *past],
                          output_names=["logits", *present], dynamic_axes=axes, opset_version=18, dynamo=False)
    return target


def quantize_int8(source: Path, target: Path) -> Path:
    """ONNX Runtime's dynamic quantizer: int8 weights for MatMul/Gather, activations quantized at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs advice about pre-processing on the root logger
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return target


def export_gguf(model_dir: Path, target: Path) -> Path:
    """GGUF f16 for llama.cpp: matrices in f16, norms in f32, with the tokenizer llama.cpp needs."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((Path(model_dir) / "config.json").read_text())
    if config.get("model_type") != "llama":
        raise ConfigError(Problem(f"GGUF export supports Llama students, not {config.get('model_type')!r}",
                                  key="release.formats"))
    tensors: dict[str, Any] = {}
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        tensors.update(load_file(str(path)))
    writer = gguf.GGUFWriter(str(target), "llama")
    _gguf_hparams(writer, config)
    _gguf_tokenizer(writer, Path(model_dir), config)
    for name, array in gguf_tensors(tensors, config).items():
        writer.add_tensor(name, array.astype(np.float32 if array.ndim == 1 else np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def _gguf_hparams(writer, config: dict[str, Any]) -> None:
    import gguf

    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config.get("rope_parameters") or {}
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)


def _gguf_tokenizer(writer, model_dir: Path, config: dict[str, Any]) -> None:
    """distill's byte-level BPE as llama.cpp's `gpt2` tokenizer model with the `gpt-2` pre-tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    spec = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tokenizer.get_vocab()
    by_id = {i: t for t, i in vocab.items()}
    size = config["vocab_size"]
    special = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
    added = {t["id"] for t in spec.get("added_tokens", [])} - special
    tokens, types = [], []
    for i in range(size):  # rows past the tokenizer (an embedding padded to a multiple) get placeholder names
        tokens.append(by_id.get(i, f"[PAD{i}]"))
        types.append(3 if i in special else 4 if i in added else 5 if i not in by_id else 1)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(GGUF_PRE_TOKENIZER)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for setter, token_id in ((writer.add_bos_token_id, tokenizer.bos_token_id),
                             (writer.add_eos_token_id, tokenizer.eos_token_id),
                             (writer.add_pad_token_id, tokenizer.pad_token_id)):
        if token_id is not None:
            setter(token_id)
    starts_with_bos = tokenizer.bos_token_id is not None and tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id]
    writer.add_add_bos_token(starts_with_bos)
    writer.add_add_eos_token(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def gguf_tensors(tensors: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """HF Llama tensors under llama.cpp's names; q and k rows permuted from HF's rotate-half rope layout to the
    interleaved one llama.cpp uses (as its convert_hf_to_gguf.py does)."""
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    out: dict[str, Any] = {"token_embd.weight": tensors["model.embed_tokens.weight"],
                           "output_norm.weight": tensors["model.norm.weight"],
                           "output.weight": tensors.get("lm_head.weight", tensors["model.embed_tokens.weight"])}
    for layer in range(config["num_hidden_layers"]):
        for hf, ours in names.items():
            array = tensors[f"model.layers.{layer}.{hf}.weight"]
            if ours in ("attn_q", "attn_k"):
                array = _permute(array, heads if ours == "attn_q" else kv_heads)
            out[f"blk.{layer}.{ours}.weight"] = array
    return out


def _permute(weights, heads: int):
    rows = weights.shape[0]
    return weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def read_gguf_tensors(path: Path) -> dict[str, Any]:
    """The tensors of a GGUF file as numpy arrays, read back with the gguf package's reader."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(path))
    return {t.name: np.asarray(t.data).reshape([int(d) for d in reversed(t.shape)]) for t in reader.tensors}


def gguf_metadata(path: Path) -> dict[str, Any]:
    """Scalar and string metadata of a GGUF file (token lists left out)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    out: dict[str, Any] = {}
    for name, field in reader.fields.items():
        if len(field.types) == 1 and field.types[0] != gguf.GGUFValueType.ARRAY:
            out[name] = field.contents()
    return out
