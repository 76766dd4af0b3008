"""From examples to training batches: the stored split, the token layout, and resumable batching.

Layout. Every document starts with the start token (bos; for our own tokenizer `<|endoftext|>`, which
is bos and eos at once) and, where eos differs from bos, ends with eos, so the model learns where a
document ends either way.
- `text`: documents are concatenated and cut into rows of `context_length` tokens with no padding;
  rows overlap by one token so every token is a target exactly once. Attention crosses document
  boundaries inside a row (as in GPT-2 and nanoGPT); the separator tells the model a new story began.
- `instruct`: one example per row, `[start] prompt-in-chat-format response [eos]`, cut at
  `context_length`; the loss covers the response and eos only. Rows are padded to the longest in the
  batch on the right, so causal attention never lets a real token see padding and no attention mask
  is needed.
- `chat`: one conversation per row, laid out as `instruct` (never packed with another, so no attention crosses
  conversations); the chat template renders it and only the assistant's turns are targets
  (`distill.train.chat_template`).

Order. Batch `index` of `epoch` is a pure function of (seed, epoch, index): the epoch's documents are
shuffled, packed, and the rows shuffled again, all from a generator seeded with (seed, epoch). Resuming
needs only the position, never a data-loader state.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from distill.errors import ConfigError, Problem, RunDirError
from distill.files import write_json_atomic

Kind = Literal["text", "instruct", "chat"]
IGNORE = -100  # target id that cross_entropy skips


@dataclass(frozen=True)
class Split:
    train: list[int]  # indices into the examples
    val: list[int]


def load_or_make_split(path: Path, examples: list[dict], *, val_fraction: float, mode: str, seed: int) -> Split:
    """The train/validation split stored at `path`, made and stored on first use.

    Examples are named by their `id` when they carry one, else by their position. `random` draws the
    validation set with a seeded shuffle; `tail` holds out the last examples in the order given.
    """
    keys = [example.get("id", index) for index, example in enumerate(examples)]
    if len(set(keys)) != len(keys):
        raise ConfigError(Problem("examples carry duplicate ids; every example needs its own id"))
    if path.is_file():
        stored = json.loads(path.read_text())
        position = {key: index for index, key in enumerate(keys)}
        missing = [key for key in stored["train"] + stored["val"] if key not in position]
        if missing:
            raise RunDirError(Problem(f"the stored split names examples that are gone, e.g. {missing[0]!r}", file=path,
                                      hint="the training data changed: delete the train folder to start over"))
        return Split([position[k] for k in stored["train"]], [position[k] for k in stored["val"]])

    n_val = max(1, round(len(keys) * val_fraction))
    if len(keys) - n_val < 1:
        raise ConfigError(Problem(f"{len(keys)} examples cannot be split into training and validation",
                                  key="training.val_fraction", hint="train on more examples"))
    order = list(range(len(keys)))
    if mode == "random":
        random.Random(seed).shuffle(order)
    split = Split(train=sorted(order[:-n_val]), val=sorted(order[-n_val:]))
    write_json_atomic(path, {"train": [keys[i] for i in split.train], "val": [keys[i] for i in split.val]})
    return split


def start_token(tokenizer) -> int:
    """The token every document starts with: bos, or eos for tokenizers (like GPT-2's) without a bos."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise ConfigError(Problem("the tokenizer has neither a bos nor an eos token", key="student.base_model"))
    return start


def render_prompt(tokenizer, prompt: str) -> str:
    """`prompt` as the user turn of the tokenizer's chat template, ready for the response to follow."""
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=False)
    if tokenizer.bos_token and rendered.startswith(tokenizer.bos_token):
        rendered = rendered[len(tokenizer.bos_token):]  # the layout adds the start token itself
    return rendered


@dataclass(frozen=True)
class Document:
    ids: np.ndarray  # int64 token ids, start token first
    first_target: int  # ids[first_target:] are learned; before that is context (the prompt)
    learned: np.ndarray | None = None  # chat: bool per id, True where it is a target (the assistant's turns)


def encode_examples(tokenizer, examples: list[dict], kind: Kind) -> list[Document]:
    """Token ids of each example in the layout described at the top of this module."""
    start, eos = start_token(tokenizer), tokenizer.eos_token_id
    end = [eos] if eos != start else []
    if kind == "chat":
        from distill.train.chat_template import encode_conversation

        return [Document(ids, 1, learned) for ids, learned in
                (encode_conversation(tokenizer, e["text"], start) for e in examples)]
    texts = tokenizer([e["text"] for e in examples], add_special_tokens=False)["input_ids"]
    if kind == "text":
        return [Document(np.array([start, *ids, *end], dtype=np.int64), 1) for ids in texts]
    prompts = tokenizer([render_prompt(tokenizer, e["prompt"]) for e in examples], add_special_tokens=False)["input_ids"]
    return [Document(np.array([start, *p, *ids, eos], dtype=np.int64), 1 + len(p)) for p, ids in zip(prompts, texts)]


class TrainBatches:
    """Micro-batches of the training split: `get(epoch, index)` -> (inputs, targets), each (B, T).

    With several processes, each global batch holds `batch_size` rows per process and process `rank`
    takes its own slice, so together they see every row once per epoch.
    """

    def __init__(self, documents: list[Document], *, kind: Kind, context_length: int, batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1, pad_id: int = 0):
        if kind != "text":
            # A prompt that fills the whole context leaves no response token to learn from.
            fitting = [d for d in documents if d.first_target <= context_length]
            if len(fitting) < len(documents):
                print(f"warning: {len(documents) - len(fitting)} instruct examples have prompts of "
                      f"{context_length}+ tokens and are left out; raise student.context_length", file=sys.stderr)
            documents = fitting
        self.documents, self.kind, self.seed = documents, kind, seed
        self.context_length, self.batch_size = context_length, batch_size
        self.rank, self.world_size, self.pad_id = rank, world_size, pad_id
        if kind == "text":
            n_rows = (sum(len(d.ids) for d in documents) - 1) // context_length
        else:
            n_rows = len(documents)
        self.per_epoch = n_rows // (batch_size * world_size)
        if self.per_epoch == 0:
            raise ConfigError(Problem(
                f"the training split fills {n_rows} rows of {context_length} tokens, fewer than one batch of "
                f"{batch_size * world_size} rows", key="training.batch_size",
                hint="lower training.batch_size or student.context_length, or train on more examples"))
        self._epoch: int | None = None
        self._rows: tuple[torch.Tensor, torch.Tensor] | list[Document] | None = None

    def get(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        assert 0 <= index < self.per_epoch
        if epoch != self._epoch:
            self._epoch, self._rows = epoch, self._layout(epoch)
        first = (index * self.world_size + self.rank) * self.batch_size
        if self.kind == "text":
            inputs, targets = self._rows
            return inputs[first : first + self.batch_size], targets[first : first + self.batch_size]
        return self._pad(self._rows[first : first + self.batch_size])

    def _layout(self, epoch: int):
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.documents))
        if self.kind != "text":
            return [self.documents[i] for i in order]
        stream = np.concatenate([self.documents[i].ids for i in order])
        T = self.context_length
        n_rows = (len(stream) - 1) // T
        inputs = stream[: n_rows * T].reshape(n_rows, T)
        targets = stream[1 : n_rows * T + 1].reshape(n_rows, T)  # row r overlaps row r+1 by one token
        rows = rng.permutation(n_rows)
        return torch.from_numpy(inputs[rows]), torch.from_numpy(targets[rows])

    def _pad(self, documents: list[Document]) -> tuple[torch.Tensor, torch.Tensor]:
        width = min(self.context_length, max(len(d.ids) - 1 for d in documents))
        inputs = torch.full((len(documents), width), self.pad_id, dtype=torch.long)
        targets = torch.full((len(documents), width), IGNORE, dtype=torch.long)
        for row, doc in enumerate(documents):
            ids = torch.from_numpy(doc.ids[: width + 1])
            n = len(ids) - 1
            inputs[row, :n] = ids[:-1]
            targets[row, :n] = ids[1:]
            targets[row, : max(0, doc.first_target - 1)] = IGNORE  # targets before first_target are prompt
            if doc.learned is not None:
                targets[row, :n][~torch.from_numpy(doc.learned[1 : n + 1])] = IGNORE
        return inputs, targets
