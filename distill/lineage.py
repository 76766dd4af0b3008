"""The chain of hashes from sign-off to release: each stage names what it consumed and what it produced.

    sign-off   dataset fingerprint (the kept records' ids and exact texts)        review/signoff.json
    train      dataset fingerprint consumed  ->  weights' hash produced         train/result.json
    eval       weights' hash evaluated                                           eval/eval.json
    release    the gate checks every link against the files as they are now, and that the model loads

A model retrained on data edited after sign-off, a swapped or truncated model, or one that was never
evaluated breaks a link, and the release names which.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from distill.files import file_sha256


def examples_digest(examples: Iterable[dict[str, Any]]) -> str:
    """The dataset fingerprint: sha256 over the (id, prompt, text[, teacher distribution]) the student sees, in id order. The sign-off's
    `view_digest` is this over the kept records, so training can name exactly the data it consumed."""
    digest = hashlib.sha256()
    for example in examples:
        # The teacher distribution's fingerprint, for records that carry one (older runs: the same digest as before).
        teacher = [example["teacher_digest"]] if example.get("teacher_digest") else []
        digest.update(json.dumps([example.get("id"), example.get("prompt", ""), example["text"], *teacher],
                                 ensure_ascii=False).encode())
    return digest.hexdigest()


def weights_digest(model_dir: Path) -> str | None:
    """sha256 over every file of a saved model (weights, config, tokenizer) by name; None when there is none."""
    files = sorted(p for p in Path(model_dir).iterdir() if p.is_file()) if Path(model_dir).is_dir() else []
    if not any(p.name.endswith(".safetensors") for p in files):
        return None
    listing = "".join(f"{file_sha256(path)}  {path.name}\n" for path in files)  # like `sha256sum *`
    return hashlib.sha256(listing.encode()).hexdigest()


def load_saved_model(model_dir: Path, **options: Any):
    """(model, tokenizer) from a `save_pretrained` folder; a corrupt or truncated one is a located RunDirError.

    The files are untrusted input here (a copied, swapped or half-written model), and the loaders raise many
    kinds of errors (safetensors, tokenizers, JSON, OSError), so every failure to load becomes one message."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.errors import Problem, RunDirError

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, **options).eval()
    except Exception as exc:  # noqa: BLE001 - see the docstring: any failure to load is the same user-facing fact
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise RunDirError(Problem(f"the model cannot be loaded ({type(exc).__name__}: {first})", file=model_dir,
                                  hint="the files are corrupt or incomplete: run `distill train RUN` again")) from None
    return model, tokenizer
