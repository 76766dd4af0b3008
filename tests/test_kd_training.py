"""Distillation from the teacher's distribution: the loss in the training loop, its metrics, the tokenizer
check (never a silent mix of vocabularies), and only reviewed tokens teaching."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_bundle import write_tiny_bundle
from tiny_lm import STORIES

from distill.errors import ConfigError
from distill.providers.hf_local import HFLocalProvider
from distill.providers.logprobs import TokenLogprobs
from distill.review import reviewed_logprobs
from distill.review.store import ReviewedRecord, view_digest
from distill.train import TrainConfig, train_student
from distill.train.distill_loss import Distiller, TeacherTable, read_method
from distill.train.tokenizer import load_given_tokenizer

TINY = dict(
    preset="custom",
    custom={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    context_length=32, batch_size=4, learning_rate=1e-2, warmup_steps=2, max_steps=12, eval_every=6,
    checkpoint_every=6, log_every=2, num_threads=1, peak_flops=1e10,
)
DISTIL = {"weight": 1.0, "temperature": 1.0, "top_k": 5}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny teacher trained by distill on a few stories, and 24 texts it wrote through the hf provider with
    their top-5 log-probs."""
    folder = tmp_path_factory.mktemp("teacher")
    stories = [{"id": i, "prompt": "", "text": t} for i, t in enumerate(STORIES * 8)]
    trained = train_student(stories, folder, TrainConfig(**{**TINY, "max_steps": 60, "tokenizer_vocab": 300}), kind="text")
    provider = HFLocalProvider(trained.model_dir, device="cpu")
    tokenizer, model = provider.tokenizer, provider.model
    start = tokenizer("", add_special_tokens=True)["input_ids"]  # the document-start token the student trained with
    torch.manual_seed(0)
    with torch.no_grad():
        written = model.generate(torch.tensor([start] * 24), max_new_tokens=24, do_sample=True, top_k=0,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=None)
        logprobs = model(written).logits[:, len(start) - 1 : -1].float().log_softmax(-1)  # (B, new, V)
    examples = []
    special = set(tokenizer.all_special_ids)
    for i, row in enumerate(written[:, len(start):].tolist()):
        row = row[: next((j for j, t in enumerate(row) if t in special), len(row))]  # up to the end of the story
        stored = provider.top_k_logprobs(row, logprobs[i, : len(row)], 5)  # the hf provider's own top-k
        text = stored.text_bytes.decode("utf-8", "replace")
        if stored.text_bytes == text.encode() and len(row) >= 4:
            examples.append({"id": i, "prompt": "", "text": text, "teacher": stored, "teacher_digest": f"d{i}"})
    assert len(examples) >= 12
    return trained.model_dir, examples


def test_distribution_training_logs_kl_and_agreement_and_records_the_method(teacher, tmp_path):
    bundle, examples = teacher
    config = TrainConfig(**TINY, tokenizer=str(bundle), distillation=DISTIL)
    result = train_student(examples, tmp_path / "train", config, kind="text")
    rows = [json.loads(line) for line in (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()]
    taught = [r for r in rows if "kl_per_token" in r]
    assert taught and all(r["kl_per_token"] >= 0 and 0 <= r["teacher_agreement"] <= 1 for r in taught)
    assert taught[-1]["kl_per_token"] < taught[0]["kl_per_token"]  # the student moves towards the teacher
    assert all(r["taught_share"] > 0.5 for r in taught)  # most targets carry the teacher's distribution
    method = read_method(tmp_path / "train")
    assert method["method"] == "distribution" and method["top_k"] == 5 and method["teacher_tokens"] > 100
    # the student took the teacher's vocabulary as it is
    assert json.loads((result.model_dir / "tokenizer.json").read_text())["model"]["vocab"] == \
        json.loads((bundle / "tokenizer.json").read_text())["model"]["vocab"]


def test_own_tokenizer_falls_back_to_text_only_and_says_so(teacher, tmp_path, capsys):
    _, examples = teacher
    config = TrainConfig(**{**TINY, "max_steps": 2, "tokenizer_vocab": 300}, distillation=DISTIL)
    train_student(examples, tmp_path / "train", config, kind="text")
    said = capsys.readouterr().err
    assert "training.distillation: training on the teacher's text only: student.tokenizer is a BPE trained" in said
    assert read_method(tmp_path / "train")["method"] == "text"
    rows = [json.loads(line) for line in (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()]
    assert not any("kl_per_token" in r for r in rows)


def test_a_tokenizer_without_the_teachers_tokens_is_refused_as_a_mix(teacher, tmp_path, capsys):
    _, examples = teacher
    foreign = write_tiny_bundle(tmp_path / "foreign-0.1.0", name="foreign")
    tokenizer = load_given_tokenizer(foreign)
    odd = dict(examples[0], teacher=TokenLogprobs.from_top_k([b"\xf0\x9f\x90"], [-0.1], [[(b"\xf0\x9f\x90", -0.1)]]))
    config = TrainConfig(**{**TINY, "max_steps": 2}, tokenizer=str(foreign), distillation=DISTIL)
    odd["text"] = "\U0001f40d" + odd["text"]
    odd["teacher"] = TokenLogprobs.from_top_k([b"\xf0\x9f\x90\x8d"], [-0.1], [[(b"\xf0\x9f\x90\x8d", -0.1)]])
    assert "\U0001f40d".encode() not in {tokenizer.convert_tokens_to_string([t]).encode() for t in tokenizer.get_vocab()}
    train_student([odd, *examples[1:]], tmp_path / "train", config, kind="text")
    said = capsys.readouterr().err
    assert "the student's tokenizer is not the teacher's: its vocabulary has no token b'\\xf0\\x9f\\x90\\x8d' (record 0" in said
    assert read_method(tmp_path / "train")["method"] == "text"


def test_student_tokenizer_teacher_needs_a_local_folder_for_an_api_teacher(tmp_path):
    from distill.spec import load_spec
    from distill.train.config import spec_train_config

    (tmp_path / "spec.yaml").write_text("""
name: kd
kind: text
records: 4
steps: [{name: story, user: "A story."}]
teacher: {provider: openai, model: gpt-4o-mini}
student: {tokenizer: teacher}
training: {distillation: {weight: 1.0}}
""")
    with pytest.raises(ConfigError) as caught:
        spec_train_config(load_spec(tmp_path / "spec.yaml"))
    problem = caught.value.problems[0]
    assert problem.key == "student.tokenizer" and str(problem.file).endswith("spec.yaml")
    assert "cannot find the tokenizer of a openai teacher" in problem.message


def record(text: str, original: str, logprobs: TokenLogprobs, *, edited: bool = False) -> ReviewedRecord:
    return ReviewedRecord(7, "kept", "pass", "pass", [], "", text, "", original, edited=edited,
                          teacher_logprobs=logprobs.to_json())


def test_a_reviewers_edit_removes_that_spans_distribution():
    tokens = [b"The", b" cat", b" ate", b" fish", b"."]
    logprobs = TokenLogprobs.from_top_k(tokens, [-0.1] * 5, [[(t, -0.1), (b" x", -3.0)] for t in tokens])
    untouched = reviewed_logprobs(record("The cat ate fish.", "The cat ate fish.", logprobs))
    assert untouched.tokens == tuple(tokens)
    edited = reviewed_logprobs(record("The cat ate bread.", "The cat ate fish.", logprobs, edited=True))
    assert edited.tokens == (b"The", b" cat", b" ate")  # " fish" and "." were edited away: no distribution
    redacted = reviewed_logprobs(record("The [NAME] ate fish.", "The cat ate fish.", logprobs))
    assert redacted.tokens == (b"The",)  # everything from the redacted span on trains as plain text
    # the sign-off's digest covers the distributions it lets through
    plain = ReviewedRecord(7, "kept", "pass", "pass", [], "", "The cat ate fish.", "", "The cat ate fish.")
    assert view_digest([record("The cat ate fish.", "The cat ate fish.", logprobs)]) != view_digest([plain])


def test_kl_is_zero_when_the_student_matches_the_teacher_and_counts_the_tail():
    table = TeacherTable()
    teacher = torch.log_softmax(torch.tensor([3.0, 1.0, 0.5, -1.0, -2.0]), -1)
    top = teacher.topk(2)
    row = table.add(top.indices.tolist(), top.values.numpy(), float(1 - top.values.exp().sum()))
    distiller = Distiller(1.0, 1.0, table, [])
    kl, agree = distiller.kl(torch.tensor([[3.0, 1.0, 0.5, -1.0, -2.0]]), torch.tensor([row]))
    assert float(kl[0]) == pytest.approx(0.0, abs=1e-5) and agree == 1
    kl, agree = distiller.kl(torch.tensor([[0.0, 0.0, 0.0, 0.0, 4.0]]), torch.tensor([row]))
    assert float(kl[0]) > 1.0 and agree == 0  # the mass the student puts on the tail is counted


def test_the_stored_form_round_trips_at_float16():
    tokens = [b"a", b"\xe6\x97", b"\xa5"]  # a token may end inside a character
    stored = TokenLogprobs.from_top_k(tokens, [-0.5, -1.25, -2.0], [[(b"a", -0.5)], [(b"\xe6\x97", -1.25), (b"b", -2.5)], []])
    back = TokenLogprobs.from_json(stored.to_json())
    assert back.tokens == stored.tokens and back.top_tokens == stored.top_tokens
    assert np.array_equal(back.top_logprobs, stored.top_logprobs, equal_nan=True)
    assert back.text_bytes.decode() == "a\u65e5"
