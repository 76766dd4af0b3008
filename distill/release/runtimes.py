"""Each form run by its own runtime: transformers (safetensors), ONNX Runtime (onnx, int8), llama.cpp through
llama-cpp-python (gguf, an optional extra). One small interface, so parity is measured the same way for all:
`start(ids)` gives the logits at every position of a prompt and a state, `step(token, state)` the logits for
the next position.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from distill.release.export import kv_names


class Runtime:
    name = "runtime"
    context: int = 0

    def start(self, ids: list[int]) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    def step(self, token: int, state: Any) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    def greedy(self, ids: list[int], steps: int) -> list[int]:
        """`steps` tokens by greedy decoding (no early stop: the caller cuts at end-of-text)."""
        steps = max(0, min(steps, self.context - len(ids)))
        logits, state = self.start(ids)
        last, out = logits[-1], []
        for _ in range(steps):
            out.append(int(np.argmax(last)))
            if len(out) < steps:
                last, state = self.step(out[-1], state)
        return out


class TorchRuntime(Runtime):
    name = "transformers"

    def __init__(self, model_dir: Path):
        import torch
        from transformers import AutoModelForCausalLM

        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.context = self.model.config.max_position_embeddings

    def start(self, ids):
        with self.torch.no_grad():
            out = self.model(self.torch.tensor([ids]), use_cache=True)
        return out.logits[0].float().numpy(), out.cache

    def step(self, token, state):
        with self.torch.no_grad():
            out = self.model(self.torch.tensor([[token]]), cache=state, use_cache=True)
        return out.logits[0, -1].float().numpy(), out.cache


class OnnxRuntime(Runtime):
    name = "onnxruntime"

    def __init__(self, path: Path, config: dict[str, Any], threads: int = 2):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.log_severity_level = threads, 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        layers = config["num_hidden_layers"]
        self.past, self.kv_heads = kv_names(layers, "past"), config.get("num_key_value_heads") or config["num_attention_heads"]
        self.head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        self.context = config["max_position_embeddings"]

    def _run(self, ids: list[int], start: int, past: list[np.ndarray]):
        feed = {"input_ids": np.array([ids], dtype=np.int64),
                "position_ids": np.arange(start, start + len(ids), dtype=np.int64)[None], **dict(zip(self.past, past))}
        logits, *present = self.session.run(None, feed)
        return logits[0], (start + len(ids), present)

    def start(self, ids):
        empty = np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=np.float32)
        return self._run(ids, 0, [empty] * len(self.past))

    def step(self, token, state):
        logits, state = self._run([token], *state)
        return logits[-1], state


class LlamaCppRuntime(Runtime):
    name = "llama.cpp"

    def __init__(self, path: Path, context: int, threads: int = 2):
        from llama_cpp import Llama

        self.context = context
        self.llm = Llama(model_path=str(path), n_ctx=context, logits_all=True, n_threads=threads, verbose=False,
                         seed=0)

    def start(self, ids):
        self.llm.reset()
        self.llm.eval(ids)
        return np.array(self.llm.scores[:len(ids)], dtype=np.float32), None

    def step(self, token, state):
        self.llm.eval([token])
        return np.array(self.llm.scores[self.llm.n_tokens - 1], dtype=np.float32), None


def llama_cpp_missing() -> str | None:
    """Why GGUF cannot be run here, or None."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return "llama-cpp-python is not installed (pip install 'distill[llama]')"
    return None


def open_runtime(form: str, model_dir: Path, path: Path | None, config: dict[str, Any]) -> Runtime:
    if form == "safetensors":
        return TorchRuntime(model_dir)
    if form in ("onnx", "int8"):
        return OnnxRuntime(path, config)
    return LlamaCppRuntime(path, config["max_position_embeddings"])
