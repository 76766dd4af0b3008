"""Streaming detokenisation with stop strings.

Tokens arrive one at a time; the text a client sees must (1) never split a multi-byte character
(byte-level BPE tokens can end mid-character, which decodes to U+FFFD until the rest arrives), and
(2) never show the start of a stop string that turns out to be one. So the scanner decodes everything
generated so far, and holds back any tail that is an incomplete character or a prefix of a stop string.
"""

from __future__ import annotations


class StopScanner:
    def __init__(self, tokenizer, stop: tuple[str, ...] = ()):
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.ids: list[int] = []
        self.sent = 0  # characters of the decoded text already handed out

    def push(self, token: int) -> tuple[str, bool]:
        """Add one token; returns (text safe to send now, whether a stop string was reached)."""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        for stop in self.stop:
            found = text.find(stop, max(0, self.sent - len(stop)))
            if found != -1:
                out = text[self.sent:found] if found > self.sent else ""
                self.sent = len(text)
                return out, True
        end = len(text)
        while end > self.sent and text[end - 1] == "\ufffd":
            end -= 1  # an incomplete character: wait for its remaining bytes
        end -= held_back(text[self.sent:end], self.stop)
        out = text[self.sent:end]
        self.sent = end
        return out, False

    def flush(self) -> str:
        """Everything not yet handed out (the sequence ends without a stop string)."""
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        out = text[self.sent:]
        self.sent = len(text)
        return out


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest
