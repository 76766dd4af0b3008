"""Preference tuning after the supervised stage: DPO on the review's signed-off pairs.

Direct preference optimisation (Rafailov et al. 2023) makes the student prefer each pair's chosen text
over its rejected one, relative to a frozen reference (the supervised student):

    loss = -log sigmoid(beta * ((log p(chosen) - log ref(chosen)) - (log p(rejected) - log ref(rejected))))

with log p the sum of the response tokens' log-probabilities given the prompt. The loss is written here,
in distill's own loop, rather than taken from TRL: TRL is not a dependency (it pins its own transformers
and accelerate versions, and the project's torch must not move), and a DPO step is thirty lines on the
model distill already loads and saves. It runs on whatever device torch has (CUDA, else CPU).

Everything lands in RUN/train: `sft_model/` (the supervised student, kept as the reference and for the
before/after evaluation), `preference/` (`checkpoint.pt`, `metrics.jsonl`, `curve.png`, `run.json`), and
the tuned weights replace `model/`; `result.json` then names the tuned weights and, under `preference`,
the pairs and review fingerprints it was tuned from, so the release can check the chain.
Calling again resumes from the checkpoint; with the same inputs after success it returns the stored result.
"""

from __future__ import annotations

import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from distill.errors import Problem, RunDirError
from distill.files import fingerprint, read_json_file, write_json_atomic
from distill.lineage import weights_digest
from distill.review.pairs import pairs_state, preference_pairs
from distill.spec import Preference
from distill.train.checkpoint import save_release_model
from distill.train.data import render_prompt, start_token
from distill.train.metrics import MetricsLog, save_curve

FOLDER = "preference"
IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    ids: torch.Tensor  # (2, T): chosen, rejected, right-padded
    labels: torch.Tensor  # (2, T): the response tokens' ids, IGNORE elsewhere


def encode_pair(tokenizer, pair: dict[str, str], kind: str, context_length: int) -> list[list[int]]:
    """[chosen ids, chosen response start, rejected ids, rejected response start] in the supervised layout:
    start token, the rendered prompt (instruct), the response, end of text; cut to `context_length`."""
    start, eos = start_token(tokenizer), tokenizer.eos_token_id
    prompt = tokenizer(render_prompt(tokenizer, pair["prompt"]), add_special_tokens=False)["input_ids"] \
        if kind == "instruct" else []
    out = []
    for text in (pair["chosen"], pair["rejected"]):
        ids = [start, *prompt, *tokenizer(text, add_special_tokens=False)["input_ids"], eos][:context_length]
        out.append((ids, min(1 + len(prompt), len(ids) - 1)))
    return out


def batch_tensors(encoded: list[list[tuple[list[int], int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels for a batch of pairs: rows 0..B-1 the chosen texts, B..2B-1 the rejected ones."""
    rows = [pair[0] for pair in encoded] + [pair[1] for pair in encoded]
    width = max(len(ids) for ids, _ in rows)
    inputs = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, (ids, first) in enumerate(rows):
        inputs[i, :len(ids)] = torch.tensor(ids)
        labels[i, first:len(ids)] = torch.tensor(ids[first:])
    return inputs, labels


def response_tokens(labels: torch.Tensor) -> torch.Tensor:
    """How many response tokens each row scores."""
    return (labels[:, 1:] != IGNORE).sum(dim=1).clamp(min=1)


def sequence_logps(model, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The sum of each row's response-token log-probabilities."""
    logits = model(input_ids=inputs).logits[:, :-1].float()  # right padding: the causal mask keeps it out of view
    targets = labels[:, 1:]
    keep = targets != IGNORE
    picked = torch.gather(F.log_softmax(logits, dim=-1), 2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * keep).sum(dim=1)


def dpo_loss(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """DPO's loss from the policy's and the reference's log-probabilities (chosen rows first, then rejected),
    with the implicit rewards' margin and accuracy."""
    half = policy.shape[0] // 2
    chosen = beta * (policy[:half] - reference[:half])
    rejected = beta * (policy[half:] - reference[half:])
    margin = chosen - rejected
    loss = -F.logsigmoid(margin).mean()
    return loss, {"loss": loss.item(), "margin": margin.mean().item(), "accuracy": (margin > 0).float().mean().item(),
                  "chosen_reward": chosen.mean().item(), "rejected_reward": rejected.mean().item()}


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def tune_preferences(pairs: list[dict[str, Any]], train_dir: Path, settings: Preference, *, kind: str,
                     context_length: int, lineage: dict[str, Any], num_threads: int | None = None) -> dict[str, Any]:
    """DPO on `pairs` from the supervised student in `train_dir/model` (kept as `sft_model`); the tuned
    student replaces `model/`. `lineage` (pairs and review fingerprints) goes into result.json. Returns
    the `preference` block written there."""
    train_dir = Path(train_dir)
    if num_threads:
        torch.set_num_threads(num_threads)
    if not pairs:
        raise RunDirError(Problem("no signed-off preference pairs to tune on", file=train_dir.parent / "pairs",
                                  hint="make and sign off pairs: `distill review RUN pairs make`"))
    result_path = train_dir / "result.json"
    result = read_json_file(result_path, made_by="distill train RUN")
    sft_digest = _keep_supervised(train_dir, result)
    inputs = fingerprint(settings.model_dump(mode="json"), kind, context_length, sft_digest, lineage,
                         [[p["prompt"], p["chosen"], p["rejected"]] for p in pairs])
    done = result.get("preference")
    if done and done.get("fingerprint") == inputs and weights_digest(train_dir / "model") == result["weights_sha256"]:
        return done
    model, tokenizer, steps, seconds, last = _train(pairs, train_dir, settings, kind, context_length, inputs)
    save_release_model(model, tokenizer, train_dir / "model", adapter_dir=train_dir / FOLDER / "adapter")
    block = {"method": settings.method, "beta": settings.beta, "pairs": len(pairs), "steps": steps, "seconds": seconds,
             "sft_weights_sha256": sft_digest, "weights_sha256": weights_digest(train_dir / "model"),
             "fingerprint": inputs, "final": last, **lineage}
    write_json_atomic(result_path, {**result, "weights_sha256": block["weights_sha256"], "preference": block})
    return block


def _keep_supervised(train_dir: Path, result: dict[str, Any]) -> str:
    """Keep the supervised student as `sft_model/` (once per supervised training) and return its digest."""
    earlier = result.get("preference")
    sft = train_dir / "sft_model"
    if earlier and weights_digest(sft) == earlier["sft_weights_sha256"]:
        return earlier["sft_weights_sha256"]
    if weights_digest(train_dir / "model") != result.get("weights_sha256"):
        raise RunDirError(Problem("train/model is not the model training produced", file=train_dir / "model",
                                  hint="run `distill train RUN` again"))
    tmp = train_dir / ".sft_model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(train_dir / "model", tmp)
    shutil.rmtree(sft, ignore_errors=True)
    tmp.rename(sft)
    shutil.rmtree(train_dir / FOLDER, ignore_errors=True)  # checkpoints of another supervised student
    return result["weights_sha256"]


def _train(pairs, train_dir: Path, settings: Preference, kind: str, context_length: int, inputs: str):
    folder = train_dir / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "run.json").is_file() and read_json_file(folder / "run.json").get("fingerprint") != inputs:
        shutil.rmtree(folder)
        folder.mkdir()
    write_json_atomic(folder / "run.json", {"fingerprint": inputs, "settings": settings.model_dump(mode="json")})
    where = device()
    tokenizer = AutoTokenizer.from_pretrained(train_dir / "sft_model")
    model = AutoModelForCausalLM.from_pretrained(train_dir / "sft_model", torch_dtype=torch.float32).to(where)
    reference = AutoModelForCausalLM.from_pretrained(train_dir / "sft_model", torch_dtype=torch.float32).to(where).eval()
    reference.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    step, seconds = _resume(folder / "checkpoint.pt", model, optimizer)
    encoded = [encode_pair(tokenizer, p, kind, context_length) for p in pairs]
    metrics = MetricsLog(folder / "metrics.jsonl", after_step=step, enabled=True)
    last: dict[str, float] = {}
    model.train()
    while step < settings.steps:
        started = time.monotonic()
        order = _order(len(encoded), settings, step)
        inputs_, labels = batch_tensors([encoded[i] for i in order], tokenizer.pad_token_id or 0)
        inputs_, labels = inputs_.to(where), labels.to(where)
        with torch.no_grad():
            ref = sequence_logps(reference, inputs_, labels)
        for group in optimizer.param_groups:
            group["lr"] = settings.learning_rate * min(1.0, (step + 1) / 10)
        logps = sequence_logps(model, inputs_, labels)
        loss, last = dpo_loss(logps, ref, settings.beta)
        if settings.nll_weight:  # RPO: the chosen texts' own loss, per token
            half = logps.shape[0] // 2
            nll = -(logps[:half] / response_tokens(labels)[:half]).mean()
            loss = loss + settings.nll_weight * nll
            last = {**last, "nll": nll.item()}
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step, seconds = step + 1, seconds + time.monotonic() - started
        if step % settings.log_every == 0 or step == settings.steps:
            metrics.write({"step": step, "seconds": round(seconds, 3), "phase": "preference", **last})
        if step % settings.checkpoint_every == 0 and step < settings.steps:
            _save(folder / "checkpoint.pt", model, optimizer, step, seconds)
    plot_preference(MetricsLog.read(folder / "metrics.jsonl"), folder / "curve.png")
    return model.to("cpu").eval(), tokenizer, step, round(seconds, 3), last


def _order(n: int, settings: Preference, step: int) -> list[int]:
    """The pairs of optimizer step `step`: a fresh shuffle per pass over the pairs, the same on a resume."""
    size = min(settings.batch_size, n)
    per_pass = max(1, n // size)
    shuffled = list(range(n))
    random.Random(settings.seed * 1_000_003 + step // per_pass).shuffle(shuffled)
    at = (step % per_pass) * size
    return shuffled[at:at + size]


def _save(path: Path, model, optimizer, step: int, seconds: float) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "seconds": seconds}, tmp)
    tmp.replace(path)


def _resume(path: Path, model, optimizer) -> tuple[int, float]:
    if not path.is_file():
        return 0, 0.0
    state = torch.load(path, map_location=next(model.parameters()).device, weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"]), float(state["seconds"])


def plot_preference(rows: list[dict], path: Path) -> None:
    """DPO loss and the chosen-over-rejected reward margin against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    steps = [r["step"] for r in rows]
    left.plot(steps, [r["loss"] for r in rows], "o-", ms=3)
    left.set(xlabel="step", ylabel="DPO loss", title="preference loss")
    right.plot(steps, [r["margin"] for r in rows], "o-", ms=3, color="tab:green")
    right.set(xlabel="step", ylabel="reward margin (chosen - rejected)", title="margin")
    for axis in (left, right):
        axis.grid(alpha=0.3)
    save_curve(fig, path)


def run_preference(run_dir: Path, config, kind: str) -> str | None:
    """The train stage's preference phase: DPO on the run's signed-off pairs when the spec sets
    `training.preference` (None when it does not); one line for `distill run`."""
    if config.preference is None:
        return None
    run_dir = Path(run_dir)
    state = pairs_state(run_dir)
    if state is None:
        raise RunDirError(Problem("training.preference is set, but the run has no signed-off preference pairs made "
                                  "from the current review", file=run_dir / "pairs", key="training.preference",
                                  hint=f"`distill review {run_dir} pairs make`, then review and sign them off"))
    block = tune_preferences(preference_pairs(run_dir), run_dir / "train", config.preference, kind=kind,
                             context_length=config.context_length, num_threads=config.num_threads,
                             lineage={"pairs_fingerprint": state["pairs_fingerprint"],
                                      "review_fingerprint": state["review_fingerprint"]})
    final = block.get("final") or {}
    return (f"preference ({block['method']}, {block['pairs']} pairs, {block['steps']} steps): loss "
            f"{final.get('loss', float('nan')):.3f}, margin {final.get('margin', float('nan')):.2f}")


def preference_fingerprint(run_dir: Path, config) -> str | None:
    """What the preference phase reads besides the settings: the signed-off pairs (for the stage record)."""
    if config.preference is None:
        return None
    state = pairs_state(run_dir)
    return state["pairs_fingerprint"] if state else "no signed-off pairs"
