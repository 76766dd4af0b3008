"""The student's byte-level BPE tokenizer."""

from __future__ import annotations

from transformers import AutoTokenizer

from distill.train.tokenizer import DEFAULT_CHAT_TEMPLATE, load_or_train_tokenizer, train_tokenizer
from test_train_data import stories


def test_round_trips_any_text_and_starts_documents_with_endoftext(tmp_path):
    tokenizer = load_or_train_tokenizer(tmp_path / "tok", stories(50), 300)
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tok")  # plain transformers
    for text in ["Once upon a time, Tom had a ball.", "Zoë's café — 3½ 🐱!\n\tnew line"]:  # unseen bytes too
        ids = reloaded(text)["input_ids"]
        assert ids[0] == reloaded.convert_tokens_to_ids("<|endoftext|>") == 0
        assert reloaded.decode(ids, skip_special_tokens=True) == text
    assert len(reloaded) == 300
    assert (reloaded.bos_token, reloaded.eos_token, reloaded.pad_token) == ("<|endoftext|>", "<|endoftext|>", "<|pad|>")
    assert reloaded.pad_token_id == 1 and reloaded.chat_template == DEFAULT_CHAT_TEMPLATE


def test_trained_once_then_loaded(tmp_path):
    first = load_or_train_tokenizer(tmp_path / "tok", stories(50), 300)
    again = load_or_train_tokenizer(tmp_path / "tok", ["completely different text"] * 5, 260)
    assert again.get_vocab() == first.get_vocab()
    assert not (tmp_path / "tok.tmp").exists()


def test_a_bigger_vocabulary_means_fewer_tokens():
    text = " ".join(stories(20, seed=1))
    small, large = train_tokenizer(stories(200), 300), train_tokenizer(stories(200), 600)
    assert len(large.encode(text)) < len(small.encode(text))


def test_chat_template_renders_the_instruct_format():
    tokenizer = train_tokenizer(stories(20), 280)
    messages = [{"role": "user", "content": "Write about a dog."}, {"role": "assistant", "content": "The dog ran."}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == (
        "### Prompt:\nWrite about a dog.\n\n### Response:\nThe dog ran.<|endoftext|>")
