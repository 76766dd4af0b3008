"""Conversations for training: the chat template, assistant-only targets, and bits per byte on assistant turns.

The template writes a conversation as its transcript does (`distill.conversation`), so the student's own
tokenizer, trained on transcripts, sees the same text at training and at serving:

    ### system\\n...\\n\\n  ### tools\\n[...]\\n\\n  ### user\\n...\\n\\n
    ### assistant calls NAME\\n{arguments}<eos>\\n\\n  ### tool NAME\\n...\\n\\n  ### assistant\\n...<eos>\\n\\n

The generation prompt is `### assistant`: the student goes on with `\\n` and a reply, or with ` calls NAME\\n`
and the call's arguments; either way it ends with eos. It ships in the bundle as the tokenizer's
`chat_template`, and plain transformers' `apply_chat_template(messages, tools=...)` renders it.

Targets: only what follows each `### assistant` header up to and including its eos is learned (replies and
tool calls alike); system, tools, user and tool-result text is context. Each conversation is one row of its
own (never packed with another), so no attention crosses conversations.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from distill.conversation import canonical_tools, parse_transcript

# No whitespace control: transformers renders with trim_blocks, and no newline follows a block tag here.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}### system\n{{ message['content'] }}\n\n{% endif %}"
    "{% if tools and loop.first %}### tools\n{{ tools | tojson }}\n\n{% endif %}"
    "{% if message['role'] == 'user' %}### user\n{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'assistant' and message.get('tool_calls') %}"
    "{% for call in message['tool_calls'] %}### assistant calls {{ call['function']['name'] }}\n"
    "{% if call['function']['arguments'] is string %}{{ call['function']['arguments'] }}"
    "{% else %}{{ call['function']['arguments'] | tojson }}{% endif %}{{ eos_token }}\n\n{% endfor %}"
    "{% elif message['role'] == 'assistant' %}### assistant\n{{ message['content'] }}{{ eos_token }}\n\n"
    "{% elif message['role'] == 'tool' %}### tool {{ message.get('name') or 'tool' }}\n{{ message['content'] }}\n\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### assistant{% endif %}"
)


def render(tokenizer, messages: list[dict], tools: list[dict] | None, *, generation_prompt: bool) -> str:
    text = tokenizer.apply_chat_template(messages, tools=canonical_tools(tools) or None,
                                         add_generation_prompt=generation_prompt, tokenize=False)
    if tokenizer.bos_token and text.startswith(tokenizer.bos_token):
        text = text[len(tokenizer.bos_token):]  # the layout adds the start token itself
    return text


def conversation_segments(tokenizer, messages: list[dict], tools: list[dict] | None) -> list[tuple[str, bool]]:
    """The rendered conversation as (text, learned) pieces, in order; their concatenation is the whole."""
    segments: list[tuple[str, bool]] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        context = render(tokenizer, messages[:i], tools, generation_prompt=True)
        full = render(tokenizer, messages[: i + 1], tools, generation_prompt=False)
        assert context.startswith(done) and full.startswith(context), "the chat template must render by appending"
        answer = full[len(context):]
        kept = answer.rstrip("\n")
        segments += [(context[len(done):], False), (kept, True)]
        done = context + kept
    whole = render(tokenizer, messages, tools, generation_prompt=False)
    if whole[len(done):]:
        segments.append((whole[len(done):], False))
    return segments


def encode_conversation(tokenizer, transcript: str, start: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, learned) of one transcript: token ids, start token first, and which of them are targets."""
    messages, tools = parse_transcript(transcript)
    ids, learned = [start], [False]
    for text, target in conversation_segments(tokenizer, messages, tools):
        piece = tokenizer(text, add_special_tokens=False).input_ids
        ids += piece
        learned += [target] * len(piece)
    return np.array(ids, dtype=np.int64), np.array(learned, dtype=bool)


@torch.no_grad()
def assistant_bits_per_byte(model, tokenizer, transcripts: list[str], *, context_length: int,
                            batch_size: int = 8) -> dict[str, Any]:
    """Held-out bits per byte and nats per token over the assistant's turns only (replies and tool calls), and
    bits per byte per assistant move (`by_move`: the 1st, 2nd, ... assistant turn of each conversation)."""
    from distill.train.data import start_token

    model.eval()
    device = next(model.parameters()).device
    start = start_token(tokenizer)
    nats: dict[int, float] = {}
    n_bytes: dict[int, int] = {}
    tokens = 0
    encoded = [encode_conversation(tokenizer, t, start) for t in transcripts]
    for first in range(0, len(encoded), batch_size):
        batch = encoded[first:first + batch_size]
        width = min(context_length, max(len(ids) for ids, _ in batch)) - 1
        inputs = torch.full((len(batch), width), tokenizer.pad_token_id or 0, dtype=torch.long)
        targets = torch.full((len(batch), width), -100, dtype=torch.long)
        moves = torch.zeros((len(batch), width), dtype=torch.long)  # which assistant move each target belongs to
        for row, (ids, learned) in enumerate(batch):
            ids, learned = ids[: width + 1], learned[: width + 1]
            n = len(ids) - 1
            inputs[row, :n] = torch.from_numpy(ids[:-1])
            targets[row, :n] = torch.from_numpy(np.where(learned[1:], ids[1:], -100))
            move = np.cumsum(learned[1:] & ~np.concatenate([[False], learned[1:-1]]))
            moves[row, :n] = torch.from_numpy(np.where(learned[1:], move, 0))
            for k in range(1, int(move.max(initial=0)) + 1):
                text = tokenizer.decode(ids[1:][learned[1:] & (move == k)].tolist(), skip_special_tokens=True)
                n_bytes[k] = n_bytes.get(k, 0) + len(text.encode())
        logits = model(input_ids=inputs.to(device)).logits.float()
        loss = F.cross_entropy(logits.transpose(1, 2), targets.to(device), ignore_index=-100, reduction="none").cpu()
        for k in moves.unique().tolist():
            if k:
                nats[k] = nats.get(k, 0.0) + float(loss[moves == k].sum())
        tokens += int((targets != -100).sum())
    total_nats, total_bytes = sum(nats.values()), sum(n_bytes.values())
    return {"nats_per_token": total_nats / max(tokens, 1), "bits_per_byte": total_nats / math.log(2) / max(total_bytes, 1),
            "tokens": tokens, "bytes": total_bytes,
            "by_move": {k: round(nats[k] / math.log(2) / max(n_bytes.get(k, 0), 1), 4) for k in sorted(nats)}}
