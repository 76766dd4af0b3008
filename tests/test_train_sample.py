"""Sampling from a finished student or from the newest checkpoint of an unfinished run."""

from __future__ import annotations

import shutil

import pytest
import typer
from typer.testing import CliRunner

from distill.cli.train import sample_command
from distill.errors import RunDirError
from distill.train import TrainConfig, train_student
from distill.train.sample import generate, load_student
from test_train_data import stories

CONFIG = TrainConfig(preset="custom", custom={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                              "intermediate_size": 64},
                     tokenizer_vocab=300, context_length=32, batch_size=4, learning_rate=1e-2, max_steps=30,
                     checkpoint_every=10, eval_every=30, num_threads=1, peak_flops=1e10)


def test_sample_from_model_and_from_checkpoint(tmp_path):
    out = tmp_path / "train"
    train_student([{"prompt": "", "text": t} for t in stories(40)], out, CONFIG, kind="text")
    model, tokenizer, source = load_student(out)
    assert source == out / "model"
    finished = generate(model, tokenizer, "Once upon a time,", max_new_tokens=20, temperature=0)
    assert finished.strip()
    assert generate(model, tokenizer, "Once upon a time,", max_new_tokens=20, seed=1) == \
        generate(model, tokenizer, "Once upon a time,", max_new_tokens=20, seed=1)  # seeded sampling repeats

    app = typer.Typer()
    app.command()(sample_command)
    cli = CliRunner().invoke(app, [str(out), "--prompt", "Once upon a time,", "--temperature", "0",
                                   "--max-new-tokens", "20", "-n", "2"])
    assert cli.exit_code == 0, cli.output
    assert cli.stdout.split("\n---\n")[0].strip() == "Once upon a time," + finished.rstrip()

    shutil.rmtree(out / "model")  # as if training were still running
    model, tokenizer, source = load_student(out)
    assert source.name == "step-00000030"
    assert generate(model, tokenizer, "Once upon a time,", max_new_tokens=20, temperature=0) == finished


def test_nothing_to_sample_yet(tmp_path):
    with pytest.raises(RunDirError, match="no trained model"):
        load_student(tmp_path)
