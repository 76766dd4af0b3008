"""The training loop end to end on a tiny real Llama (seconds on one CPU thread)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from accelerate.utils import set_seed
from transformers import AutoModelForCausalLM, AutoTokenizer

from distill.errors import RunDirError
from distill.train import TrainConfig, train_student
from distill.train.checkpoint import checkpoints
from distill.train.loop import make_optimizers, make_weight_average, prepare_student, replace_tokens
from test_train_data import stories

TINY = dict(
    preset="custom",
    custom={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    tokenizer_vocab=300,
    context_length=32,
    batch_size=4,
    learning_rate=1e-2,
    warmup_steps=5,
    max_steps=40,
    eval_every=10,
    checkpoint_every=10,
    log_every=5,
    num_threads=1,  # one thread: CPU kernels are then bit-for-bit repeatable
    peak_flops=1e10,  # skip measuring the machine in every test
)
EXAMPLES = [{"id": i, "prompt": "", "text": t} for i, t in enumerate(stories(60))]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "train"
    config = TrainConfig(**TINY)
    return out, config, train_student(EXAMPLES, out, config, kind="text")


def test_loss_falls(trained):
    out, _, result = trained
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    assert losses[-1] < 0.5 * losses[0]
    assert vals[-1] < vals[0] < math.log(300)  # below a uniform guess over the vocabulary from the first eval
    assert result.val_loss == pytest.approx(vals[-1])
    assert 0 < result.val_bpb < 8 and result.steps == 40 and result.stopped_by == "max_steps"
    assert result.tokens == 40 * 4 * 32 and all(r["tokens_per_s"] > 0 and r["mfu"] > 0 for r in rows if "loss" in r)
    assert result.loss_curve_path.read_bytes().startswith(b"\x89PNG")


def test_every_parameter_changes(trained):
    out, config, result = trained
    set_seed(config.seed)  # the loop seeds the same way before building the model
    initial, _ = prepare_student(config, out)
    final = AutoModelForCausalLM.from_pretrained(result.model_dir)
    final_params = dict(final.named_parameters())
    for name, param in initial.named_parameters():
        assert not torch.equal(param, final_params[name]), f"{name} did not change"


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest(tmp_path):
    config = TrainConfig(**TINY)
    model, _ = prepare_student(config, tmp_path, train_texts=[e["text"] for e in EXAMPLES])
    names = {id(p): n for n, p in model.named_parameters()}
    muon, adamw = make_optimizers(model, config, fused=False)
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    in_muon = {names[id(p)] for group in muon.param_groups for p in group["params"]}
    in_adamw = {names[id(p)] for group in adamw.param_groups for p in group["params"]}
    assert in_muon == {n for n, p in model.named_parameters() if n.startswith("model.layers.") and p.dim() == 2}
    assert in_adamw == set(names.values()) - in_muon  # the embedding (tied to the head) and the norms
    assert "model.embed_tokens.weight" in in_adamw and any("norm" in n for n in in_adamw)
    decayed = {names[id(p)] for group in adamw.param_groups if group["weight_decay"] > 0 for p in group["params"]}
    assert decayed == {"model.embed_tokens.weight"}  # norms are never decayed
    only = make_optimizers(model, config.model_copy(update={"optimizer": "adamw"}), fused=False)
    assert len(only) == 1 and {names[id(p)] for g in only[0].param_groups for p in g["params"]} == set(names.values())


def test_validation_split_is_disjoint_from_training(trained):
    out, _, _ = trained
    split = json.loads((out / "split.json").read_text())
    assert split["val"] and not set(split["val"]) & set(split["train"])
    assert sorted(split["val"] + split["train"]) == [e["id"] for e in EXAMPLES]


def test_saved_model_loads_with_plain_transformers_and_generates(trained):
    _, _, result = trained
    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(result.model_dir)
    inputs = tokenizer("Once upon a time,", return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    text = tokenizer.decode(output[0], skip_special_tokens=True)
    assert text.startswith("Once upon a time,") and len(text) > len("Once upon a time,")


def test_a_finished_run_returns_without_work(trained):
    out, config, result = trained
    before = (out / "model" / "model.safetensors").stat().st_mtime_ns
    again = train_student(EXAMPLES, out, config.model_copy(update={"log_every": 7}), kind="text")  # runtime-only change
    assert again == result
    assert (out / "model" / "model.safetensors").stat().st_mtime_ns == before


def test_other_inputs_refuse_to_resume(trained):
    out, config, _ = trained
    with pytest.raises(RunDirError, match="learning_rate"):
        train_student(EXAMPLES, out, config.model_copy(update={"learning_rate": 1e-3}), kind="text")
    with pytest.raises(RunDirError, match="examples changed"):
        train_student(EXAMPLES[:-1], out, config, kind="text")


def test_early_stopping_and_wall_clock_budget(tmp_path):
    stalled = TrainConfig(**{**TINY, "learning_rate": 1e-12, "eval_every": 2, "early_stopping_patience": 1,
                             "max_steps": 100})
    result = train_student(EXAMPLES, tmp_path / "a", stalled, kind="text")
    assert result.stopped_by == "early_stopping" and result.steps == 4

    timed = TrainConfig(**{**TINY, "max_steps": None, "max_minutes": 0.02})
    result = train_student(EXAMPLES, tmp_path / "b", timed, kind="text")
    # the run stops within half a step of its 1.2 s budget, so the last step ends on time
    step = result.seconds / result.steps
    assert result.stopped_by == "max_minutes" and result.seconds >= 1.2 - step and result.steps >= 1


KILLABLE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from distill.train import TrainConfig, train_student
    examples, config = json.loads(Path(sys.argv[1]).read_text()), TrainConfig.model_validate_json(sys.argv[2])
    train_student(examples, Path(sys.argv[3]), config, kind="text")
""")


def test_kill_9_then_resume_gives_the_uninterrupted_weights(tmp_path):
    # Bit-for-bit: with one thread, fixed seeds and the same shapes, CPU kernels repeat exactly, and a
    # resume restores the exact bits of weights, Adam moments, RNG and data position; so the
    # tolerance is zero. (On GPUs, atomics in some kernels make runs differ in the last bits anyway.)
    # dropout and token dropout: the RNG state must be restored too; the weight average (which is what
    # is released) must be saved in the checkpoint and restored with it.
    config = TrainConfig(**{**TINY, "max_steps": 40, "checkpoint_every": 4, "dropout": 0.1, "token_dropout": 0.1,
                            "ema_decay": 0.9})
    (tmp_path / "examples.json").write_text(json.dumps(EXAMPLES))
    killed = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-c", KILLABLE, str(tmp_path / "examples.json"),
                              config.model_dump_json(), str(killed)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any(int(c.name[5:]) >= 8 for c in checkpoints(killed)):
        assert child.poll() is None and time.monotonic() < deadline, "the training child ended before the kill"
        time.sleep(0.002)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not (killed / "result.json").exists(), "killed too late: training had finished"
    resume_step = int(checkpoints(killed)[-1].name[5:])
    before = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    before = [r for r in before if r["step"] <= resume_step]

    resumed = train_student(EXAMPLES, killed, config, kind="text")
    straight = train_student(EXAMPLES, tmp_path / "straight", config, kind="text")
    assert resumed.steps == straight.steps == 40
    a = AutoModelForCausalLM.from_pretrained(resumed.model_dir).state_dict()
    b = AutoModelForCausalLM.from_pretrained(straight.model_dir).state_dict()
    for name in b:
        assert torch.equal(a[name], b[name]), name
    rows = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert rows[: len(before)] == before  # it did resume: the killed run's rows up to the checkpoint stand
    assert [r["step"] for r in rows if "loss" in r] == list(range(5, 41, 5))  # and none are duplicated


def test_gradient_accumulation_counts_every_micro_batch(tmp_path):
    config = TrainConfig(**{**TINY, "grad_accum": 3, "max_steps": 4, "eval_every": 4})
    result = train_student(EXAMPLES, tmp_path / "train", config, kind="text")
    assert result.steps == 4 and result.tokens == 4 * 3 * 4 * 32
    state = json.loads((checkpoints(tmp_path / "train")[-1] / "state.json").read_text())
    assert state["epoch"] * 1000 + state["batch"] > 0 and state["stopped_by"] == "max_steps"


def test_weight_average_ramps_up_to_its_decay_and_is_released(tmp_path):
    layer = torch.nn.Linear(2, 1, bias=False)
    average = make_weight_average(layer, 0.5)
    for value in (1.0, 3.0, 7.0):
        with torch.no_grad():
            layer.weight.fill_(value)
        average.update_parameters(layer)
    # first update copies; then decay min(0.5, 2/11) = 2/11, then min(0.5, 3/12) = 1/4
    second = 2 / 11 * 1.0 + 9 / 11 * 3.0
    assert average.module.weight[0, 0].item() == pytest.approx(1 / 4 * second + 3 / 4 * 7.0)
    assert not average.module.weight.requires_grad

    config = TrainConfig(**{**TINY, "max_steps": 12, "checkpoint_every": 12, "eval_every": 12, "ema_decay": 0.8})
    result = train_student(EXAMPLES, tmp_path / "train", config, kind="text")
    released = AutoModelForCausalLM.from_pretrained(result.model_dir).state_dict()
    from safetensors.torch import load_file
    last = load_file(checkpoints(tmp_path / "train")[-1] / "model.safetensors")  # the raw weights, to resume from
    name = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(released[name], last[name])  # the release is the average, not the last step


def test_token_dropout_replaces_about_its_share():
    torch.manual_seed(0)
    inputs = torch.randint(5, 100, (8, 64))
    assert torch.equal(replace_tokens(inputs, 0.0, 100), inputs)
    noisy = replace_tokens(inputs, 0.25, 100)
    assert 0.15 < (noisy != inputs).float().mean().item() < 0.3
    assert noisy.min() >= 0 and noisy.max() < 100
