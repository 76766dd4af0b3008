"""The split, the token layout and resumable batching of distill.train.data."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from distill.errors import ConfigError
from distill.train.data import IGNORE, TrainBatches, encode_examples, load_or_make_split, render_prompt
from distill.train.tokenizer import train_tokenizer

NAMES = ["Tom", "Lily", "Ben", "Mia", "Sam", "Anna", "Max", "Sue"]
THINGS = ["ball", "dog", "kite", "boat", "cake", "tree", "hat", "bird"]
FEELINGS = ["happy", "sad", "tired", "brave", "kind", "silly"]


def stories(n: int, seed: int = 0) -> list[str]:
    """Short, regular, made-up stories: enough structure for a tiny model to learn fast."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        name, thing, feeling = rng.choice(NAMES), rng.choice(THINGS), rng.choice(FEELINGS)
        out.append(f"Once upon a time, {name} had a {thing}. {name} was {feeling}. "
                   f"One day the {thing} was lost. {name} looked for it and found it. The end.")
    return out


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(stories(50), 300)


def test_split_is_disjoint_deterministic_and_stored(tmp_path):
    examples = [{"id": i * 7, "prompt": "", "text": t} for i, t in enumerate(stories(40))]
    split = load_or_make_split(tmp_path / "split.json", examples, val_fraction=0.2, mode="random", seed=3)
    assert not set(split.train) & set(split.val)
    assert sorted(split.train + split.val) == list(range(40)) and len(split.val) == 8
    stored = json.loads((tmp_path / "split.json").read_text())
    assert sorted(stored["val"]) == sorted(examples[i]["id"] for i in split.val)  # named by id

    # A reorder of the examples finds the stored split by id; the same seed elsewhere gives the same split.
    again = load_or_make_split(tmp_path / "split.json", examples[::-1], val_fraction=0.5, mode="tail", seed=0)
    assert sorted(examples[::-1][i]["id"] for i in again.val) == sorted(stored["val"])
    assert load_or_make_split(tmp_path / "other.json", examples, val_fraction=0.2, mode="random", seed=3) == split


def test_tail_split_holds_out_the_last_examples(tmp_path):
    examples = [{"prompt": "", "text": t} for t in stories(20)]
    split = load_or_make_split(tmp_path / "split.json", examples, val_fraction=0.1, mode="tail", seed=0)
    assert split.val == [18, 19] and split.train == list(range(18))


def test_text_packing_covers_every_token_once_without_padding(tokenizer):
    docs = encode_examples(tokenizer, [{"prompt": "", "text": t} for t in stories(30)], "text")
    assert all(d.ids[0] == tokenizer.eos_token_id for d in docs)  # <|endoftext|> starts each document
    batches = TrainBatches(docs, kind="text", context_length=16, batch_size=4, seed=0)
    rows = [batches.get(0, index) for index in range(batches.per_epoch)]
    inputs = torch.cat([r[0] for r in rows])
    targets = torch.cat([r[1] for r in rows])
    assert inputs.shape == targets.shape == (batches.per_epoch * 4, 16)
    assert not (inputs == tokenizer.pad_token_id).any() and not (targets == IGNORE).any()
    assert torch.equal(targets[:, :-1], inputs[:, 1:])  # targets are the next tokens
    # Rows tile the epoch's stream: each token is an input once, and only the last partial batch is left out.
    stream = np.concatenate([d.ids for d in docs])
    used = np.bincount(inputs.flatten().numpy(), minlength=len(tokenizer))
    available = np.bincount(stream, minlength=len(tokenizer))
    assert (used <= available).all()
    assert len(stream) - used.sum() < 4 * 16 + 16


def test_batches_are_a_pure_function_of_position(tokenizer):
    docs = encode_examples(tokenizer, [{"prompt": "", "text": t} for t in stories(30)], "text")
    a = TrainBatches(docs, kind="text", context_length=16, batch_size=4, seed=0)
    b = TrainBatches(docs, kind="text", context_length=16, batch_size=4, seed=0)
    b.get(1, 0)  # a different epoch cached first
    assert torch.equal(a.get(0, 2)[0], b.get(0, 2)[0])
    assert not torch.equal(a.get(0, 2)[0], a.get(1, 2)[0])  # each epoch is shuffled anew
    # Two processes split each global batch between them.
    r0 = TrainBatches(docs, kind="text", context_length=16, batch_size=2, seed=0, rank=0, world_size=2)
    r1 = TrainBatches(docs, kind="text", context_length=16, batch_size=2, seed=0, rank=1, world_size=2)
    assert torch.equal(torch.cat([r0.get(0, 1)[0], r1.get(0, 1)[0]]), a.get(0, 1)[0])


def test_instruct_loss_covers_the_response_only(tokenizer):
    examples = [{"prompt": f"Tell a story about {n}.", "text": t} for n, t in zip(NAMES, stories(8))]
    docs = encode_examples(tokenizer, examples, "instruct")
    batches = TrainBatches(docs, kind="instruct", context_length=256, batch_size=8, seed=0,
                           pad_id=tokenizer.pad_token_id)
    inputs, targets = batches.get(0, 0)
    for row in range(8):
        learned = targets[row][targets[row] != IGNORE].tolist()
        decoded = tokenizer.decode(learned)
        assert decoded.endswith("<|endoftext|>")  # the model learns to stop
        assert decoded.removesuffix("<|endoftext|>") in [e["text"] for e in examples]
        assert "Tell a story" not in decoded
    prompt = render_prompt(tokenizer, "Tell a story about Tom.")
    assert prompt == "### Prompt:\nTell a story about Tom.\n\n### Response:\n"


def test_too_little_data_for_one_batch_names_the_setting(tokenizer):
    docs = encode_examples(tokenizer, [{"prompt": "", "text": "Hi."}], "text")
    with pytest.raises(ConfigError, match="training.batch_size"):
        TrainBatches(docs, kind="text", context_length=64, batch_size=8, seed=0)
