import math

import pytest
import torch

from distill.train.bpb import bits_per_byte
from tiny_lm import STORIES, tiny_llama, tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(len(tok))


def hand_nats(model, ids: list[int], first_scored: int) -> float:
    """Negative log-likelihood of ids[first_scored:], one softmax at a time in plain Python."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].tolist()
    nats = 0.0
    for t in range(first_scored, len(ids)):
        row = logits[t - 1]
        top = max(row)
        log_z = top + math.log(sum(math.exp(x - top) for x in row))
        nats += log_z - row[ids[t]]
    return nats


def test_bpb_matches_hand_computation(model, tok):
    texts = ["Tom liked the big red ball.", "Lily saw a dog in the park é!"]
    expected_nats = 0.0
    expected_tokens = 0
    for text in texts:
        ids = [tok.bos_token_id, *tok.encode(text, add_special_tokens=False)]
        expected_nats += hand_nats(model, ids, 1)
        expected_tokens += len(ids) - 1
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)

    result = bits_per_byte(model, tok, texts, context_length=128, batch_size=2)

    assert result["tokens"] == expected_tokens
    assert result["bytes"] == n_bytes == sum(len(t) for t in texts) + 1  # é is two bytes
    assert result["bits_per_byte"] == pytest.approx(expected_nats / math.log(2) / n_bytes, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(expected_nats / expected_tokens), rel=1e-5)


def test_prompt_is_context_not_scored(model, tok):
    prompt, text = "Write about a cat.", " Tom the cat sat."
    prompt_ids = tok.encode(prompt, add_special_tokens=False)
    text_ids = tok.encode(text, add_special_tokens=False)
    ids = [tok.bos_token_id, *prompt_ids, *text_ids]
    expected = hand_nats(model, ids, 1 + len(prompt_ids))

    result = bits_per_byte(model, tok, [text], prompts=[prompt], context_length=64, batch_size=1)

    assert result["tokens"] == len(text_ids)
    assert result["bytes"] == len(text)
    assert result["bits_per_byte"] == pytest.approx(expected / math.log(2) / len(text), rel=1e-5)


def test_long_documents_are_windowed_and_every_token_scored_once(model, tok):
    texts = STORIES[:3]
    n_text_tokens = sum(len(tok.encode(t, add_special_tokens=False)) for t in texts)
    short = bits_per_byte(model, tok, texts, context_length=8, batch_size=1)
    short_batched = bits_per_byte(model, tok, texts, context_length=8, batch_size=5)

    assert short["tokens"] == n_text_tokens
    # Padding inside a batch must not change any score.
    assert short_batched["bits_per_byte"] == pytest.approx(short["bits_per_byte"], rel=1e-5)


def test_rejects_empty_input(model, tok):
    with pytest.raises(ValueError, match="no text"):
        bits_per_byte(model, tok, ["", ""], context_length=16, batch_size=1)


def test_windows_overlap_by_one_token(model, tok):
    text = STORIES[0]
    ids = [tok.bos_token_id, *tok.encode(text, add_special_tokens=False)]
    expected = 0.0
    for start in range(0, len(ids) - 1, 3):  # context 4: windows share their edge token
        expected += hand_nats(model, ids[start : start + 4], 1)

    result = bits_per_byte(model, tok, [text], context_length=4, batch_size=4)

    assert result["bits_per_byte"] == pytest.approx(expected / math.log(2) / len(text), rel=1e-5)


def test_concatenated_bpb_matches_hand_computation(model, tok):
    from distill.train.bpb import concatenated_bits_per_byte

    texts = ["Tom liked the big red ball.", "Lily saw a dög in the park é!", "", "The sun was warm ☀."]
    joined = "Tom liked the big red ball.\nLily saw a dög in the park é!\nThe sun was warm ☀."
    ids = [tok.bos_token_id, *tok.encode(joined, add_special_tokens=False)]
    expected = 0.0
    for start in range(0, len(ids) - 1, 5):  # context 5: 5 inputs predict the next 5 ids, no overlap
        expected += hand_nats(model, ids[start : start + 6], 1)

    result = concatenated_bits_per_byte(model, tok, texts, context_length=5, batch_size=3)

    assert result["tokens"] == len(ids) - 1  # every token once
    n_bytes = len(joined.encode("utf-8"))
    assert result["bytes"] == n_bytes == len(joined) + 1 + 1 + 2  # ö and é are two bytes, ☀ three
    assert result["texts"] == 3
    assert result["bits_per_byte"] == pytest.approx(expected / math.log(2) / n_bytes, rel=1e-5)
    # One window holding the whole text scores it with full context.
    whole = concatenated_bits_per_byte(model, tok, texts, context_length=len(ids), batch_size=1)
    assert whole["bits_per_byte"] == pytest.approx(hand_nats(model, ids, 1) / math.log(2) / n_bytes, rel=1e-5)


def test_concatenated_rejects_empty_input(model, tok):
    from distill.train.bpb import concatenated_bits_per_byte

    with pytest.raises(ValueError, match="no text"):
        concatenated_bits_per_byte(model, tok, ["", ""], context_length=16, batch_size=1)
