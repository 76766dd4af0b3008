"""`distill serve-model --form F`: serve a bundle's exported form (ONNX, ONNX int8 or GGUF) through the same
batching engine and OpenAI API as the safetensors weights.

A form is served only when the bundle's signed manifest records it as checked: its parity with the
safetensors model measured by its runtime and within the limits (the spec's `release.parity`, else the
defaults), with no safety-probe regression. The figures are printed when serving starts.

The engine batches sequences left-padded in one key/value cache with an attention mask. The exported graphs
take no mask, so `FormModel` runs each row of a batch on its own (its real tokens and cache columns only)
and hands back a padded cache the engine can join and trim as it does the torch model's: each sequence gets
exactly its own result. ONNX forms run in ONNX Runtime; the GGUF form in the numpy forward that checked it
(`distill.release.runtimes.GgufNumpyRuntime`).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch
from transformers import DynamicCache

from distill.errors import ConfigError, Problem

SERVED_FORMS = ("safetensors", "onnx", "int8", "gguf")
# (ids, positions, past: per layer (keys, values) as [kv_heads, t, head_dim]) -> (logits [n, vocab], present)
RowRunner = Callable[[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]], tuple[np.ndarray, list]]


class FormModel:
    """The slice of a transformers causal LM the batching engine calls, backed by an exported form."""

    def __init__(self, run_row: RowRunner, context: int):
        self.run_row = run_row
        self.config = SimpleNamespace(max_position_embeddings=context)
        self._device_anchor = torch.zeros(1)

    def eval(self) -> FormModel:
        return self

    def parameters(self):
        yield self._device_anchor

    def __call__(self, *, input_ids, attention_mask, position_ids, cache, use_cache=True, logits_to_keep=None):
        width = attention_mask.shape[1]
        past_width = width - input_ids.shape[1]
        last_logits, presents = [], []
        for row in range(input_ids.shape[0]):
            real = attention_mask[row].bool().numpy()
            past = [(layer.keys[row][:, real[:past_width]].numpy(), layer.values[row][:, real[:past_width]].numpy())
                    for layer in cache.layers] if past_width else []
            new = real[past_width:]
            logits, present = self.run_row(input_ids[row].numpy()[new], position_ids[row].numpy()[new], past)
            last_logits.append(logits[-1])
            presents.append([(_left_pad(k, width), _left_pad(v, width)) for k, v in present])
        out_cache = DynamicCache()
        for layer in range(len(presents[0])):
            out_cache.update(torch.from_numpy(np.stack([p[layer][0] for p in presents])),
                             torch.from_numpy(np.stack([p[layer][1] for p in presents])), layer)
        return SimpleNamespace(logits=torch.from_numpy(np.stack(last_logits))[:, None, :], cache=out_cache)


def _left_pad(array: np.ndarray, width: int) -> np.ndarray:
    missing = width - array.shape[1]
    return np.concatenate([np.zeros((array.shape[0], missing, array.shape[2]), array.dtype), array], axis=1) \
        if missing else array


def onnx_runner(path: Path, config: dict[str, Any]) -> RowRunner:
    from distill.release.runtimes import OnnxRuntime

    runtime = OnnxRuntime(path, config)
    empty = np.zeros((runtime.kv_heads, 0, runtime.head_dim), dtype=np.float32)

    def run_row(ids, positions, past):
        flat = [a for layer in past for a in layer] or [empty] * len(runtime.past)
        feed = {"input_ids": ids[None].astype(np.int64), "position_ids": positions[None].astype(np.int64),
                **{name: array[None] for name, array in zip(runtime.past, flat)}}
        logits, *present = runtime.session.run(None, feed)
        return logits[0], [(present[i][0], present[i + 1][0]) for i in range(0, len(present), 2)]

    return run_row


def gguf_runner(path: Path) -> tuple[RowRunner, int]:
    from distill.release.runtimes import GgufNumpyRuntime

    runtime = GgufNumpyRuntime(path)

    def run_row(ids, positions, past):
        caches = [(k.transpose(1, 0, 2), v.transpose(1, 0, 2)) for k, v in past] or [None] * runtime.layers
        logits, (_, caches) = runtime.forward([int(i) for i in ids], (int(positions[0]), caches))
        return logits.astype(np.float32), [(k.transpose(1, 0, 2), v.transpose(1, 0, 2)) for k, v in caches]

    return run_row, runtime.context


def checked_parity(folder: Path, manifest: dict[str, Any], form: str) -> dict[str, Any]:
    """The form's parity as the signed manifest records it; a located error when the bundle lacks the form or
    its recorded check did not pass."""
    from distill.release.parity import parity_failures

    formats = manifest.get("formats") or {}
    if form not in formats:
        raise ConfigError(Problem(f"the bundle has no {form} form", key="--form",
                                  hint=f"it holds: {', '.join(sorted(formats) or ['safetensors'])}; "
                                       f"add one with `distill export RUN --format {form}`"))
    row = formats[form].get("parity")
    if not isinstance(row, dict) or not row.get("measured"):
        raise ConfigError(Problem(f"refusing to serve the {form} form: its parity with safetensors was not measured",
                                  key="--form", hint="release it again where its runtime is installed"))
    failures = parity_failures({form: row}, _spec_limits(folder))
    if failures:
        raise ConfigError(*[Problem(f"refusing to serve: {p.message}", key="--form") for p in failures])
    return row


def _spec_limits(folder: Path) -> dict[str, float]:
    import yaml

    path = folder / "spec.yaml"
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    limits = ((spec or {}).get("release") or {}).get("parity") if isinstance(spec, dict) else None
    return limits if isinstance(limits, dict) else {}


def load_form(folder: Path, manifest: dict[str, Any], form: str) -> tuple[FormModel, dict[str, Any]]:
    """The batching engine's model for `form` from a verified bundle folder, and its recorded parity."""
    from distill.release.export import FORM_FILES

    row = checked_parity(folder, manifest, form)
    config = json.loads((folder / "config.json").read_text())
    if form == "gguf":
        run_row, context = gguf_runner(folder / FORM_FILES[form])
        return FormModel(run_row, context), row
    return FormModel(onnx_runner(folder / FORM_FILES[form], config), config["max_position_embeddings"]), row


def describe(form: str, row: dict[str, Any]) -> str:
    return (f"the {form} form, checked by {row.get('runtime', 'its runtime')}: bits per byte "
            f"{row['bpb_delta']:+.3%} vs safetensors, greedy agreement {row['greedy_agreement'] or 0:.0%}, "
            f"probe verdicts {row['probe_verdicts_same']}/{row['probes']} the same (as signed in the manifest)")
