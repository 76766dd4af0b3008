"""Dynamic batching: concurrent requests share the model's forward passes.

One scheduler thread owns the model. Each step it
  1. admits the sequences that arrived since the last step: their prompts are left-padded into one
     batch, prefilled in one forward pass, and their key/value caches joined to the running batch;
  2. decodes one token for every running sequence in one forward pass (B, 1);
  3. samples per sequence (its own temperature, top_p and seeded generator), emits the new text, and
     drops finished or cancelled sequences from the batch.
So a request never waits for another to finish: it joins the next step, and the cost of a step grows
far slower than the number of sequences in it.

The batch's cache is one `DynamicCache` whose rows are left-padded to a common width; the attention
mask hides the padding and explicit position ids keep every sequence's positions its own. Columns
that are padding in every row are trimmed when sequences leave.
"""

from __future__ import annotations

import queue
import random
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from distill.serving.logprobs import token_logprob
from distill.serving.text import StopScanner


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    top_logprobs: int | None = None  # None: no logprobs; 0..20: the sampled token's plus this many others


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()
    token_bytes: bytes | None = None  # the token's exact bytes (its text may end inside a character)
    top_bytes: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Delta:
    """What one step adds to one sequence: new text (possibly empty while a stop string may be
    forming), the logprobs of the tokens it came from, and the finish reason on the last delta."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: str | None = None
    completion_tokens: int = 0


@dataclass(eq=False)
class Sequence:
    prompt_ids: list[int]
    params: SamplingParams
    emit: Callable[[Delta], None]  # called from the scheduler thread
    generated: list[int] = field(default_factory=list)
    cancelled: bool = False
    allowed: Callable[[list[int]], list[int] | None] | None = None  # constrained decoding (distill.serving.constrained)

    def __post_init__(self):
        self.generator = torch.Generator().manual_seed(
            self.params.seed if self.params.seed is not None else random.getrandbits(63))
        self.pending_logprobs: list[TokenLogprob] = []


class BatchEngine:
    """The scheduler loop around one causal LM. `submit` is thread-safe; `emit` callbacks run on the
    scheduler thread and must not block (the HTTP layer hands deltas to its event loop)."""

    def __init__(self, model, tokenizer, *, max_batch: int = 64):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_batch = max_batch
        self.device = next(model.parameters()).device
        self.context_length = int(getattr(model.config, "max_position_embeddings", 2048))
        self.eos_ids = {tokenizer.eos_token_id} - {None}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._inbox: queue.Queue[Sequence] = queue.Queue()
        self._stopping = False
        # batch state, touched only by the scheduler thread
        self._running: list[Sequence] = []
        self._scanners: dict[Sequence, StopScanner] = {}
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # (B, T) 1 = real token
        self.steps = 0  # forward passes, for the benchmark and tests
        self._thread = threading.Thread(target=self._run, name="distill-batch-engine", daemon=True)
        self._thread.start()

    def warm_up(self) -> None:
        """One short request end to end, so the first client does not pay for lazy initialisation."""
        done = threading.Event()
        self.submit(Sequence([self.pad_id] * 4, SamplingParams(max_tokens=2, temperature=0),
                             lambda delta: delta.finish_reason and done.set()))
        done.wait(timeout=120)

    def submit(self, sequence: Sequence) -> None:
        self._inbox.put(sequence)

    def close(self) -> None:
        self._stopping = True
        self._inbox.put(None)  # type: ignore[arg-type]  (wakes the loop)
        self._thread.join(timeout=10)

    # --- the loop ---

    def _run(self) -> None:
        with torch.inference_mode():
            while not self._stopping:
                arrivals = self._take_arrivals(block=not self._running)
                try:
                    if arrivals:
                        self._prefill(arrivals)
                    if self._running:
                        self._decode()
                except Exception:  # a bug or out of memory: fail the requests in flight, keep serving
                    traceback.print_exc(file=sys.stderr)
                    for sequence in {*arrivals, *self._running}:
                        sequence.emit(Delta("", finish_reason="error"))
                    self._running, self._scanners, self._cache, self._mask = [], {}, None, None

    def _take_arrivals(self, *, block: bool) -> list[Sequence]:
        arrivals = []
        try:
            item = self._inbox.get(block=block)
            while True:
                if item is not None and not item.cancelled:
                    arrivals.append(item)
                if len(self._running) + len(arrivals) >= self.max_batch:
                    break
                item = self._inbox.get_nowait()
        except queue.Empty:
            pass
        return arrivals

    def _prefill(self, arrivals: list[Sequence]) -> None:
        width = max(len(s.prompt_ids) for s in arrivals)
        ids = torch.full((len(arrivals), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(arrivals), width), dtype=torch.long)
        for row, sequence in enumerate(arrivals):
            ids[row, width - len(sequence.prompt_ids):] = torch.tensor(sequence.prompt_ids)
            mask[row, width - len(sequence.prompt_ids):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=DynamicCache(),
                         use_cache=True, logits_to_keep=1)
        self.steps += 1
        self._join(out.cache, mask)
        for sequence in arrivals:
            self._scanners[sequence] = StopScanner(self.tokenizer, sequence.params.stop)
        self._running.extend(arrivals)
        self._advance(arrivals, out.logits[:, -1, :], first_row=len(self._running) - len(arrivals))

    def _decode(self) -> None:
        last = torch.tensor([[s.generated[-1]] for s in self._running], device=self.device)
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(self._running), 1))], dim=1)
        positions = torch.tensor([[len(s.prompt_ids) + len(s.generated) - 1] for s in self._running], device=self.device)
        out = self.model(input_ids=last, attention_mask=self._mask, position_ids=positions, cache=self._cache,
                         use_cache=True)
        self.steps += 1
        self._cache = out.cache
        self._advance(list(self._running), out.logits[:, -1, :], first_row=0)

    def _advance(self, sequences: list[Sequence], logits: torch.Tensor, *, first_row: int) -> None:
        """Sample one token for each of `sequences` (rows first_row.. of the batch), emit, retire."""
        logits = logits.float().cpu()  # sampling runs on the CPU, with each sequence's own generator
        for sequence, row_logits in zip(sequences, logits):
            allowed = sequence.allowed(sequence.prompt_ids + sequence.generated) if sequence.allowed else None
            if allowed is not None:  # only the tokens that keep the output valid
                keep = torch.tensor(allowed, dtype=torch.long)
                row_logits = torch.full_like(row_logits, float("-inf")).index_copy_(0, keep, row_logits[keep])
            token = sample(row_logits, sequence.params, sequence.generator, sequence.pending_logprobs, self.tokenizer)
            sequence.generated.append(token)
        finished = [s for s in sequences if self._emit(s)]
        finished += [s for s in self._running if s.cancelled and s not in finished]
        if finished:
            self._retire(finished)

    def _emit(self, sequence: Sequence) -> bool:
        """Hand the sequence's new text to its request; True when the sequence is done."""
        if sequence.cancelled:
            return True
        token = sequence.generated[-1]
        scanner = self._scanners[sequence]
        finish = None
        if token in self.eos_ids:
            text = scanner.flush()
            finish = "stop"
        else:
            text, stopped = scanner.push(token)
            if stopped:
                finish = "stop"
            elif len(sequence.generated) >= sequence.params.max_tokens or \
                    len(sequence.prompt_ids) + len(sequence.generated) >= self.context_length:
                text += scanner.flush()
                finish = "length"
        logprobs = tuple(sequence.pending_logprobs)
        sequence.pending_logprobs.clear()
        if text or finish or logprobs:
            completion_tokens = len(sequence.generated) - (1 if token in self.eos_ids else 0)
            sequence.emit(Delta(text, logprobs, finish, completion_tokens))
        return finish is not None

    def _retire(self, finished: list[Sequence]) -> None:
        keep = [i for i, s in enumerate(self._running) if s not in finished]
        for sequence in finished:
            self._scanners.pop(sequence, None)
        self._running = [self._running[i] for i in keep]
        if not keep:
            self._cache, self._mask = None, None
            return
        index = torch.tensor(keep, device=self.device)
        self._mask = self._mask[index]
        real = self._mask.any(dim=0).nonzero()
        start = int(real[0]) if len(real) else 0  # columns before `start` are padding in every row
        self._mask = self._mask[:, start:]
        for layer in self._cache.layers:
            layer.keys, layer.values = layer.keys[index, :, start:], layer.values[index, :, start:]

    def _join(self, cache: DynamicCache, mask: torch.Tensor) -> None:
        """Append a prefilled batch's cache rows to the running batch, left-padding the narrower side."""
        if self._cache is None:
            self._cache, self._mask = cache, mask
            return
        width = max(self._mask.shape[1], mask.shape[1])
        self._mask = torch.cat([left_pad(self._mask, width), left_pad(mask, width)], dim=0)
        for old, new in zip(self._cache.layers, cache.layers):
            old.keys = torch.cat([left_pad(old.keys, width, dim=2), left_pad(new.keys, width, dim=2)], dim=0)
            old.values = torch.cat([left_pad(old.values, width, dim=2), left_pad(new.values, width, dim=2)], dim=0)


def left_pad(tensor: torch.Tensor, width: int, *, dim: int = 1) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator,
           logprobs_out: list[TokenLogprob], tokenizer) -> int:
    """One token from (V,) logits: greedy at temperature 0, else temperature and nucleus (top_p)
    sampling. Logprobs are those of the model's own distribution (before temperature), as OpenAI's."""
    if params.temperature <= 0:
        token = int(logits.argmax())
    else:
        probs = torch.softmax(logits / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            outside = sorted_probs.cumsum(-1) - sorted_probs >= params.top_p  # keep the smallest nucleus
            sorted_probs[outside] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        token = int(torch.multinomial(probs, 1, generator=generator))
    if params.top_logprobs is not None:
        logprobs_out.append(token_logprob(tokenizer, logits, token, params.top_logprobs))
    return token
