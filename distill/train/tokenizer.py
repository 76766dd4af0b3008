"""The student's own tokenizer: byte-level BPE trained on the training split.

Byte-level BPE never meets an unknown character (every UTF-8 byte is in the base alphabet) and decodes
back to exactly the text it encoded, so bits per byte are well defined. A vocabulary trained on the
task's own text (2k-16k tokens) keeps the embedding small; most of a 4M-parameter student would
otherwise sit in a GPT-2-sized embedding.

Special tokens: `<|endoftext|>` separates documents and is bos and eos at once (as in GPT-2); `<|pad|>`
pads instruct batches. The tokenizer puts `<|endoftext|>` before every text it encodes, the way the
training data shows each document to the model, so plain `tokenizer(prompt)` matches training.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from distill.errors import ConfigError, Problem

END_OF_TEXT = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = [END_OF_TEXT, PAD]  # ids 0 and 1

# The instruct format of students trained from scratch (a base model keeps its own chat template).
# The document-start token is not part of it: the data layout puts it before every example.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}### Prompt:\n{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'assistant' %}### Response:\n{{ message['content'] }}{{ eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Response:\n{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int, *, chat_template: str | None = None) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with `vocab_size` entries (special tokens included)."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, even ones the corpus lacks
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    bpe.post_processor = processors.TemplateProcessing(
        single=f"{END_OF_TEXT} $A",
        pair=f"{END_OF_TEXT} $A {END_OF_TEXT} $B",
        special_tokens=[(END_OF_TEXT, bpe.token_to_id(END_OF_TEXT))],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT, pad_token=PAD
    )
    tokenizer.chat_template = chat_template or DEFAULT_CHAT_TEMPLATE
    return tokenizer


def load_or_train_tokenizer(directory: Path, texts: Iterable[str], vocab_size: int, *,
                            chat_template: str | None = None, source: str = "own"):
    """The tokenizer saved in `directory`, training and saving it first if it is not there yet; with a
    `source` folder (`student.tokenizer`: the teacher's), that tokenizer copied instead of training one.

    Saved atomically (a temporary folder renamed into place), so a crash never leaves half a tokenizer
    that a resumed run would pick up.
    """
    if not directory.is_dir():
        if source == "own":
            tokenizer = train_tokenizer(texts, vocab_size, chat_template=chat_template)
        else:
            tokenizer = load_given_tokenizer(Path(source), chat_template=chat_template)
        tmp = directory.with_name(directory.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, directory)
    return AutoTokenizer.from_pretrained(directory)


def load_given_tokenizer(folder: Path, *, chat_template: str | None = None) -> PreTrainedTokenizerFast:
    """The tokenizer of a transformers folder, a saved model or a released bundle (`student.tokenizer`), ready
    for distill's data layout: a chat template and a pad token."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise ConfigError(Problem(f"no tokenizer in {str(folder)!r}: {str(exc).splitlines()[0][:160]}",
                                  key="student.tokenizer",
                                  hint="give a folder with tokenizer.json (a saved model, a released bundle)")) from None
    if chat_template or not tokenizer.chat_template:
        tokenizer.chat_template = chat_template or DEFAULT_CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
