"""DPO after the supervised stage: the loss falls and the chosen-over-rejected margin grows on a tiny model."""

from __future__ import annotations

import json

import torch

from distill.lineage import weights_digest
from distill.spec import Preference
from distill.train.metrics import MetricsLog
from distill.train.preference import dpo_loss, tune_preferences
from tiny_lm import STORIES, tiny_llama, tiny_tokenizer

PAIRS = [{"prompt": "", "chosen": story, "rejected": story.replace(".", " and they began to fight.", 1)}
         for story in STORIES]


def supervised_student(train_dir):
    tokenizer = tiny_tokenizer()
    model = tiny_llama(len(tokenizer))
    model.save_pretrained(train_dir / "model")
    tokenizer.save_pretrained(train_dir / "model")
    (train_dir / "result.json").write_text(json.dumps({"weights_sha256": weights_digest(train_dir / "model")}))
    return train_dir


def test_dpo_loss_is_log_two_when_the_policy_is_the_reference():
    logps = torch.tensor([-10.0, -12.0, -11.0, -9.0])
    loss, stats = dpo_loss(logps, logps, beta=0.1)
    assert abs(loss.item() - torch.log(torch.tensor(2.0)).item()) < 1e-6 and stats["margin"] == 0.0
    better, _ = dpo_loss(logps + torch.tensor([1.0, 1.0, -1.0, -1.0]), logps, beta=0.1)
    assert better.item() < loss.item()


def test_dpo_lowers_the_loss_and_widens_the_margin_then_resumes_nothing(tmp_path):
    train_dir = supervised_student(tmp_path)
    sft = weights_digest(train_dir / "model")
    settings = Preference(beta=0.5, learning_rate=3e-3, steps=30, batch_size=5, log_every=1, checkpoint_every=10)
    block = tune_preferences(PAIRS, train_dir, settings, kind="text", context_length=128,
                             lineage={"pairs_fingerprint": "p", "review_fingerprint": "r"}, num_threads=1)
    rows = MetricsLog.read(train_dir / "preference" / "metrics.jsonl")
    assert len(rows) == 30 and abs(rows[0]["loss"] - 0.6931) < 0.01
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.3 and rows[-1]["margin"] > rows[0]["margin"] + 0.5
    assert block["sft_weights_sha256"] == sft == weights_digest(train_dir / "sft_model")
    stored = json.loads((train_dir / "result.json").read_text())
    assert stored["weights_sha256"] == block["weights_sha256"] == weights_digest(train_dir / "model") != sft
    assert stored["preference"]["pairs_fingerprint"] == "p" and (train_dir / "preference" / "curve.png").is_file()
    again = tune_preferences(PAIRS, train_dir, settings, kind="text", context_length=128,
                             lineage={"pairs_fingerprint": "p", "review_fingerprint": "r"}, num_threads=1)
    assert again == block  # the same inputs: the stored result, nothing trained


def test_the_job_page_reports_the_preference_phase_while_it_runs(tmp_path):
    from distill.service.progress import describe_progress, training

    (tmp_path / "result.json").write_text("{}")  # the supervised phase finished first
    folder = tmp_path / "preference"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"settings": {"steps": 40}}))
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 10, "seconds": 3.0, "phase": "preference", "loss": 0.4,
                                                      "margin": 0.8, "accuracy": 1.0}) + "\n")
    shown = training(tmp_path)
    assert shown["phase"] == "preference" and shown["step"] == 10 and shown["fraction"] == 0.25
    assert describe_progress("train", shown).startswith("train, step 10, loss 0.400")
