"""Each form run by its own runtime: transformers (safetensors), ONNX Runtime (onnx, int8), llama.cpp (gguf)
through node-llama-cpp's prebuilt binary (npm, installed by scripts/setup.sh into .venv/llama-node) or
llama-cpp-python (an optional extra). One small interface, so parity is measured the same way for all:
`start(ids)` gives the logits at every position of a prompt and a state, `step(token, state)` the logits for
the next position.

`LlamaCppNodeRuntime` runs `llama_node.mjs` once per model as a Node subprocess speaking JSON lines (the logits
of every position fed, as base64 float32 rows). Where llama.cpp is not installed either way, the GGUF file is
run by `GgufNumpyRuntime`: the file read back with the `gguf` package's reader and run by a plain numpy Llama
forward in llama.cpp's conventions (hyper-parameters from the file's metadata, not the model's config; q/k rows
in llama.cpp's interleaved rope layout). It checks what the export wrote, not llama.cpp itself; the parity
record names the runtime that measured it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
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


LLAMA_NODE_SCRIPT = Path(__file__).with_name("llama_node.mjs")


def llama_node_prefix() -> Path | None:
    """The npm prefix holding node-llama-cpp (DISTILL_LLAMA_NODE, else the venv's llama-node), or None."""
    candidates = [os.environ.get("DISTILL_LLAMA_NODE"), Path(sys.prefix) / "llama-node",
                  Path(__file__).resolve().parents[2] / ".venv" / "llama-node"]
    for prefix in filter(None, candidates):
        if shutil.which("node") and (Path(prefix) / "node_modules" / "node-llama-cpp" / "package.json").is_file():
            return Path(prefix)
    return None


class LlamaCppNodeRuntime(Runtime):
    """llama.cpp itself, through node-llama-cpp's prebuilt binary, in one Node process kept for the model."""

    name = "llama.cpp (node-llama-cpp)"

    def __init__(self, path: Path, context: int, prefix: Path):
        self.context, self.log = context, tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            ["node", str(LLAMA_NODE_SCRIPT), str(path), str(context), str(prefix)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        self._answer()

    def _answer(self) -> dict[str, Any]:
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            self.log.seek(0)
            said = [text for text in self.log.read().decode(errors="replace").splitlines() if text.strip()]
            raise RuntimeError(f"llama.cpp (node) stopped with exit code {code}: {said[-1] if said else ''}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"llama.cpp (node): {answer['error']}")
        return answer

    def _ask(self, request: dict[str, Any]) -> np.ndarray:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        rows = self._answer()["logits"]
        return np.stack([np.frombuffer(base64.b64decode(row), dtype=np.float32) for row in rows])

    def start(self, ids):
        return self._ask({"op": "start", "ids": list(map(int, ids))}), None

    def step(self, token, state):
        return self._ask({"op": "step", "token": int(token)})[-1], None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def __del__(self):
        self.close()


class GgufNumpyRuntime(Runtime):
    name = "gguf-reader+numpy"

    def __init__(self, path: Path):
        from distill.release.export import gguf_metadata, read_gguf_tensors

        meta = gguf_metadata(path)
        self.w = {name: array.astype(np.float32) for name, array in read_gguf_tensors(path).items()}
        self.layers, self.heads = int(meta["llama.block_count"]), int(meta["llama.attention.head_count"])
        self.kv_heads = int(meta.get("llama.attention.head_count_kv", self.heads))
        self.head_dim = int(meta["llama.embedding_length"]) // self.heads
        self.eps = float(meta["llama.attention.layer_norm_rms_epsilon"])
        self.base = float(meta.get("llama.rope.freq_base", 10000.0))
        self.context = int(meta["llama.context_length"])

    def start(self, ids):
        return self.forward(ids, (0, [None] * self.layers))

    def step(self, token, state):
        logits, state = self.forward([token], state)
        return logits[-1], state

    def _norm(self, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * weight

    def _rope(self, x: np.ndarray, start: int) -> np.ndarray:
        """llama.cpp's rope for Llama: each adjacent pair of a head's dimensions rotated ([seq, heads, dim])."""
        freqs = self.base ** (-np.arange(0, self.head_dim, 2) / self.head_dim)
        angles = np.arange(start, start + x.shape[0])[:, None, None] * freqs
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = even * np.cos(angles) - odd * np.sin(angles)
        out[..., 1::2] = even * np.sin(angles) + odd * np.cos(angles)
        return out

    def forward(self, ids: list[int], state):
        """Logits [len(ids), vocab] for `ids` at positions from state's start, and the next state: (position,
        per layer (keys, values) as [t, kv_heads, head_dim], or None before the first token)."""
        start, caches = state
        x, caches = self.w["token_embd.weight"][ids], list(caches)
        for layer in range(self.layers):
            x, caches[layer] = self._block(x, start, layer, caches[layer])
        logits = self._norm(x, self.w["output_norm.weight"]) @ self.w["output.weight"].T
        return logits, (start + len(ids), caches)

    def _block(self, x: np.ndarray, start: int, layer: int, cache):
        w = {name: self.w[f"blk.{layer}.{name}.weight"] for name in
             ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")}
        seq, d = x.shape[0], self.head_dim
        h = self._norm(x, w["attn_norm"])
        q = self._rope((h @ w["attn_q"].T).reshape(seq, self.heads, d), start)
        k = self._rope((h @ w["attn_k"].T).reshape(seq, self.kv_heads, d), start)
        v = (h @ w["attn_v"].T).reshape(seq, self.kv_heads, d)
        if cache is not None:
            k, v = np.concatenate([cache[0], k]), np.concatenate([cache[1], v])
        group = self.heads // self.kv_heads
        keys, values = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)  # [total, heads, d]
        scores = np.einsum("qhd,khd->hqk", q, keys) / np.sqrt(d)
        scores += np.triu(np.full((seq, k.shape[0]), -np.inf), k=k.shape[0] - seq + 1)  # causal
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attended = np.einsum("hqk,khd->qhd", scores / scores.sum(-1, keepdims=True), values).reshape(seq, -1)
        x = x + attended @ w["attn_output"].T
        h = self._norm(x, w["ffn_norm"])
        gate = h @ w["ffn_gate"].T
        return x + (gate / (1 + np.exp(-gate)) * (h @ w["ffn_up"].T)) @ w["ffn_down"].T, (k, v)


def llama_cpp_missing() -> str | None:
    """Why GGUF cannot be run in llama.cpp here, or None."""
    if llama_node_prefix() is not None:
        return None
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return ("neither node-llama-cpp (bash scripts/setup.sh, with npm) nor llama-cpp-python "
                "(pip install 'distill[llama]') is installed")
    return None


def open_runtime(form: str, model_dir: Path, path: Path | None, config: dict[str, Any]) -> Runtime:
    if form == "safetensors":
        return TorchRuntime(model_dir)
    if form in ("onnx", "int8"):
        return OnnxRuntime(path, config)
    if (prefix := llama_node_prefix()) is not None:
        return LlamaCppNodeRuntime(path, config["max_position_embeddings"], prefix)
    if llama_cpp_missing():
        return GgufNumpyRuntime(path)
    return LlamaCppRuntime(path, config["max_position_embeddings"])
