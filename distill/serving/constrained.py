"""Constrained decoding for `response_format` and forced tool calls, with lm-format-enforcer.

At each step the enforcer says which tokens keep the output a valid prefix of a JSON value matching the
schema (any JSON object for `json_object`); the engine samples among those only (`Sequence.allowed`), and
eos is allowed once the value is complete. The output is therefore valid JSON of the schema whenever the
model finishes within max_tokens (a `length` finish can cut it short, as with OpenAI).

lm-format-enforcer's own transformers integration does not import under transformers 5, so the token table
it needs (each token's text, and whether it starts a word) is built here, once per tokenizer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from lmformatenforcer import CharacterLevelParserConfig, JsonSchemaParser, RegexParser, TokenEnforcer
from lmformatenforcer.tokenenforcer import TokenEnforcerTokenizerData

_TABLES: dict[int, TokenEnforcerTokenizerData] = {}
_LOCK = threading.Lock()


def tokenizer_table(tokenizer) -> TokenEnforcerTokenizerData:
    """The enforcer's view of `tokenizer`, built on first use (a few seconds for a large vocabulary)."""
    with _LOCK:
        table = _TABLES.get(id(tokenizer))
        if table is None:
            special = set(tokenizer.all_special_ids)
            zero = tokenizer.encode("0", add_special_tokens=False)[-1]
            regular = []
            for token in range(len(tokenizer)):
                if token in special:
                    continue
                after_zero = tokenizer.decode([zero, token])[1:]  # a leading space survives behind another token
                regular.append((token, after_zero, len(after_zero) > len(tokenizer.decode([token]))))
            table = TokenEnforcerTokenizerData(regular, lambda ids: tokenizer.decode(ids).rstrip("\ufffd"),
                                               tokenizer.eos_token_id, False, len(tokenizer))
            _TABLES[id(tokenizer)] = table
    return table


def json_constraint(tokenizer, schema: dict[str, Any] | None) -> Callable[[list[int]], list[int]]:
    """`allowed(token ids so far, prompt included)` -> the token ids that may come next, for a JSON value matching
    `schema` (None: any JSON object)."""
    # One space at most between tokens of the JSON (as students write it): whitespace cannot eat the token budget.
    config = CharacterLevelParserConfig(max_consecutive_whitespaces=1, force_json_field_order=True)
    enforcer = TokenEnforcer(tokenizer_table(tokenizer), JsonSchemaParser(schema, config=config))
    return lambda ids: enforcer.get_allowed_tokens(ids).allowed_tokens


def regex_constraint(tokenizer, pattern: str) -> Callable[[list[int]], list[int]]:
    """`allowed` for text matching the regular expression `pattern` (a tool's name and the newline after it)."""
    enforcer = TokenEnforcer(tokenizer_table(tokenizer), RegexParser(pattern))
    return lambda ids: enforcer.get_allowed_tokens(ids).allowed_tokens
