"""The teacher's token probabilities, as distill keeps them: compact, exact about bytes, provider-neutral.

`TokenLogprobs` holds, for each token the teacher wrote, the token (as its UTF-8 bytes: a byte-level
token can end inside a character, so its text alone is ambiguous), its log-probability, the teacher's
top-k alternatives with theirs, and the probability mass outside the top-k (the tail bucket the
distillation loss renormalises with). `to_json` stores it in a few bytes per token: each distinct token
once in a table, positions as indices into it, log-probabilities as float16 in base64.

OpenAI and OpenAI-compatible servers (vLLM, `distill serve-model`) return `logprobs.content`, each entry
with `bytes` and `top_logprobs`; `from_openai` reads that shape. `from_top_k` builds it from a local
model's own distribution.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_TOP_K = 20  # what OpenAI-compatible servers return at most (`top_logprobs` <= 20)
# Providers whose replies carry token log-probabilities; the others train text only (and say so).
LOGPROB_PROVIDERS = ("openai", "hf")


@dataclass(frozen=True)
class TokenLogprobs:
    tokens: tuple[bytes, ...]  # (N,) the tokens written, as bytes
    logprobs: np.ndarray  # (N,) float16: log p(token)
    top_tokens: tuple[tuple[bytes, ...], ...]  # (N, <=k) the likeliest tokens, likeliest first
    top_logprobs: np.ndarray  # (N, k) float16; -inf where a position has fewer than k

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def k(self) -> int:
        return int(self.top_logprobs.shape[1]) if self.top_logprobs.ndim == 2 else 0

    @property
    def text_bytes(self) -> bytes:
        return b"".join(self.tokens)

    def rest_mass(self) -> np.ndarray:
        """(N,) the probability outside the top-k at each position (0 where the top-k holds it all)."""
        top = np.exp(self.top_logprobs.astype(np.float32)).sum(axis=1) if self.k else np.zeros(len(self))
        return np.clip(1.0 - top, 0.0, 1.0).astype(np.float16)

    def prefix(self, n_bytes: int) -> TokenLogprobs:
        """The tokens that lie wholly within the first `n_bytes` bytes of the text."""
        ends = np.cumsum([len(t) for t in self.tokens]) if self.tokens else np.zeros(0)
        n = int((ends <= n_bytes).sum())
        return TokenLogprobs(self.tokens[:n], self.logprobs[:n], self.top_tokens[:n], self.top_logprobs[:n])

    def to_json(self) -> str:
        table: dict[bytes, int] = {}
        index = [table.setdefault(t, len(table)) for t in self.tokens]
        top = [[table.setdefault(t, len(table)) for t in row] for row in self.top_tokens]
        return json.dumps({
            "v": 1, "k": self.k,
            "table": [base64.b64encode(t).decode() for t in table],
            "ids": index, "top": top,
            "lp": _pack(self.logprobs), "top_lp": _pack(self.top_logprobs), "rest": _pack(self.rest_mass()),
        }, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> TokenLogprobs:
        data = json.loads(text)
        table = [base64.b64decode(t) for t in data["table"]]
        n, k = len(data["ids"]), data["k"]
        return cls(tuple(table[i] for i in data["ids"]), _unpack(data["lp"]).reshape(n),
                   tuple(tuple(table[i] for i in row) for row in data["top"]), _unpack(data["top_lp"]).reshape(n, k))

    @classmethod
    def from_top_k(cls, tokens: list[bytes], logprobs: list[float], top: list[list[tuple[bytes, float]]]) -> TokenLogprobs:
        k = max((len(row) for row in top), default=0)
        top_lp = np.full((len(top), k), -np.inf, dtype=np.float16)
        for i, row in enumerate(top):
            top_lp[i, : len(row)] = [v for _, v in row]
        return cls(tuple(tokens), np.asarray(logprobs, dtype=np.float16).reshape(len(tokens)),
                   tuple(tuple(t for t, _ in row) for row in top), top_lp)

    @classmethod
    def from_openai(cls, content: list[Any]) -> TokenLogprobs:
        """From a chat completion's `choices[i].logprobs.content` (SDK objects or plain dicts)."""
        def field(item: Any, name: str) -> Any:
            return item.get(name) if isinstance(item, dict) else getattr(item, name, None)

        def as_bytes(item: Any) -> bytes:
            raw = field(item, "bytes")
            return bytes(raw) if raw is not None else str(field(item, "token")).encode("utf-8", "surrogatepass")

        tokens = [as_bytes(item) for item in content]
        logprobs = [float(field(item, "logprob")) for item in content]
        top = [[(as_bytes(t), float(field(t, "logprob"))) for t in field(item, "top_logprobs") or []] for item in content]
        return cls.from_top_k(tokens, logprobs, top)


def logprobs_digest(stored: str) -> str:
    """The fingerprint of one record's stored distribution (what the sign-off and the weights name)."""
    return hashlib.sha256(stored.encode()).hexdigest() if stored else ""


def _pack(values: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f2").tobytes()).decode()


def _unpack(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f2").copy()


def token_bytes_table(tokenizer: Any) -> list[bytes]:
    """The UTF-8 bytes each token id of a transformers tokenizer stands for (index = id).

    Byte-level BPE (GPT-2's, distill's own) spells bytes with printable stand-ins; SentencePiece writes `▁`
    for a space and `<0xNN>` for raw bytes. Special tokens stand for their own text."""
    cached = getattr(tokenizer, "_distill_token_bytes", None)
    if cached is not None:
        return cached
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = set(tokenizer.all_special_tokens)
    byte_level = '"ByteLevel"' in tokenizer.backend_tokenizer.to_str() if hasattr(tokenizer, "backend_tokenizer") else False
    decode = {c: b for b, c in _bytes_to_unicode().items()}
    table = []
    for piece in pieces:
        piece = piece or ""
        if piece in special:
            table.append(piece.encode())
        elif byte_level:
            table.append(bytes(decode.get(c, 0) for c in piece) if all(c in decode for c in piece) else piece.encode())
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            table.append(bytes([int(piece[3:5], 16)]))
        else:
            table.append(piece.replace("\u2581", " ").encode())
    try:
        tokenizer._distill_token_bytes = table
    except AttributeError:
        pass
    return table


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte (the byte-level BPE alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, codes)}
